//! The LMTP backend against Dovecot's LMTP service, on its Unix socket and over TCP: messages
//! delivered into a mailbox are read back through the same Dovecot's POP3 byte for byte; an
//! unknown user is a permanent refusal (held); and a server that goes away in the middle of
//! DATA (a scripted listener, since Dovecot will not) leaves nothing recorded and nothing
//! deleted. Scripted too: a server that does not offer PIPELINING, which Dovecot always does,
//! is sent one command per round trip.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::dovecot::{Dovecot, Options};
use crate::harness::{Env, expected, message, strip_received};
use crate::postfix::maildir_messages;
use crate::support::config::Account;

fn messages(n: usize) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..n).map(|i| message(i, 4000)).collect();
    v.push(
        b"Return-Path: <bounce@example.org>\nFrom: b@example.org\nSubject: dots\nMessage-ID: <dots@x>\n\n.\n..\n.leading\nlast line without end"
            .to_vec(),
    );
    v.push(
        "From: c@example.org\nSubject: 8bit\nMessage-ID: <8bit@x>\n\nGr\u{fc}\u{df}e \u{1f600}\r\nbare\rcr\n"
            .as_bytes()
            .to_vec(),
    );
    v
}

fn start() -> Dovecot {
    let d = Dovecot::start_with(Options {
        lmtp: true,
        ..Options::default()
    });
    d.add_user("alice", "pw");
    d.add_user("bob", "pw");
    d
}

fn config(d: &Dovecot, env: &Env, lmtp: &str) {
    let account = Account::dovecot(d).set("deliver", format_args!("{{ lmtp = {lmtp} }}"));
    env.write_config(&account.to_toml());
}

/// Removes the trace fields at the top of a message (Dovecot's Return-Path, Delivered-To and
/// Received, popfetch's Received), folded lines included.
fn strip_trace(mut m: &[u8]) -> &[u8] {
    loop {
        let lower = m.to_ascii_lowercase();
        if !["return-path:", "delivered-to:", "received:"]
            .iter()
            .any(|h| lower.starts_with(h.as_bytes()))
        {
            return m;
        }
        let mut end = m
            .iter()
            .position(|&b| b == b'\n')
            .map_or(m.len(), |i| i + 1);
        while matches!(m.get(end), Some(b' ' | b'\t')) {
            end += m[end..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(m.len() - end, |i| i + 1);
        }
        m = &m[end..];
    }
}

/// What a source message looks like in a Maildir after the trip: LF line ends (a bare CR became
/// a line end on the way: the relay's rule), a final newline added.
fn local_form(source: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < source.len() {
        match source[i] {
            b'\r' if source.get(i + 1) == Some(&b'\n') => {}
            b'\r' => out.push(b'\n'),
            b => out.push(b),
        }
        i += 1;
    }
    expected(&out)
}

/// Reads `user`'s mailbox back over POP3 into a fresh Maildir.
fn read_back(d: &Dovecot, user: &str) -> Vec<Vec<u8>> {
    let back = Env::new();
    back.write_config(&format!(
        "[[account]]\nname = \"{user}\"\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"\n\
         user = \"{user}\"\npassword = \"pw\"\ndeliver = {{ maildir = \"{}\" }}\n",
        d.pop3s_port(),
        d.ca_file().display(),
        back.maildir().display()
    ));
    back.popfetch(&["fetch"]).assert_code(0);
    maildir_messages(&back.maildir())
        .iter()
        .map(|m| strip_received(m))
        .collect()
}

#[track_caller]
fn assert_round_trip(d: &Dovecot, user: &str, sources: &[Vec<u8>]) {
    let back = read_back(d, user);
    let mut got: Vec<Vec<u8>> = back.iter().map(|m| strip_trace(m).to_vec()).collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = sources
        .iter()
        .map(|m| strip_trace(&local_form(m)).to_vec())
        .collect();
    want.sort();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!(
            g == w,
            "differs:\n{}\n---\n{}",
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(w)
        );
    }
    // The envelope sender came from the message's Return-Path (Dovecot writes it first).
    assert!(
        back.iter()
            .any(|m| m.starts_with(b"Return-Path: <bounce@example.org>\n")),
        "no message kept its envelope sender"
    );
}

