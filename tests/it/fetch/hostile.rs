//! `popfetch` against hostile and broken POP3 servers (the scripted server in
//! `pop3_server.rs`): connections cut inside a message, refusals of DELE, QUIT and UIDL,
//! garbage, endless lines and answers, lying LIST sizes, bad and shifting UIDL listings,
//! silence. In every case: a clear error naming the account, the right exit status, no DELE of
//! a message that is not in the Maildir byte for byte, no truncated delivery, no panic, bounded
//! time and memory, and other accounts go on.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, Run, delivered_in, expected, message, run_bounded};
use crate::pop3_server::{Fault, Greeting, Listing, Msg, Script, Server};
use crate::support::config::Account;

/// The longest any single `popfetch fetch` here may take: the account timeout is 2 s.
const DEADLINE: Duration = Duration::from_secs(60);
/// Peak RSS allowed for the worst inputs (a 1 MB line, a never-ending message).
const MAX_RSS_KIB: u64 = 64 * 1024;

/// `n` plain messages of about `size` bytes with UIDLs `uidl-1` ... `uidl-n`.
fn msgs(n: usize, size: usize) -> Vec<Msg> {
    (1..=n)
        .map(|i| Msg::new(message(i, size), &format!("uidl-{i}")))
        .collect()
}

fn data(msgs: &[Msg]) -> Vec<Vec<u8>> {
    msgs.iter().map(|m| m.data.clone()).collect()
}

/// One `[[account]]` on `server` delivering into `maildir`. `extra` may set `tls` (default
/// "none"), `timeout` (default "2s") and any other key.
fn account(name: &str, server: &Server, maildir: &Path, extra: &str) -> String {
    Account::scripted(server)
        .name(name)
        .text("timeout", "2s")
        .maildir(maildir)
        .extra(extra)
        .to_toml()
}

/// An environment with the one account `alice` on `server`.
fn env_for(server: &Server, extra: &str) -> Env {
    let env = Env::new();
    env.write_config(&account("alice", server, &env.maildir(), extra));
    env
}

/// `popfetch fetch`, bounded.
fn fetch(env: &Env) -> Run {
    run_bounded(env.command(&["fetch"]), DEADLINE)
}

/// `popfetch fetch` under `/usr/bin/time -v`: the run and its peak RSS in KiB.
fn fetch_measured(env: &Env) -> (Run, u64) {
    let cmd = env.command(&["fetch"]);
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-v").arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let run = run_bounded(timed, DEADLINE);
    let rss = run
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .unwrap_or_else(|| {
            panic!(
                "no peak RSS from /usr/bin/time (tests/install-peers installs it):\n{}",
                run.stderr
            )
        })
        .trim()
        .parse()
        .unwrap();
    (run, rss)
}

/// No panic, whatever happened.
#[track_caller]
fn assert_no_panic(run: &Run) {
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("RUST_BACKTRACE"),
        "popfetch panicked:\n{}",
        run.stderr
    );
}

/// Exit status 1, and a line `popfetch: account NAME: ...` on stderr that contains every one of
/// `needles`.
#[track_caller]
fn assert_failed(run: &Run, name: &str, needles: &[&str]) {
    assert_no_panic(run);
    run.assert_code(1);
    let prefix = format!("popfetch: account {name}: ");
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with(&prefix) && needles.iter().all(|n| l.contains(n))),
        "expected a line `{prefix}...` containing {needles:?} on stderr:\n{}",
        run.stderr
    );
}

