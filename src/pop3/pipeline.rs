//! The client side of a POP3 connection without I/O: the one queue of commands sent and answers
//! due (RFC 2449 §6.6 pipelining), each with the shape of its answer and the caller's tag, over
//! the [`Decoder`]. The caller queues commands, writes out [`Pipeline::output`], feeds what the
//! server sends into [`Pipeline::buffer_mut`] and pulls events; each event belongs to the answer
//! of [`Pipeline::current`]. Answers come in the order the commands were sent, so the queue is
//! all the bookkeeping pipelining needs.

use std::collections::VecDeque;

use super::command::Command;
use super::decode::{DecodeError, Decoder, Event, Expect};
use super::types::StatusKind;

/// An answer due: what it answers and the caller's tag for it.
#[derive(Debug, Clone, Copy)]
struct Due<T> {
    tag: T,
    what: &'static str,
    expect: Expect,
}

/// Commands sent or queued and the answers they are owed, oldest first; `T` is what the caller
/// wants handed back with each answer.
#[derive(Debug)]
pub struct Pipeline<T> {
    dec: Decoder,
    /// Encoded commands not yet written.
    out: Vec<u8>,
    /// Answers due whose decoding has not begun.
    due: VecDeque<Due<T>>,
    /// The answer being decoded, or the one that ended last.
    current: Option<Due<T>>,
    /// Commands whose final status line has not come out yet.
    unanswered: usize,
}

impl<T: Copy> Default for Pipeline<T> {
    fn default() -> Self {
        Pipeline::new()
    }
}

impl<T: Copy> Pipeline<T> {
    pub fn new() -> Pipeline<T> {
        Pipeline {
            dec: Decoder::new(),
            out: Vec::with_capacity(512),
            due: VecDeque::new(),
            current: None,
            unanswered: 0,
        }
    }

    /// Expects an answer no command asked for (the greeting), named `what`.
    pub fn expect(&mut self, what: &'static str, expect: Expect, tag: T) {
        self.due.push_back(Due { tag, what, expect });
        self.unanswered += 1;
    }

    /// Encodes `cmd` for sending and expects its answer.
    pub fn queue(&mut self, cmd: &Command, tag: T) {
        cmd.encode(&mut self.out);
        self.expect(cmd.name(), cmd.expect(), tag);
    }

    /// Encodes a line that continues the answer under way (a SASL response): no new answer is
    /// owed for it.
    pub fn continue_with(&mut self, line: &Command) {
        line.encode(&mut self.out);
    }

    /// What is to be written to the server.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Forgets the output once written, zeroing it first: it may hold a credential. The
    /// capacity is kept for the next commands.
    pub fn written(&mut self) {
        crate::secret::wipe(&mut self.out);
        self.out.clear();
    }

    /// Commands whose status line has not been read.
    pub fn in_flight(&self) -> usize {
        self.unanswered
    }

    /// The tag and command of the answer the last event belonged to.
    pub fn current(&self) -> Option<(T, &'static str)> {
        self.current.map(|d| (d.tag, d.what))
    }

    /// The command whose answer is being waited for: the one under way, else the next due.
    pub fn waiting_for(&self) -> Option<&'static str> {
        match (&self.current, self.dec.is_idle()) {
            (Some(d), false) => Some(d.what),
            _ => self.due.front().map(|d| d.what),
        }
    }

    /// Whether a message body is being decoded (its `End` has not come out yet).
    pub fn in_body(&self) -> bool {
        self.dec.in_body()
    }

    /// See [`Decoder::mid_answer`].
    pub fn mid_answer(&self) -> bool {
        self.dec.mid_answer()
    }

    /// See [`Decoder::buffer_mut`].
    pub fn buffer_mut(&mut self) -> &mut Vec<u8> {
        self.dec.buffer_mut()
    }

    /// Appends received bytes (tests and simple callers).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.dec.feed(bytes);
    }

    /// Received bytes not yet decoded.
    pub fn buffered(&self) -> usize {
        self.dec.buffered()
    }

    /// See [`Decoder::take_unread`].
    pub fn take_unread(&mut self) -> Vec<u8> {
        self.dec.take_unread()
    }

    /// The next event of the answers due, `Ok(None)` when more bytes are needed. Bytes when no
    /// answer is due are an error: the server sent what nobody asked for.
    pub fn next_event(&mut self) -> Result<Option<Event>, DecodeError> {
        if self.dec.is_idle()
            && let Some(next) = self.due.pop_front()
        {
            self.dec.begin(next.expect);
            self.current = Some(next);
        }
        let ev = self.dec.next_event()?;
        if let Some(Event::Status(s)) = &ev
            && s.kind != StatusKind::Continue
        {
            self.unanswered = self.unanswered.saturating_sub(1);
        }
        Ok(ev)
    }
}