#[test]
fn lmtp_socket_delivers_into_dovecot_byte_for_byte() {
    crate::peers::require_peers!("dovecot", "dovecot-lmtp");
    let d = start();
    let msgs = messages(20);
    d.deliver_many("alice", msgs.clone());
    let env = Env::new();
    config(
        &d,
        &env,
        &format!(
            "{{ socket = {:?}, to = [\"bob\"], lhlo = \"popfetch.test\" }}",
            d.lmtp_socket().display().to_string()
        ),
    );
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains(&format!("{} new messages delivered", msgs.len())),
        "{}",
        run.stdout
    );
    assert_eq!(d.message_count("alice"), 0);
    assert_eq!(d.message_count("bob"), msgs.len());
    assert_round_trip(&d, "bob", &msgs);
}

#[test]
fn lmtp_tcp_delivers_to_every_recipient_with_user_replaced() {
    crate::peers::require_peers!("dovecot", "dovecot-lmtp");
    let d = start();
    d.add_user("carol", "pw");
    let msgs = messages(5);
    d.deliver_many("alice", msgs.clone());
    let env = Env::new();
    // `{user}` is the account's POP3 user: alice.
    config(
        &d,
        &env,
        &format!(
            "{{ host = \"127.0.0.1\", port = {}, to = [\"bob@example.org\", \"carol\", \"{{user}}\"] }}",
            d.lmtp_port()
        ),
    );
    env.popfetch(&["fetch"]).assert_code(0);
    for user in ["bob", "carol", "alice"] {
        assert_eq!(d.message_count(user), msgs.len(), "{user}");
        assert_round_trip(&d, user, &msgs);
    }
}

#[test]
fn lmtp_unknown_user_is_permanent_and_the_message_held() {
    crate::peers::require_peers!("dovecot", "dovecot-lmtp");
    let d = start();
    d.deliver_many("alice", messages(1));
    let env = Env::new();
    config(
        &d,
        &env,
        &format!(
            "{{ socket = {:?}, to = [\"nosuchuser\"] }}",
            d.lmtp_socket().display().to_string()
        ),
    );
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stdout.contains("3 held after a permanent failure"),
        "{}",
        run.stdout
    );
    // The server's reply with its enhanced status code is in the summary.
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(out.contains("<nosuchuser>: 550 5.1.1"), "{out}");
    assert_eq!(
        d.message_count("alice"),
        3,
        "held messages stay on the server"
    );
    // Held: the next poll does not try them again.
    let again = env.popfetch(&["fetch"]);
    assert!(!again.stdout.contains("550"), "{}", again.stdout);
    assert_eq!(d.message_count("alice"), 3);
}

/// A scripted LMTP server on a Unix socket that takes `complete` messages whole (250 after the
/// data), then accepts the next transaction, reads a few lines of its data and hangs up.
fn vanishing_server(path: &Path, complete: usize) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        w.write_all(b"220 fake LMTP\r\n").unwrap();
        let mut line = String::new();
        let mut in_data = 0;
        let mut taken = 0;
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if in_data > 0 {
                in_data += 1;
                if taken < complete {
                    if line == ".\r\n" {
                        in_data = 0;
                        taken += 1;
                        w.write_all(b"250 2.0.0 stored\r\n").unwrap();
                    }
                } else if in_data > 5 {
                    return; // gone mid-DATA, no reply
                }
                continue;
            }
            let cmd = line.to_ascii_uppercase();
            let reply: &[u8] = if cmd.starts_with("LHLO") {
                b"250-fake\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n"
            } else if cmd.starts_with("DATA") {
                in_data = 1;
                b"354 go on\r\n"
            } else {
                b"250 2.0.0 ok\r\n"
            };
            w.write_all(reply).unwrap();
        }
    })
}