/// Exit status 0, no panic, and `summary` on stdout.
#[track_caller]
fn assert_ok(run: &Run, summary: &str) {
    assert_no_panic(run);
    run.assert_code(0);
    assert!(
        run.stdout.contains(summary),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
}

/// The one promise: every message a DELE named is in the Maildir, byte for byte; and nothing
/// was delivered that is not one of the server's messages whole (no truncated or garbled
/// delivery).
#[track_caller]
fn assert_nothing_lost(server: &Server, maildir: &Path, sources: &[Vec<u8>]) {
    let got = delivered_in(maildir);
    for d in server.log().deles {
        assert!(
            got.contains(&expected(&d)),
            "DELE sent for a message that is not in the Maildir: {:?}...\n{} delivered",
            String::from_utf8_lossy(&d[..d.len().min(120)]),
            got.len()
        );
    }
    let whole: Vec<Vec<u8>> = sources.iter().map(|s| expected(s)).collect();
    for g in &got {
        assert!(
            whole.contains(g),
            "delivered something that is not a whole message of the server ({} bytes): {:?}...",
            g.len(),
            String::from_utf8_lossy(&g[..g.len().min(200)])
        );
    }
    assert_tmp_empty(maildir);
}

/// An unfinished delivery leaves nothing behind in `tmp/`.
#[track_caller]
fn assert_tmp_empty(maildir: &Path) {
    let left: Vec<_> = std::fs::read_dir(maildir.join("tmp"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "files left in tmp/: {left:?}");
}

/// What landed, sorted, against what should have.
#[track_caller]
fn assert_delivered_exactly(maildir: &Path, sources: &[Vec<u8>]) {
    let mut got = delivered_in(maildir);
    got.sort();
    let mut want: Vec<Vec<u8>> = sources.iter().map(|s| expected(s)).collect();
    want.sort();
    assert!(
        got == want,
        "delivered {} messages, expected {}",
        got.len(),
        want.len()
    );
}

/// After a hostile session: the same server, healed, gets everything delivered once and deleted.
#[track_caller]
fn assert_heals(env: &Env, server: &Server, sources: &[Vec<u8>]) {
    server.heal();
    let run = fetch(env);
    assert_ok(&run, "alice: ");
    assert_delivered_exactly(&env.maildir(), sources);
    assert!(server.remaining().is_empty(), "all deleted after healing");
    assert_nothing_lost(server, &env.maildir(), sources);
}

#[test]
fn hostile_server_behaving_well_delivers_everything_dot_stuffed_and_pipelined() {
    let mut msgs = msgs(5, 3000);
    msgs.push(Msg::new(
        b"From: a@example.org\nSubject: dots\n\n.\n..\n.hidden\n...and more\nend\n".to_vec(),
        "dots",
    ));
    msgs.push(Msg::new(
        b"From: a@example.org\nSubject: no final newline\n\nlast line".to_vec(),
        "no-newline",
    ));
    let sources = data(&msgs);
    let server = Server::healthy(msgs);
    let env = env_for(&server, "");
    let run = fetch(&env);
    assert_ok(&run, "alice: 7 new messages delivered");
    assert!(
        run.stdout.contains("7 deleted from the server"),
        "{}",
        run.stdout
    );
    assert_delivered_exactly(&env.maildir(), &sources);
    assert!(server.remaining().is_empty());
    let log = server.log();
    assert_eq!(log.quits_ok, 1);
    assert_eq!(log.deles.len(), 7);
    assert_nothing_lost(&server, &env.maildir(), &sources);
}

/// The connection drops inside a RETR answer: in the status line, in the headers, mid-body,
/// right before the final ".\r\n", inside it, and right after it (the message whole, but no
/// chance to DELE). Nothing truncated is delivered, nothing is deleted; the next poll against a
/// healed server delivers everything once.
#[test]
fn connection_cut_inside_a_retr_answer_delivers_nothing_truncated_and_deletes_nothing() {
    let probe = Msg::new(message(1, 20_000), "uidl-1");
    let answer = probe.retr_answer();
    let status = probe.status_line().len();
    let cuts = [
        ("in the status line", 2),
        ("in the headers", status + 20),
        ("mid-body", answer.len() / 2),
        ("right before the final .CRLF", answer.len() - 3),
        ("between the final . and CRLF", answer.len() - 1),
        ("right after the final .CRLF", answer.len()),
    ];
    for cut_message in [0, 1] {
        for (what, at) in cuts {
            let mut msgs = msgs(2, 20_000);
            msgs[cut_message] = msgs[cut_message].clone().fault(Fault::CutAt(at));
            let sources = data(&msgs);
            let server = Server::healthy(msgs);
            let env = env_for(&server, "");
            let run = fetch(&env);
            eprintln!(
                "cut {what} of message {}: {}",
                cut_message + 1,
                run.stderr.trim()
            );
            assert_failed(&run, "alice", &["the server closed the connection"]);
            let log = server.log();
            assert!(log.deles.is_empty(), "cut {what}: DELE sent: {log:?}");
            assert_eq!(log.quits, 0, "cut {what}");
            assert_eq!(server.remaining().len(), 2);
            // Whole messages before the cut may have been delivered; nothing else.
            assert_nothing_lost(&server, &env.maildir(), &sources);
            assert_heals(&env, &server, &sources);
        }
    }
}

#[test]
fn retr_refused_leaves_that_message_and_delivers_the_others() {
    let mut msgs = msgs(3, 1000);
    msgs[1] = msgs[1].clone().fault(Fault::Refuse);
    let sources = data(&msgs);
    let server = Server::healthy(msgs);
    let env = env_for(&server, "");
    let run = fetch(&env);
    assert_no_panic(&run);
    run.assert_code(1);
    assert!(
        run.stdout.contains("alice: 2 new messages delivered")
            && run.stdout.contains("1 failed for now (left on the server)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("alice") && l.contains("refused RETR")),
        "{}",
        run.stderr
    );
    assert_eq!(server.remaining(), vec![sources[1].clone()]);
    assert_delivered_exactly(&env.maildir(), &[sources[0].clone(), sources[2].clone()]);
    assert_nothing_lost(&server, &env.maildir(), &sources);
    assert_heals(&env, &server, &sources);
}

/// The last DELEs and the QUIT go in one flight, so when one DELE is refused the QUIT that
/// follows it commits the others: each was sent only after its message was durably delivered.
/// The poll is an error, nothing is lost or delivered twice, and the next poll deletes the one
/// left.
#[test]
fn one_dele_refused_with_quit_in_its_flight_loses_nothing_and_the_next_poll_deletes_it() {
    let msgs = msgs(3, 1000);
    let sources = data(&msgs);
    let server = Server::start(
        msgs,
        Script {
            dele_err_uidl: Some("uidl-2".into()),
            ..Script::default()
        },
    );
    let env = env_for(&server, "");
    let run = fetch(&env);
    assert_failed(&run, "alice", &["the server answered DELE with -ERR"]);
    assert_nothing_lost(&server, &env.maildir(), &sources);
    assert_delivered_exactly(&env.maildir(), &sources);
    // The QUIT behind the DELEs committed the two accepted.
    assert_eq!(server.log().quits_ok, 1);
    assert_eq!(server.remaining(), vec![sources[1].clone()]);
    let retrs_before = server.log().commands("RETR").len();
    server.heal();
    let run = fetch(&env);
    assert_ok(&run, "alice: 0 new messages delivered");
    assert_eq!(
        server.log().commands("RETR").len(),
        retrs_before,
        "nothing fetched again"
    );
    assert_delivered_exactly(&env.maildir(), &sources);
    assert!(server.remaining().is_empty());
}

#[test]
fn dele_refused_is_an_error_and_the_next_poll_deletes_without_duplicates() {
    let msgs = msgs(3, 1000);
    let sources = data(&msgs);
    let server = Server::start(
        msgs,
        Script {
            dele_err: true,
            ..Script::default()
        },
    );
    let env = env_for(&server, "");
    let run = fetch(&env);
    assert_failed(
        &run,
        "alice",
        &["the server answered DELE with -ERR", "cannot delete"],
    );
    assert_eq!(server.remaining().len(), 3);
    assert_nothing_lost(&server, &env.maildir(), &sources);
    // Delivered once; the next poll only deletes.
    assert_delivered_exactly(&env.maildir(), &sources);
    let retrs_before = server.log().commands("RETR").len();
    server.heal();
    let run = fetch(&env);
    assert_ok(&run, "alice: 0 new messages delivered");
    assert!(run.stdout.contains("3 deleted"), "{}", run.stdout);
    assert_eq!(
        server.log().commands("RETR").len(),
        retrs_before,
        "nothing fetched again"
    );
    assert_delivered_exactly(&env.maildir(), &sources);
    assert!(server.remaining().is_empty());
}

#[test]
fn quit_refused_is_an_error_messages_stay_and_the_next_poll_deletes_without_duplicates() {
    let msgs = msgs(3, 1000);
    let sources = data(&msgs);
    let server = Server::start(
        msgs,
        Script {
            quit_err: true,
            ..Script::default()
        },
    );
    let env = env_for(&server, "");
    let run = fetch(&env);
    assert_failed(&run, "alice", &["the server answered QUIT with -ERR"]);
    assert_eq!(server.remaining().len(), 3, "QUIT -ERR: nothing removed");
    assert_eq!(server.log().quits, 1);
    assert_nothing_lost(&server, &env.maildir(), &sources);
    assert_delivered_exactly(&env.maildir(), &sources);
    let retrs_before = server.log().commands("RETR").len();
    server.heal();
    let run = fetch(&env);
    assert_ok(&run, "alice: 0 new messages delivered");
    assert!(run.stdout.contains("3 deleted"), "{}", run.stdout);
    assert_eq!(server.log().commands("RETR").len(), retrs_before);
    assert_delivered_exactly(&env.maildir(), &sources);
    assert!(server.remaining().is_empty());
}

#[test]
fn uidl_refused_fetches_and_deletes_all_with_keep_false_and_is_refused_with_keep_true() {
    let no_uidl = Script {
        uidl: Listing::Refused,
        ..Script::default()
    };
    let msgs = msgs(3, 1000);
    let sources = data(&msgs);
    let server = Server::start(msgs, no_uidl);

    let env = env_for(&server, "keep = true\n");
    let run = fetch(&env);
    assert_failed(&run, "alice", &["does not support UIDL", "keep = true"]);
    assert!(server.log().commands("RETR").is_empty());
    assert!(server.log().deles.is_empty());
    assert_eq!(server.remaining().len(), 3);

    let env = env_for(&server, "keep = false\n");
    let run = fetch(&env);
    assert_ok(&run, "alice: 3 new messages delivered");
    assert_delivered_exactly(&env.maildir(), &sources);
    assert!(server.remaining().is_empty());
    assert_nothing_lost(&server, &env.maildir(), &sources);
}

#[test]
fn garbage_instead_of_a_status_line_is_a_protocol_error() {
    // As the greeting.
    let msgs = msgs(2, 1000);
    let sources = data(&msgs);
    let server = Server::start(
        msgs.clone(),
        Script {
            greeting: Greeting::Raw(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()),
            ..Script::default()
        },
    );
    let env = env_for(&server, "");
    let run = fetch(&env);
    assert_failed(
        &run,
        "alice",
        &["invalid status line", "HTTP/1.1 400 Bad Request"],
    );
    assert!(server.log().commands("PASS").is_empty());

    // As the answer to RETR (pipelined behind the first, good one).
    let mut msgs = msgs;
    msgs[1] = msgs[1]
        .clone()
        .fault(Fault::Answer(b"\x00\x01garbage\xff\r\n".to_vec()));
    let server = Server::healthy(msgs);
    let env = env_for(&server, "");
    let run = fetch(&env);
    assert_failed(&run, "alice", &["protocol error", "invalid status line"]);
    assert!(server.log().deles.is_empty());
    assert_nothing_lost(&server, &env.maildir(), &sources);
    assert_heals(&env, &server, &sources);
}

#[test]
fn a_megabyte_greeting_without_crlf_fails_in_bounded_memory() {
    crate::peers::require_peers!("time");
    let server = Server::start(
        msgs(1, 1000),
        Script {
            greeting: Greeting::Raw(vec![b'+'; 1 << 20]),
            ..Script::default()
        },
    );
    let env = env_for(&server, "");
    let (run, rss) = fetch_measured(&env);
    eprintln!("measure: 1 MB greeting line: peak RSS {rss} KiB");
    assert_failed(&run, "alice", &["line longer than"]);
    assert!(rss < MAX_RSS_KIB, "peak RSS {rss} KiB");
    assert!(server.log().commands("PASS").is_empty());
}

#[test]
fn a_megabyte_line_inside_the_list_answer_fails_in_bounded_memory() {
    crate::peers::require_peers!("time");
    let mut answer = b"+OK 1 messages\r\n1 ".to_vec();
    answer.extend(std::iter::repeat_n(b'9', 1 << 20));
    let server = Server::start(
        msgs(1, 1000),
        Script {
            list: Listing::Raw(answer),
            ..Script::default()
        },
    );
    let env = env_for(&server, "");
    let (run, rss) = fetch_measured(&env);
    eprintln!("measure: 1 MB LIST line: peak RSS {rss} KiB");
    assert_failed(&run, "alice", &["line longer than"]);
    assert!(rss < MAX_RSS_KIB, "peak RSS {rss} KiB");
    assert!(server.log().deles.is_empty());
    assert_eq!(server.remaining().len(), 1);
}

/// A listing that never ends (well-formed lines, no terminating "."): `what` is the command.
fn endless_listing(script: Script, what: &str) {
    let server = Server::start(msgs(1, 1000), script);
    let env = env_for(&server, "");
    let t = Instant::now();
    let (run, rss) = fetch_measured(&env);
    let streamed = server.log().streamed;
    eprintln!(
        "measure: endless {what} listing: peak RSS {rss} KiB, {streamed} bytes streamed, {:?}",
        t.elapsed()
    );
    assert_no_panic(&run);
    assert!(
        rss < MAX_RSS_KIB,
        "endless {what} listing: peak RSS {rss} KiB after {streamed} bytes\n{}",
        run.stderr
    );
    assert_failed(&run, "alice", &[what]);
    assert!(server.log().commands("RETR").is_empty());
    assert!(server.log().deles.is_empty());
    assert_eq!(server.remaining().len(), 1);
}

/// An endless UIDL listing must be cut off like an endless message: in bounded memory, with a
/// clear error.
#[test]
fn an_endless_uidl_listing_is_cut_off_in_bounded_memory() {
    crate::peers::require_peers!("time");
    let script = Script {
        uidl: Listing::Endless,
        ..Script::default()
    };
    endless_listing(script, "UIDL");
}

#[test]
fn an_endless_list_listing_is_cut_off_in_bounded_memory() {
    crate::peers::require_peers!("time");
    let script = Script {
        list: Listing::Endless,
        ..Script::default()
    };
    endless_listing(script, "LIST");
}

/// A RETR that streams without end: popfetch stops once the message is far beyond its LIST
/// size, in flat memory, leaving nothing on disk.
#[test]
fn an_endless_retr_stops_far_beyond_the_list_size_in_bounded_memory_and_disk() {
    crate::peers::require_peers!("time");
    let mut msgs = msgs(2, 1000);
    msgs[0] = msgs[0].clone().fault(Fault::Endless);
    let sources = data(&msgs);
    let server = Server::healthy(msgs);
    let env = env_for(&server, "");
    let t = Instant::now();
    let (run, rss) = fetch_measured(&env);
    let streamed = server.log().streamed;
    eprintln!(
        "measure: endless RETR: peak RSS {rss} KiB, {streamed} bytes streamed, {:?}",
        t.elapsed()
    );
    assert_failed(&run, "alice", &["message 1 is larger than", "LIST size"]);
    assert!(rss < MAX_RSS_KIB, "peak RSS {rss} KiB");
    assert!(streamed < 32 << 20, "{streamed} bytes read before stopping");
    assert!(server.log().deles.is_empty());
    assert_nothing_lost(&server, &env.maildir(), &sources);
    assert!(env.delivered().is_empty());
}

#[test]
fn a_list_size_a_little_off_still_delivers() {
    let mut msgs = msgs(4, 5000);
    let size = |m: &Msg| m.size();
    msgs[0] = msgs[0].clone().listed(size(&msgs[0]) - 100);
    msgs[1] = msgs[1].clone().listed(size(&msgs[1]) + 100);
    msgs[2] = msgs[2].clone().listed(0);
    msgs[3] = msgs[3].clone().listed(size(&msgs[3]) / 2);
    let sources = data(&msgs);
    let server = Server::healthy(msgs);
    let env = env_for(&server, "");
    let run = fetch(&env);
    assert_ok(&run, "alice: 4 new messages delivered");
    assert_delivered_exactly(&env.maildir(), &sources);
    assert!(server.remaining().is_empty());
    assert_nothing_lost(&server, &env.maildir(), &sources);
}

#[test]
fn a_list_size_vastly_smaller_than_the_message_stops_the_poll() {
    let mut msgs = msgs(2, 1000);
    msgs[1] = Msg::new(message(2, 3 << 20), "uidl-2").listed(100);
    let sources = data(&msgs);
    let server = Server::healthy(msgs);
    let env = env_for(&server, "");
    let run = fetch(&env);
    assert_failed(
        &run,
        "alice",
        &["message 2 is larger than the 100 octets its LIST size announced"],
    );
    // Message 1 may have been committed (and its DELE sent) while message 2 was on its way;
    // message 2 is never named by a DELE, and the session ends without QUIT, so the server
    // deletes nothing.
    let log = server.log();
    assert!(
        log.deles.iter().all(|d| *d == sources[0]),
        "a DELE named the oversized message"
    );
    assert_eq!(log.quits, 0);
    assert_eq!(server.remaining().len(), 2);
    assert_nothing_lost(&server, &env.maildir(), &sources);
}

/// A LIST size of 2^64 - 1 (the largest a u64 holds) is a lie that must not crash popfetch. The
/// small message behind it falls far short of it: held on the server with both sizes reported
/// (issue 13, item 2), the others delivered.
#[test]
fn an_absurd_list_size_does_not_crash_the_pipeline_window() {
    let mut msgs = msgs(3, 1000);
    msgs[1] = msgs[1].clone().listed(u64::MAX);
    let sources = data(&msgs);
    let server = Server::healthy(msgs);
    let env = env_for(&server, "");
    let run = fetch(&env);
    assert_no_panic(&run);
    assert_nothing_lost(&server, &env.maildir(), &sources);
    run.assert_code(1);
    assert!(
        run.stdout.contains("alice: 2 new messages delivered")
            && run.stdout.contains(&u64::MAX.to_string()),
        "{}",
        run.stdout
    );
    assert_delivered_exactly(&env.maildir(), &[sources[0].clone(), sources[2].clone()]);
    assert_eq!(server.remaining(), vec![sources[1].clone()]);
}

#[test]
fn duplicate_uidls_are_refused_before_anything_is_fetched() {
    let msgs: Vec<Msg> = msgs(3, 1000)
        .into_iter()
        .enumerate()
        .map(|(i, m)| if i == 2 { m.uidl_bytes(b"uidl-1") } else { m })
        .collect();
    let server = Server::healthy(msgs);
    let env = env_for(&server, "");
    let run = fetch(&env);
    assert_failed(&run, "alice", &["bad UIDL line", "uidl-1", "listed twice"]);
    assert!(server.log().commands("RETR").is_empty());
    assert!(server.log().deles.is_empty());
    assert_eq!(server.remaining().len(), 3);
}

#[test]
fn uidls_with_illegal_characters_are_refused_naming_the_line() {
    let long = "x".repeat(71);
    let cases: [(&[u8], &str); 4] = [
        (b"abc def", "0x20"),
        (b"abc\x01def", "0x01"),
        (b"abc\x7fdef", "0x7f"),
        (long.as_bytes(), "longer than 70"),
    ];
    for (uidl, why) in cases {
        let mut msgs = msgs(2, 1000);
        msgs[1] = msgs[1].clone().uidl_bytes(uidl);
        let server = Server::healthy(msgs);
        let env = env_for(&server, "");
        let run = fetch(&env);
        assert_failed(&run, "alice", &["bad UIDL line", why]);
        assert!(server.log().commands("RETR").is_empty());
        assert!(server.log().deles.is_empty());
        assert_eq!(server.remaining().len(), 2);
    }
}

/// Between two sessions the numbers shift (a message vanished, a new one came first): DELE goes
/// by this session's numbers, so only delivered messages are deleted.
#[test]
fn numbers_shifting_between_sessions_delete_only_delivered_messages() {
    let all = msgs(4, 1000);
    let sources = data(&all);
    // Session 1 delivers messages 1-3 but QUIT fails: nothing removed.
    let server = Server::start(
        all[..3].to_vec(),
        Script {
            quit_err: true,
            ..Script::default()
        },
    );
    let env = env_for(&server, "");
    assert_failed(&fetch(&env), "alice", &["QUIT"]);
    assert_delivered_exactly(&env.maildir(), &sources[..3]);
    // Message 1 is removed by someone else; message 4 arrives, listed first.
    server.set_script(Script::default());
    server.set_messages(vec![all[3].clone(), all[1].clone(), all[2].clone()]);
    let run = fetch(&env);
    assert_ok(&run, "alice: 1 new message delivered");
    assert!(run.stdout.contains("3 deleted"), "{}", run.stdout);
    assert!(server.remaining().is_empty());
    assert_delivered_exactly(&env.maildir(), &sources);
    assert_nothing_lost(&server, &env.maildir(), &sources);
}

/// A message's UIDL changes between sessions: it may be fetched again (a duplicate, not a loss);
/// nothing undelivered is deleted.
#[test]
fn a_uidl_that_changes_between_sessions_loses_nothing() {
    let all = msgs(3, 1000);
    let sources = data(&all);
    let server = Server::start(
        all.clone(),
        Script {
            quit_err: true,
            ..Script::default()
        },
    );
    let env = env_for(&server, "");
    assert_failed(&fetch(&env), "alice", &["QUIT"]);
    server.set_script(Script::default());
    server.edit(|m| {
        m[0].uidl = b"renamed-1".to_vec();
        // Two messages swap their UIDLs: both were delivered, so both may go.
        let (a, b) = (m[1].uidl.clone(), m[2].uidl.clone());
        m[1].uidl = b;
        m[2].uidl = a;
    });
    let run = fetch(&env);
    assert_ok(&run, "alice: 1 new message delivered");
    assert!(server.remaining().is_empty());
    assert_nothing_lost(&server, &env.maildir(), &sources);
    let got = env.delivered();
    for s in &sources {
        assert!(got.contains(&expected(s)), "a message is missing");
    }
    assert_eq!(got.len(), 4, "message 1 fetched again under its new UIDL");
}

/// A UIDL listing that names message 1 twice (and message 2 not at all): taking it at its word
/// would record message 2's UIDL as delivered with message 1's content, and a later, correct
/// listing would have message 2 deleted unread.
#[test]
fn a_uidl_listing_naming_one_message_twice_loses_nothing() {
    let all = msgs(2, 1000);
    let sources = data(&all);
    let server = Server::start(
        all,
        Script {
            uidl: Listing::Lines(b"1 uidl-1\r\n1 uidl-2\r\n".to_vec()),
            ..Script::default()
        },
    );
    let env = env_for(&server, "");
    let run = fetch(&env);
    eprintln!("first poll: {}{}", run.stdout, run.stderr);
    assert_no_panic(&run);
    assert_nothing_lost(&server, &env.maildir(), &sources);
    // The server comes to its senses.
    server.heal();
    let run = fetch(&env);
    eprintln!("second poll: {}{}", run.stdout, run.stderr);
    assert_no_panic(&run);
    assert_nothing_lost(&server, &env.maildir(), &sources);
    let got = env.delivered();
    for s in &sources {
        assert!(
            got.contains(&expected(s)) || server.remaining().contains(s),
            "message lost: neither delivered nor on the server: {:?}",
            String::from_utf8_lossy(&s[..80])
        );
    }
}

#[test]
fn a_greeting_that_never_comes_times_out() {
    let server = Server::start(
        msgs(1, 1000),
        Script {
            greeting: Greeting::Silent,
            ..Script::default()
        },
    );
    let env = env_for(&server, "");
    let t = Instant::now();
    let run = fetch(&env);
    assert_failed(
        &run,
        "alice",
        &["timed out after 2s waiting for the server's greeting"],
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}

#[test]
fn a_stall_after_the_retr_status_line_times_out_and_deletes_nothing() {
    let mut msgs = msgs(3, 1000);
    msgs[1] = msgs[1].clone().fault(Fault::StallAfterStatus);
    let sources = data(&msgs);
    let server = Server::healthy(msgs);
    let env = env_for(&server, "");
    let t = Instant::now();
    let run = fetch(&env);
    assert_failed(
        &run,
        "alice",
        &["timed out after 2s waiting for message data"],
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(server.log().deles.is_empty());
    assert_nothing_lost(&server, &env.maildir(), &sources);
    assert_heals(&env, &server, &sources);
}

#[test]
fn starttls_refused_or_not_offered_fails_before_any_password() {
    for (script, needle) in [
        (
            Script {
                stls_refused: true,
                ..Script::default()
            },
            "the server answered STLS with -ERR",
        ),
        (Script::default(), "does not offer STLS"),
    ] {
        let server = Server::start(msgs(1, 1000), script);
        let env = env_for(&server, "tls = \"starttls\"\n");
        let run = fetch(&env);
        assert_failed(&run, "alice", &[needle]);
        let log = server.log();
        assert!(log.commands("USER").is_empty(), "{log:?}");
        assert!(log.commands("PASS").is_empty(), "{log:?}");
        assert_eq!(server.remaining().len(), 1);
    }
}

#[test]
fn a_hostile_account_does_not_stop_a_healthy_one() {
    let good_msgs = msgs(3, 2000);
    let good_sources = data(&good_msgs);
    let good = Server::healthy(good_msgs);
    let mut bad_msgs = msgs(2, 20_000);
    bad_msgs[0] = bad_msgs[0].clone().fault(Fault::CutAt(5000));
    let bad_sources = data(&bad_msgs);
    let bad = Server::healthy(bad_msgs);
    let env = Env::new();
    let (good_dir, bad_dir) = (env.path().join("good"), env.path().join("bad"));
    env.write_config(&format!(
        "{}{}",
        account("bad", &bad, &bad_dir, ""),
        account("good", &good, &good_dir, "")
    ));
    let run = fetch(&env);
    assert_failed(&run, "bad", &["the server closed the connection"]);
    assert!(
        run.stdout.contains("good: 3 new messages delivered"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("bad:"), "{}", run.stdout);
    assert_delivered_exactly(&good_dir, &good_sources);
    assert!(good.remaining().is_empty());
    assert_nothing_lost(&bad, &bad_dir, &bad_sources);
    assert_eq!(bad.remaining().len(), 2);
}

/// Many kinds of hostility at once, beside a healthy account: each fails on its own, with its
/// own error line; the healthy one is delivered.
#[test]
fn many_hostile_accounts_in_one_run_each_fail_alone() {
    let good_msgs = msgs(3, 2000);
    let good_sources = data(&good_msgs);
    let good = Server::healthy(good_msgs);
    let faulty = |fault: Fault| {
        let mut m = msgs(2, 5000);
        m[1] = m[1].clone().fault(fault);
        Server::healthy(m)
    };
    let endless = faulty(Fault::Endless);
    let stall = faulty(Fault::StallAfterStatus);
    let cut = faulty(Fault::CutAt(3000));
    let garbage = Server::start(
        msgs(1, 1000),
        Script {
            greeting: Greeting::Raw(b"garbage\r\n".to_vec()),
            ..Script::default()
        },
    );
    let dele = Server::start(
        msgs(2, 1000),
        Script {
            dele_err: true,
            ..Script::default()
        },
    );
    let silent = Server::start(
        msgs(1, 1000),
        Script {
            greeting: Greeting::Silent,
            ..Script::default()
        },
    );
    let env = Env::new();
    let hostile: [(&str, &Server, &str); 6] = [
        ("endless", &endless, "is larger than"),
        ("stall", &stall, "waiting for message data"),
        ("cut", &cut, "closed the connection"),
        ("garbage", &garbage, "invalid status line"),
        ("dele", &dele, "DELE with -ERR"),
        ("silent", &silent, "waiting for the server's greeting"),
    ];
    let mut config = account("good", &good, &env.path().join("good"), "");
    for (name, server, _) in &hostile {
        config.push_str(&account(name, server, &env.path().join(name), ""));
    }
    env.write_config(&config);
    let t = Instant::now();
    let run = fetch(&env);
    eprintln!("{}{}({:?})", run.stdout, run.stderr, t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "hostile accounts are polled in parallel: {:?}",
        t.elapsed()
    );
    assert!(
        run.stdout.contains("good: 3 new messages delivered"),
        "{}",
        run.stdout
    );
    assert_delivered_exactly(&env.path().join("good"), &good_sources);
    for (name, server, needle) in hostile {
        assert_failed(&run, name, &[needle]);
        let maildir = env.path().join(name);
        let remaining = server.remaining();
        let sources: Vec<Vec<u8>> = remaining.clone();
        assert_nothing_lost(server, &maildir, &sources);
        assert!(!remaining.is_empty(), "{name}: nothing may be removed");
    }
}

/// `popfetch daemon`: a hostile account (stalling inside a message at every poll) does not stop
/// a healthy one from being polled again and again, and new mail on the healthy one arrives.
#[test]
fn daemon_keeps_polling_a_healthy_account_beside_a_hostile_one() {
    let good = Server::healthy(msgs(1, 1000));
    let mut bad_msgs = msgs(2, 1000);
    bad_msgs[0] = bad_msgs[0].clone().fault(Fault::StallAfterStatus);
    let bad_sources = data(&bad_msgs);
    let bad = Server::healthy(bad_msgs);
    let env = Env::new();
    let (good_dir, bad_dir) = (env.path().join("good"), env.path().join("bad"));
    env.write_config(&format!(
        "log_target = \"stderr\"\nshutdown_timeout = \"10s\"\n{}{}",
        account("bad", &bad, &bad_dir, "interval = \"1s\"\n"),
        account("good", &good, &good_dir, "interval = \"1s\"\n")
    ));
    let log_path = env.path().join("daemon.log");
    let mut child = env
        .command(&["daemon"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .env("POPFETCH_LOG", "popfetch=debug")
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let polls = |l: &str, account: &str| {
        l.lines()
            .filter(|l| l.contains(&format!("account {account}: poll done")))
            .count()
    };
    let wait = |secs: u64, what: &str, pred: &dyn Fn() -> bool| {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            if pred() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("timed out waiting for {what}");
        false
    };
    let mut ok = wait(15, "the healthy account's first delivery", &|| {
        delivered_in(&good_dir).len() == 1
    });
    // New mail keeps arriving on the healthy server, and keeps being delivered.
    for i in 2..=4 {
        if !ok {
            break;
        }
        good.push(Msg::new(message(i, 1000), &format!("uidl-{i}")));
        ok = wait(15, "the next delivery", &|| {
            delivered_in(&good_dir).len() == i
        });
    }
    // The poll's log line follows its deliveries.
    let hostile_failed = |l: &str| {
        l.lines().any(|l| {
            l.contains("account bad: poll failed") && l.contains("waiting for message data")
        })
    };
    ok = ok
        && wait(10, "the polls' log lines", &|| {
            let l = log();
            polls(&l, "good") >= 4 && hostile_failed(&l)
        });
    let text = log();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let until = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(ok, "the healthy account stalled:\n{}", log());
    assert!(polls(&text, "good") >= 4, "{text}");
    assert!(
        hostile_failed(&text),
        "the hostile account's failure is logged:\n{text}"
    );
    assert!(!log().contains("panicked"), "{}", log());
    let status = status.expect("the daemon exits within its shutdown deadline");
    assert!(status.success(), "{status:?}\n{}", log());
    assert!(good.remaining().is_empty());
    assert!(bad.log().deles.is_empty());
    assert_nothing_lost(&bad, &bad_dir, &bad_sources);
    assert_eq!(bad.remaining().len(), 2);
}
