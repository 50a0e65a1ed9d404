//! A TCP proxy on loopback that delays what it relays by a fixed one-way time in each direction,
//! keeping the order of the bytes: a distant server, as far as round trips go, without `tc`
//! (which needs privileges and the netem module).
//!
//! Each direction of a connection is a reader thread that stamps every chunk it reads with the
//! time it may leave and a writer thread that sends it then; between them a bounded channel
//! (at most [`CHUNKS`] × [`CHUNK`] bytes per direction), so a fast sender is held back by TCP
//! flow control instead of filling memory. The connect itself is made to cost one round trip: a
//! client's `connect()` returns at once on loopback, so the proxy relays nothing of a new
//! connection until one round trip after it accepted it, as if the SYN and SYN-ACK had crossed
//! the distance (the client's first flight leaves at that time, as it would). Bandwidth is not
//! limited beyond the channel's bound (about 1 MiB per one-way delay per direction).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::{Duration, Instant};

/// The largest piece read at once.
const CHUNK: usize = 16 * 1024;
/// Pieces in transit per direction: the buffer bound.
const CHUNKS: usize = 64;

/// A piece of the stream and the time it may leave.
type Piece = (Instant, Vec<u8>);

/// A running proxy; its threads live as long as the process (the benchmark's).
pub(crate) struct DelayProxy {
    port: u16,
    /// The one-way delay in microseconds, read as each connection is accepted and each chunk
    /// read, so it can change between polls.
    one_way_us: Arc<AtomicU64>,
}

impl DelayProxy {
    /// Listens on a free loopback port and relays each connection to `upstream` (a loopback
    /// port), with no delay until [`DelayProxy::set_rtt`].
    pub(crate) fn start(upstream: u16) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the delay proxy");
        let port = listener.local_addr().unwrap().port();
        let one_way_us = Arc::new(AtomicU64::new(0));
        let delay = Arc::clone(&one_way_us);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let delay = Arc::clone(&delay);
                thread::spawn(move || relay(client, upstream, &delay));
            }
        });
        DelayProxy { port, one_way_us }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Sets the round trip: half of it is added in each direction.
    pub(crate) fn set_rtt(&self, rtt: Duration) {
        self.one_way_us
            .store(rtt.as_micros() as u64 / 2, Ordering::Relaxed);
    }
}

fn relay(client: TcpStream, upstream: u16, one_way_us: &Arc<AtomicU64>) {
    let one_way = Duration::from_micros(one_way_us.load(Ordering::Relaxed));
    // The connect's round trip.
    thread::sleep(2 * one_way);
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    // The proxy itself must not hold back small writes.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = thread::spawn({
        let d = Arc::clone(one_way_us);
        move || pipe(client, server, &d)
    });
    pipe(s2, c2, one_way_us);
    let _ = up.join();
}

/// Relays `from` to `to`, each chunk leaving one one-way delay after it was read; at the end of
/// `from` the write side of `to` is shut (a half close passes through).
fn pipe(from: TcpStream, to: TcpStream, one_way_us: &Arc<AtomicU64>) {
    let (tx, rx) = sync_channel::<Option<Piece>>(CHUNKS);
    let reader_end = from.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let mut to = to;
        while let Ok(Some((due, data))) = rx.recv() {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if to.write_all(&data).is_err() {
                // The far side is gone: stop reading too.
                let _ = reader_end.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut from = from;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let due = Instant::now() + Duration::from_micros(one_way_us.load(Ordering::Relaxed));
        if tx.send(Some((due, buf[..n].to_vec()))).is_err() {
            break;
        }
    }
    // The end of the stream keeps its place behind the data.
    let _ = tx.send(None);
    let _ = writer.join();
}