#[test]
fn lmtp_server_gone_mid_data_records_nothing_and_deletes_nothing() {
    crate::peers::require_peers!("dovecot", "dovecot-lmtp");
    let d = start();
    let msgs = messages(3);
    d.deliver_many("alice", msgs.clone());
    let env = Env::new();
    let fake = env.path().join("fake-lmtp");
    let server = vanishing_server(&fake, 0);
    config(
        &d,
        &env,
        &format!(
            "{{ socket = {:?}, to = [\"bob\"] }}",
            fake.display().to_string()
        ),
    );
    let run = env.popfetch(&["fetch"]);
    server.join().unwrap();
    let out = format!("{}{}", run.stdout, run.stderr);
    assert_ne!(run.code, 0, "{out}");
    // A broken pipe while writing the data, or a closed connection while waiting for replies.
    assert!(
        out.contains("failed: LMTP server") || out.contains("closed the connection"),
        "{out}"
    );
    assert_eq!(d.message_count("alice"), msgs.len(), "nothing deleted");
    // Nothing was recorded as delivered: the real server gets every message, once.
    config(
        &d,
        &env,
        &format!(
            "{{ socket = {:?}, to = [\"bob\"] }}",
            d.lmtp_socket().display().to_string()
        ),
    );
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(d.message_count("alice"), 0);
    assert_eq!(d.message_count("bob"), msgs.len());
    assert_round_trip(&d, "bob", &msgs);
}

#[test]
fn lmtp_starttls_over_tcp_verifies_the_server() {
    crate::peers::require_peers!("dovecot", "dovecot-lmtp");
    let d = start();
    let msgs = messages(2);
    d.deliver_many("alice", msgs.clone());
    let env = Env::new();
    config(
        &d,
        &env,
        &format!(
            "{{ host = \"localhost\", port = {}, tls = \"starttls\", ca_file = {:?}, to = [\"bob\"] }}",
            d.lmtp_port(),
            d.ca_file().display().to_string()
        ),
    );
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(d.message_count("bob"), msgs.len());
    assert_round_trip(&d, "bob", &msgs);
    // Without the test CA the certificate is refused: TLS was really spoken and checked.
    d.deliver_many("alice", messages(0));
    let strict = Env::new();
    config(
        &d,
        &strict,
        &format!(
            "{{ host = \"localhost\", port = {}, tls = \"starttls\", to = [\"bob\"] }}",
            d.lmtp_port()
        ),
    );
    let run = strict.popfetch(&["fetch"]);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "{out}");
    assert!(out.contains("STARTTLS with the LMTP server"), "{out}");
    assert_eq!(d.message_count("alice"), 2, "nothing deleted");
    // (bob's mailbox was emptied by the read-back above.)
    assert_eq!(d.message_count("bob"), 0, "nothing delivered in clear text");
}

#[test]
fn lmtp_over_quota_452_is_tried_again_later() {
    crate::peers::require_peers!("dovecot", "dovecot-lmtp");
    let d = Dovecot::start_with_extra(
        Options {
            lmtp: true,
            ..Options::default()
        },
        "mail_plugins = $mail_plugins quota\nquota_full_tempfail = yes\n\
         plugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=10K\n}\n",
    );
    d.add_user("alice", "pw");
    d.add_user("bob", "pw");
    let msgs: Vec<Vec<u8>> = (0..4).map(|i| message(i, 4000)).collect();
    d.deliver_many("alice", msgs);
    let env = Env::new();
    config(
        &d,
        &env,
        &format!(
            "{{ socket = {:?}, to = [\"bob\"] }}",
            d.lmtp_socket().display().to_string()
        ),
    );
    let run = env.popfetch(&["fetch"]);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "{out}");
    assert!(out.contains("452 4.2.2"), "{out}");
    assert!(out.contains("failed for now"), "{out}");
    let delivered = d.message_count("bob");
    assert!((1..4).contains(&delivered), "{delivered} delivered\n{out}");
    assert_eq!(d.message_count("alice"), 4 - delivered, "the refused stay");
    // Still over quota: tried again, refused again, nothing lost.
    let again = env.popfetch(&["fetch"]);
    assert!(again.stdout.contains("failed for now"), "{}", again.stdout);
    assert_eq!(d.message_count("alice") + d.message_count("bob"), 4);
}

#[test]
fn lmtp_mixed_replies_record_who_has_it_and_no_one_gets_a_second_copy() {
    crate::peers::require_peers!("dovecot", "dovecot-lmtp");
    let d = start();
    d.add_user("carol", "pw");
    let msgs = messages(2);
    d.deliver_many("alice", msgs.clone());
    let env = Env::new();
    let socket = d.lmtp_socket().display().to_string();
    config(
        &d,
        &env,
        &format!("{{ socket = {socket:?}, to = [\"bob\", \"nosuchuser\"] }}"),
    );
    // bob gets every message; nosuchuser is refused with 550: held, bob recorded.
    let run = env.popfetch(&["fetch"]);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "{out}");
    assert!(out.contains("delivered to bob"), "{out}");
    assert_eq!(d.message_count("bob"), msgs.len());
    assert_eq!(d.message_count("alice"), msgs.len());
    let journal = std::fs::read_dir(env.path().join("state"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".uidls"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .unwrap();
    assert_eq!(journal.matches(" bob\n").count(), msgs.len(), "{journal}");
    assert!(journal.starts_with("popfetch-uidls 4\n"), "{journal}");
    // Released by hand: tried again, for nosuchuser only (refused again), never for bob.
    env.popfetch(&["retry", "alice"]).assert_code(0);
    env.popfetch(&["fetch"]).assert_code(1);
    assert_eq!(d.message_count("bob"), msgs.len(), "bob got no second copy");
    // The recipients change (a new delivery fingerprint releases the held messages): carol
    // gets them, bob still does not get them again, and the messages leave the server.
    config(
        &d,
        &env,
        &format!("{{ socket = {socket:?}, to = [\"bob\", \"carol\"] }}"),
    );
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert_eq!(d.message_count("alice"), 0);
    assert_eq!(d.message_count("carol"), msgs.len());
    assert_eq!(d.message_count("bob"), msgs.len(), "bob got no second copy");
    assert_round_trip(&d, "bob", &msgs);
    assert_round_trip(&d, "carol", &msgs);
}

#[test]
fn lmtp_server_gone_after_some_messages_keeps_those_recorded() {
    crate::peers::require_peers!("dovecot", "dovecot-lmtp");
    let d = start();
    let msgs: Vec<Vec<u8>> = (0..5).map(|i| message(i, 2000)).collect();
    d.deliver_many("alice", msgs.clone());
    let env = Env::new();
    let fake = env.path().join("fake-lmtp");
    let server = vanishing_server(&fake, 2);
    config(
        &d,
        &env,
        &format!(
            "{{ socket = {:?}, to = [\"bob\"] }}",
            fake.display().to_string()
        ),
    );
    let run = env.popfetch(&["fetch"]);
    server.join().unwrap();
    let out = format!("{}{}", run.stdout, run.stderr);
    assert_ne!(run.code, 0, "{out}");
    assert!(out.contains("2 new messages delivered"), "{out}");
    // The two the server took are recorded (and deleted); the rest stay.
    assert_eq!(d.message_count("alice"), 3, "{out}");
    config(
        &d,
        &env,
        &format!(
            "{{ socket = {:?}, to = [\"bob\"] }}",
            d.lmtp_socket().display().to_string()
        ),
    );
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(d.message_count("alice"), 0);
    assert_eq!(d.message_count("bob"), 3, "none of the first two again");
}

/// A scripted LMTP server on a Unix socket for `conns` connections, one after the other, that
/// accepts every recipient and after the data answers 452 for `b` on the first connection and
/// 250 for everyone else (RFC 2033 §4.2: one reply per accepted recipient). It offers 8BITMIME.
/// Returns, per connection, the recipients it was given and its MAIL commands.
fn per_recipient_server(
    path: &Path,
    conns: usize,
) -> std::thread::JoinHandle<Vec<(Vec<String>, Vec<String>)>> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for c in 0..conns {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"220 fake LMTP\r\n").unwrap();
            let mut rcpts: Vec<String> = Vec::new();
            let mut mails: Vec<String> = Vec::new();
            // The recipients of the transaction under way.
            let mut current: Vec<String> = Vec::new();
            let mut in_data = false;
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        for rc in &current {
                            let reply: &[u8] = if c == 0 && rc == "b" {
                                b"452 4.2.2 <b> Mailbox is full\r\n"
                            } else {
                                b"250 2.0.0 stored\r\n"
                            };
                            w.write_all(reply).unwrap();
                        }
                    }
                    continue;
                }
                let cmd = line.to_ascii_uppercase();
                let reply: &[u8] = if cmd.starts_with("LHLO") {
                    b"250-fake\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
                } else if cmd.starts_with("DATA") {
                    in_data = true;
                    b"354 go on\r\n"
                } else if cmd.starts_with("MAIL") {
                    mails.push(line.trim_end().to_string());
                    current.clear();
                    b"250 2.1.0 ok\r\n"
                } else if let Some(rest) = line.strip_prefix("RCPT TO:<") {
                    let rcpt = rest.trim_end().trim_end_matches('>').to_string();
                    current.push(rcpt.clone());
                    rcpts.push(rcpt);
                    b"250 2.1.5 ok\r\n"
                } else if cmd.starts_with("QUIT") {
                    w.write_all(b"221 bye\r\n").unwrap();
                    break;
                } else {
                    b"250 2.0.0 ok\r\n"
                };
                w.write_all(reply).unwrap();
            }
            seen.push((rcpts, mails));
        }
        seen
    })
}

#[test]
fn lmtp_a_452_after_the_data_for_one_recipient_retries_only_that_one() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    d.deliver_many("alice", vec![message(1, 1000)]);
    let env = Env::new();
    let fake = env.path().join("fake-lmtp");
    let server = per_recipient_server(&fake, 2);
    config(
        &d,
        &env,
        &format!(
            "{{ socket = {:?}, to = [\"a\", \"b\"] }}",
            fake.display().to_string()
        ),
    );
    let run = env.popfetch(&["fetch"]);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "{out}");
    assert!(out.contains("1 failed for now"), "{out}");
    assert!(out.contains("<b>: 452 4.2.2"), "{out}");
    assert_eq!(d.message_count("alice"), 1);
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(d.message_count("alice"), 0);
    let rcpts: Vec<Vec<String>> = server.join().unwrap().into_iter().map(|c| c.0).collect();
    assert_eq!(rcpts, [vec!["a", "b"], vec!["b"]]);
}

#[test]
fn lmtp_envelope_sender_from_return_path_and_8bitmime_when_needed() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    d.deliver_many(
        "alice",
        [
            b"Return-Path: <bounce@example.org>\nFrom: x@example.org\nSubject: ascii\n\nhi\n"
                .to_vec(),
            "Return-Path: <>\nFrom: y@example.org\nSubject: 8bit\n\nGr\u{fc}\u{df}e\n"
                .as_bytes()
                .to_vec(),
        ],
    );
    let env = Env::new();
    let fake = env.path().join("fake-lmtp");
    let server = per_recipient_server(&fake, 1);
    config(
        &d,
        &env,
        &format!(
            "{{ socket = {:?}, to = [\"a\"] }}",
            fake.display().to_string()
        ),
    );
    env.popfetch(&["fetch"]).assert_code(0);
    let seen = server.join().unwrap();
    assert_eq!(
        seen[0].1,
        [
            "MAIL FROM:<bounce@example.org>",
            "MAIL FROM:<> BODY=8BITMIME"
        ]
    );
}

/// Removes Cyrus's own fields at the top of a stored message (Return-Path, Received,
/// X-Cyrus-Session-Id, X-Sieve, folded lines included) and popfetch's Received line, and makes
/// its CRLF line ends LF.
fn strip_cyrus(stored: &[u8]) -> Vec<u8> {
    let lf: Vec<u8> = stored
        .windows(2)
        .filter(|w| w != b"\r\n")
        .map(|w| w[0])
        .chain(stored.last().copied())
        .collect();
    let mut m = lf.as_slice();
    loop {
        let lower = m.to_ascii_lowercase();
        if ![
            "return-path:",
            "received:",
            "x-cyrus-session-id:",
            "x-sieve:",
        ]
        .iter()
        .any(|h| lower.starts_with(h.as_bytes()))
        {
            return m.to_vec();
        }
        let mut end = m
            .iter()
            .position(|&b| b == b'\n')
            .map_or(m.len(), |i| i + 1);
        while matches!(m.get(end), Some(b' ' | b'\t')) {
            end += m[end..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(m.len() - end, |i| i + 1);
        }
        m = &m[end..];
    }
}

#[test]
fn lmtp_into_cyrus_lmtpd_on_its_socket() {
    crate::peers::require_peers!("dovecot", "cyrus");
    let cyrus = crate::cyrus::Cyrus::start();
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    // With a Date and a Message-ID field each, so that Cyrus adds none.
    let msgs: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            let mut m = b"Date: Thu, 03 Dec 2026 09:00:00 +0000\n".to_vec();
            m.extend_from_slice(&message(i, 3000));
            m
        })
        .chain(std::iter::once(
            b"Date: Thu, 03 Dec 2026 09:00:00 +0000\nFrom: b@example.org\nSubject: dots\nMessage-ID: <dots@x>\n\n.\n..\n.x\n"
                .to_vec(),
        ))
        .collect();
    d.deliver_many("alice", msgs.clone());
    let env = Env::new();
    config(
        &d,
        &env,
        &format!(
            "{{ socket = {:?}, to = [\"bob\"] }}",
            cyrus.socket().display().to_string()
        ),
    );
    let run = env.popfetch(&["fetch"]);
    let out = format!("{}{}\n{}", run.stdout, run.stderr, cyrus.log());
    assert_eq!(run.code, 0, "{out}");
    assert_eq!(d.message_count("alice"), 0);
    let mut got: Vec<Vec<u8>> = cyrus.messages().iter().map(|m| strip_cyrus(m)).collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| expected(m)).collect();
    want.sort();
    assert_eq!(got.len(), want.len(), "{out}");
    for (g, w) in got.iter().zip(&want) {
        assert!(
            g == w,
            "differs:\n{}\n---\n{}",
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(w)
        );
    }
}

/// A scripted LMTP server on a Unix socket whose first connection ends after one message (as a
/// server's idle timeout would end it between messages) and whose second serves until QUIT.
/// Returns how many messages each connection stored.
fn forgetful_server(path: &Path) -> std::thread::JoinHandle<Vec<usize>> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let mut stored = Vec::new();
        for c in 0..2 {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"220 fake LMTP\r\n").unwrap();
            let (mut n, mut rcpts, mut in_data) = (0, 0, false);
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        n += 1;
                        for _ in 0..rcpts {
                            w.write_all(b"250 2.0.0 stored\r\n").unwrap();
                        }
                        if c == 0 {
                            break; // hangs up between messages
                        }
                    }
                    continue;
                }
                let cmd = line.to_ascii_uppercase();
                let reply: &[u8] = if cmd.starts_with("LHLO") {
                    b"250-fake\r\n250 PIPELINING\r\n"
                } else if cmd.starts_with("MAIL") {
                    rcpts = 0;
                    b"250 ok\r\n"
                } else if cmd.starts_with("RCPT") {
                    rcpts += 1;
                    b"250 ok\r\n"
                } else if cmd.starts_with("DATA") {
                    in_data = true;
                    b"354 go on\r\n"
                } else if cmd.starts_with("QUIT") {
                    w.write_all(b"221 bye\r\n").unwrap();
                    break;
                } else {
                    b"250 ok\r\n"
                };
                w.write_all(reply).unwrap();
            }
            stored.push(n);
        }
        stored
    })
}

#[test]
fn lmtp_connection_closed_between_messages_is_opened_again() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    d.deliver_many("alice", (0..3).map(|i| message(i, 1000)));
    let env = Env::new();
    let fake = env.path().join("fake-lmtp");
    let server = forgetful_server(&fake);
    config(
        &d,
        &env,
        &format!(
            "{{ socket = {:?}, to = [\"u\"] }}",
            fake.display().to_string()
        ),
    );
    let run = env.popfetch(&["fetch"]);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 0, "{out}");
    assert!(out.contains("3 new messages delivered"), "{out}");
    assert_eq!(d.message_count("alice"), 0);
    // One message on the first connection, the other two on the second: none sent twice.
    assert_eq!(server.join().unwrap(), [1, 2]);
}

/// What [`lockstep_server`] saw on its one connection.
#[derive(Debug, Default)]
struct Lockstep {
    /// Every command line in order, its CRLF removed.
    commands: Vec<String>,
    /// Each message's data as it arrived, dot-unstuffed, its CRLFs made LF.
    bodies: Vec<Vec<u8>>,
    /// The commands (and the data's final ".") after which the client sent more before it had
    /// the reply: only a server that offers PIPELINING may be spoken to that way.
    not_waited_for: Vec<String>,
}

/// How long [`lockstep_server`] waits, before each reply, for input that should not come.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(30);
/// How long [`lockstep_server`] waits for a command.
const IDLE: std::time::Duration = std::time::Duration::from_secs(15);

/// Whether the client sent more than what was read so far: bytes already buffered, or arriving
/// within [`SETTLE`].
fn more_waiting(r: &mut BufReader<std::os::unix::net::UnixStream>) -> bool {
    if !r.buffer().is_empty() {
        return true;
    }
    r.get_ref().set_read_timeout(Some(SETTLE)).unwrap();
    // A timeout is an error and leaves the buffer empty.
    let more = matches!(r.fill_buf(), Ok(b) if !b.is_empty());
    r.get_ref().set_read_timeout(Some(IDLE)).unwrap();
    more
}

/// A scripted LMTP server on a Unix socket that does not offer PIPELINING (RFC 2033 §5 makes
/// it mandatory; Dovecot and Cyrus always offer it, so only a script can leave it out). Before
/// each reply it checks that nothing more came, records the command if it did and hangs up, as
/// a server that reads one command at a time may lose what was sent early. Otherwise it accepts
/// every recipient and stores every message (one 250 per recipient after the data, §4.2).
fn lockstep_server(path: &Path) -> std::thread::JoinHandle<Lockstep> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let mut seen = Lockstep::default();
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(IDLE)).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        w.write_all(b"220 fake LMTP, one command at a time\r\n")
            .unwrap();
        let mut rcpts = 0;
        let mut line = Vec::new();
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                break;
            }
            let cmd = String::from_utf8_lossy(&line).trim_end().to_string();
            if more_waiting(&mut r) {
                seen.not_waited_for.push(cmd);
                break;
            }
            seen.commands.push(cmd.clone());
            let verb = cmd.to_ascii_uppercase();
            let reply: Vec<u8> = if verb.starts_with("LHLO") {
                b"250-fake\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n".to_vec()
            } else if verb.starts_with("MAIL") {
                rcpts = 0;
                b"250 2.1.0 ok\r\n".to_vec()
            } else if verb.starts_with("RCPT") {
                rcpts += 1;
                b"250 2.1.5 ok\r\n".to_vec()
            } else if verb.starts_with("RSET") {
                b"250 2.0.0 ok\r\n".to_vec()
            } else if verb == "DATA" {
                w.write_all(b"354 go on\r\n").unwrap();
                let mut body = Vec::new();
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                        return seen; // gone mid-data
                    }
                    if line == b".\r\n" {
                        break;
                    }
                    // RFC 5321 §4.5.2: a line's leading "." was doubled.
                    let l = line.strip_prefix(b".").unwrap_or(&line);
                    match l.strip_suffix(b"\r\n") {
                        Some(l) => {
                            body.extend_from_slice(l);
                            body.push(b'\n');
                        }
                        None => body.extend_from_slice(l),
                    }
                }
                seen.bodies.push(body);
                if more_waiting(&mut r) {
                    seen.not_waited_for.push(".".into());
                    break;
                }
                b"250 2.0.0 stored\r\n".repeat(rcpts)
            } else if verb.starts_with("QUIT") {
                w.write_all(b"221 2.0.0 bye\r\n").unwrap();
                break;
            } else {
                b"500 5.5.2 unknown command\r\n".to_vec()
            };
            w.write_all(&reply).unwrap();
        }
        seen
    })
}

#[test]
fn lmtp_server_without_pipelining_is_spoken_to_one_command_at_a_time() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let msgs = messages(2);
    d.deliver_many("alice", msgs.clone());
    let env = Env::new();
    let fake = env.path().join("fake-lmtp");
    let server = lockstep_server(&fake);
    config(
        &d,
        &env,
        &format!(
            "{{ socket = {:?}, to = [\"a\", \"b\"] }}",
            fake.display().to_string()
        ),
    );
    let run = env.popfetch(&["fetch"]);
    let seen = server.join().unwrap();
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        seen.not_waited_for.is_empty(),
        "sent more before the reply to {:?}\n{out}",
        seen.not_waited_for
    );
    assert_eq!(run.code, 0, "{out}");
    assert!(
        out.contains(&format!("{} new messages delivered", msgs.len())),
        "{out}"
    );
    assert_eq!(d.message_count("alice"), 0);
    // One connection: LHLO, then per message (RSET before all but the first) MAIL, a RCPT per
    // recipient and DATA, each in its own round trip, and QUIT.
    let verbs: Vec<String> = seen
        .commands
        .iter()
        .map(|c| c.split([' ', ':']).next().unwrap().to_ascii_uppercase())
        .collect();
    let mut want = vec!["LHLO"];
    for i in 0..msgs.len() {
        if i > 0 {
            want.push("RSET");
        }
        want.extend(["MAIL", "RCPT", "RCPT", "DATA"]);
    }
    want.push("QUIT");
    assert_eq!(verbs, want, "{:#?}", seen.commands);
    // The envelope as with a server that pipelines: the sender from the Return-Path where there
    // is one, BODY=8BITMIME for the 8-bit message, both recipients for every message.
    assert!(
        seen.commands
            .iter()
            .any(|c| c == "MAIL FROM:<bounce@example.org>"),
        "{:#?}",
        seen.commands
    );
    assert!(
        seen.commands
            .iter()
            .any(|c| c == "MAIL FROM:<c@example.org> BODY=8BITMIME"),
        "{:#?}",
        seen.commands
    );
    let rcpts = seen.commands.iter().filter(|c| c.starts_with("RCPT"));
    assert!(
        rcpts
            .clone()
            .zip(["RCPT TO:<a>", "RCPT TO:<b>"].iter().cycle())
            .all(|(c, w)| c == w),
        "{:#?}",
        seen.commands
    );
    // Every message whole and byte for byte (CRLF on the wire, dot-stuffing undone).
    let mut got: Vec<Vec<u8>> = seen.bodies.iter().map(|b| strip_received(b)).collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| local_form(m)).collect();
    want.sort();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!(
            g == w,
            "differs:\n{}\n---\n{}",
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(w)
        );
    }
}
