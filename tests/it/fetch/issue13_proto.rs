//! Issue 13, the protocol items, through the built binary against the scripted server: the
//! terminator rule (item 2), listing budgets and a mailbox of a million messages (item 11), a
//! bounded SASL exchange and a stop that ends every wait (item 12), and a minimum transfer rate
//! (item 13).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, Run, expected, message};
use crate::pop3_server::{Fault, Listing, Msg, PASSWORD, Script, Server, USER};

/// The longest a `popfetch fetch` here may take before the test calls it a hang.
const DEADLINE: Duration = Duration::from_secs(120);
/// Peak RSS allowed for a hostile listing.
const MAX_RSS_KIB: u64 = 64 * 1024;

fn msgs(n: usize, size: usize) -> Vec<Msg> {
    (1..=n)
        .map(|i| Msg::new(message(i, size), &format!("uidl-{i}")))
        .collect()
}

/// One account `alice` on `server`; `deliver` is the TOML value of `deliver` (`{dir}` stands
/// for the test's directory; default: its Maildir), `extra` more keys.
fn env_with(server: &Server, deliver: Option<&str>, extra: &str) -> Env {
    let env = Env::new();
    let deliver = deliver.map_or_else(
        || format!("{{ maildir = \"{}\" }}", env.maildir().display()),
        |d| d.replace("{dir}", &env.path().display().to_string()),
    );
    let mut extra = extra.to_string();
    if !extra.contains("timeout =") {
        extra.push_str("timeout = \"2s\"\n");
    }
    if !extra.contains("auth =") {
        extra.push_str("auth = \"user\"\n");
    }
    env.write_config(&format!(
        "[[account]]\nname = \"alice\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         user = \"{USER}\"\npassword = \"{PASSWORD}\"\nallow_plaintext_auth = true\n\
         deliver = {deliver}\n{extra}\n",
        server.port(),
    ));
    env
}

/// Runs `cmd` in its own process group, reading its output; `None` when it has not ended
/// within `limit` (the group is killed then).
fn run_within(mut cmd: Command, limit: Duration) -> Option<Run> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn");
    let (out, err) = collect(&mut child);
    let status = wait_within(&mut child, limit);
    let stdout = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    status.map(|st| Run {
        code: st.code().unwrap_or(-1),
        stdout,
        stderr,
    })
}

type Reader = std::thread::JoinHandle<Vec<u8>>;

fn collect(child: &mut std::process::Child) -> (Reader, Reader) {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    (
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        }),
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err.read_to_end(&mut v);
            v
        }),
    )
}

/// Waits for `child` at most `limit`; kills its process group and returns `None` after that.
fn wait_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() >= until {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[track_caller]
fn fetch_within(env: &Env, limit: Duration) -> Run {
    run_within(env.command(&["fetch"]), limit)
        .unwrap_or_else(|| panic!("popfetch fetch did not end within {limit:?}: it hangs"))
}

#[track_caller]
fn fetch(env: &Env) -> Run {
    fetch_within(env, DEADLINE)
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
    let run = run_within(timed, DEADLINE).expect("popfetch fetch hangs");
    let rss = run
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time:\n{}", run.stderr))
        .trim()
        .parse()
        .unwrap();
    (run, rss)
}

/// Exit status 1, no panic, and a line `popfetch: account alice: ...` with every needle.
#[track_caller]
fn assert_failed(run: &Run, needles: &[&str]) {
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    run.assert_code(1);
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("popfetch: account alice: ")
                && needles.iter().all(|n| l.contains(n))),
        "expected `popfetch: account alice: ...` containing {needles:?}:\n{}",
        run.stderr
    );
}

/// Every message a DELE named was delivered whole (it is among `delivered`).
#[track_caller]
fn assert_deleted_only_delivered(server: &Server, delivered: &[Vec<u8>]) {
    for d in server.log().deles {
        assert!(
            delivered.contains(&expected(&d)),
            "DELE sent for a message not delivered whole: {:?}",
            String::from_utf8_lossy(&d)
        );
    }
}

// ---- item 2: the terminator is CRLF "." CRLF; bare LF only for an answer bare-LF throughout

const SLOPPY_BODY: &[u8] =
    b"first part\nA sloppy server passes a bare LF:\n.\nSECOND PART that must not be lost\n";

#[test]
fn issue13_2_a_bare_lf_dot_line_inside_a_crlf_message_is_content_not_its_end() {
    let answer = b"+OK 77 octets\r\nfirst part\r\nA sloppy server passes a bare LF:\n.\n\
SECOND PART that must not be lost\r\n.\r\n"
        .to_vec();
    let mut box_ = msgs(2, 500);
    box_.insert(
        1,
        Msg::new(SLOPPY_BODY.to_vec(), "sloppy").fault(Fault::Raw(answer)),
    );
    let server = Server::healthy(box_.clone());
    let env = env_with(&server, None, "");
    let run = fetch(&env);
    eprintln!("{}{}", run.stdout, run.stderr);
    let got = env.delivered();
    assert!(
        got.iter().any(|m| m
            .windows(33)
            .any(|w| w == b"SECOND PART that must not be lost")),
        "the part after the bare-LF \".\" line was lost: {:?}",
        got.iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect::<Vec<_>>()
    );
    run.assert_code(0);
    assert!(got.contains(&SLOPPY_BODY.to_vec()), "delivered whole");
    assert_deleted_only_delivered(&server, &got);
    // A second poll (the message served as it should be now) deletes nothing undelivered.
    server.heal();
    let run = fetch(&env);
    run.assert_code(0);
    assert_deleted_only_delivered(&server, &env.delivered());
    assert_eq!(env.delivered().len(), 3, "each message once");
}

#[test]
fn issue13_2_a_server_bare_lf_throughout_still_works() {
    let body = b"Subject: lf\n\nline one\n.dotted\n\nlast\n".to_vec();
    let answer = b"+OK 40 octets\nSubject: lf\n\nline one\n..dotted\n\nlast\n.\n".to_vec();
    let mut box_ = msgs(2, 500);
    box_.insert(1, Msg::new(body.clone(), "lf").fault(Fault::Raw(answer)));
    let server = Server::healthy(box_.clone());
    let env = env_with(&server, None, "");
    let run = fetch(&env);
    run.assert_code(0);
    let got = env.delivered();
    assert!(got.contains(&body), "{got:?}");
    assert_eq!(got.len(), 3);
    assert!(server.remaining().is_empty());
    assert_deleted_only_delivered(&server, &got);
}

// ---- item 11: listing budgets; a mailbox of a million messages

/// A LIST of 300,000 lines of 8 KiB (2.4 GB), far beyond the 2 messages STAT announced: the
/// poll fails with the budget error after a few lines, in bounded memory, and deletes nothing.
#[test]
fn issue13_11_a_listing_far_beyond_the_stat_count_fails_in_bounded_memory() {
    crate::peers::require_peers!("time");
    let server = Server::start(
        msgs(2, 500),
        Script {
            list: Listing::Huge {
                lines: 300_000,
                width: 8 * 1024,
            },
            ..Script::default()
        },
    );
    let env = env_with(&server, None, "");
    let (run, rss) = fetch_measured(&env);
    let streamed = server.log().streamed;
    eprintln!("measure: 300,000 LIST lines of 8 KiB: peak RSS {rss} KiB, {streamed} bytes sent");
    assert_failed(
        &run,
        &["LIST listing is longer than its budget", "STAT announced 2"],
    );
    assert!(rss < MAX_RSS_KIB, "peak RSS {rss} KiB");
    assert!(server.log().commands("RETR").is_empty());
    assert!(server.log().deles.is_empty());
    assert_eq!(server.remaining().len(), 2);
}

/// CAPA is read before STLS and login, so anyone on the path can answer it: 300,000 lines of
/// 8 KiB are cut off at the CAPA budget, before any password is sent, in bounded memory.
#[test]
fn issue13_11_a_huge_capa_answer_fails_before_login_in_bounded_memory() {
    crate::peers::require_peers!("time");
    let server = Server::start(
        msgs(1, 500),
        Script {
            capa: Listing::Huge {
                lines: 300_000,
                width: 8 * 1024,
            },
            ..Script::default()
        },
    );
    let env = env_with(&server, None, "");
    let (run, rss) = fetch_measured(&env);
    let streamed = server.log().streamed;
    eprintln!("measure: 300,000 CAPA lines of 8 KiB: peak RSS {rss} KiB, {streamed} bytes sent");
    assert_failed(&run, &["CAPA answer is longer than 65536 octets"]);
    assert!(rss < MAX_RSS_KIB, "peak RSS {rss} KiB");
    assert!(server.log().commands("USER").is_empty(), "no login");
    assert!(server.log().commands("PASS").is_empty(), "no password sent");
    assert_eq!(server.remaining().len(), 1);
}

/// A mailbox of 1,000,000 messages (STAT, UIDL and LIST say so) is polled: the first three are
/// fetched (`max_messages_per_poll`) and deleted.
#[test]
fn issue13_11_a_mailbox_of_a_million_messages_is_polled() {
    crate::peers::require_peers!("time");
    // The three real messages are 1000 octets on the wire, the size the listing gives.
    let real: Vec<Msg> = (1..=3)
        .map(|i| {
            let mut m = Msg::new(message(i, 900), &format!("uidl-{i}"));
            while m.size() < 1000 {
                m.data.insert(m.data.len() - 1, b'x');
            }
            m
        })
        .collect();
    assert!(real.iter().all(|m| m.size() == 1000));
    let server = Server::start(
        real.clone(),
        Script {
            stat: Some("+OK 1000000 1000000000".into()),
            uidl: Listing::Huge {
                lines: 1_000_000,
                width: 0,
            },
            list: Listing::Huge {
                lines: 1_000_000,
                width: 0,
            },
            ..Script::default()
        },
    );
    let env = env_with(
        &server,
        None,
        "timeout = \"30s\"\nmax_messages_per_poll = 3\n",
    );
    let t = Instant::now();
    let (run, rss) = fetch_measured(&env);
    eprintln!(
        "measure: 1,000,000 messages listed: peak RSS {rss} KiB, {:?}\n{}{}",
        t.elapsed(),
        run.stdout,
        run.stderr
    );
    run.assert_code(0);
    let got = env.delivered();
    assert_eq!(got.len(), 3);
    for m in &real {
        assert!(got.contains(&expected(&m.data)));
    }
    assert_eq!(server.log().deles.len(), 3);
    assert_deleted_only_delivered(&server, &got);
}

// ---- item 12: a bounded SASL exchange; a stop ends every wait

#[test]
fn issue13_12_an_endless_sasl_exchange_ends_with_an_error() {
    for auth in ["plain", "login", "cram-md5"] {
        let server = Server::start(
            msgs(1, 500),
            Script {
                sasl_endless: true,
                ..Script::default()
            },
        );
        let env = env_with(&server, None, &format!("auth = \"{auth}\"\n"));
        let run = fetch_within(&env, Duration::from_secs(30));
        assert_failed(&run, &["kept the SASL exchange going"]);
        let log = server.log();
        assert!(log.sasl_lines <= 4, "{auth}: {} SASL lines", log.sasl_lines);
        assert_eq!(log.sessions.len(), 1, "{auth}: no login loop");
        assert!(log.commands("RETR").is_empty());
        assert_eq!(server.remaining().len(), 1);
    }
}

/// A SIGTERM while the server holds an answer (timeout 60 s; the server holds 15 s) ends
/// `popfetch fetch` without waiting for the server; nothing is deleted.
#[test]
fn issue13_12_sigterm_during_a_stalled_exchange_ends_fetch() {
    let server = Server::start(
        msgs(1, 500),
        Script {
            uidl: Listing::Raw(b"+OK\r\n1 uidl-1\r\n".to_vec()),
            ..Script::default()
        },
    );
    let env = env_with(&server, None, "timeout = \"60s\"\n");
    let mut cmd = env.command(&["fetch"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn");
    let (out, err) = collect(&mut child);
    let until = Instant::now() + Duration::from_secs(20);
    while server.log().commands("UIDL").is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!server.log().commands("UIDL").is_empty(), "UIDL never sent");
    std::thread::sleep(Duration::from_millis(200));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = wait_within(&mut child, Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    let status = status.unwrap_or_else(|| {
        panic!("one SIGTERM did not end popfetch fetch while the server held UIDL\n{stderr}")
    });
    eprintln!("{status:?}\n{stdout}{stderr}");
    assert!(
        stdout.contains("alice: stopped by a signal before the transfer began"),
        "{stdout}{stderr}"
    );
    assert!(
        status.success(),
        "a graceful stop is no failure: {status:?}"
    );
    assert!(server.log().deles.is_empty());
    assert_eq!(server.remaining().len(), 1);
}

// ---- item 13: a minimum transfer rate

/// Message 2 trickles one octet every 0.25 s, each well within `timeout`: the poll fails with
/// the stall error instead of lasting as long as the server likes; nothing is deleted; message
/// 1, complete before it, is kept; a healed server then gets everything delivered once.
#[test]
fn issue13_13_a_trickling_server_fails_the_poll_with_a_stall_error() {
    let mut box_ = msgs(3, 3000);
    box_[1] = box_[1]
        .clone()
        .fault(Fault::Trickle(Duration::from_millis(250)));
    let server = Server::healthy(box_.clone());
    let env = env_with(&server, Some("{ mbox = \"{dir}/box\" }"), "");
    let mbox = env.path().join("box");
    let run = fetch(&env);
    eprintln!("{}", run.stderr);
    assert_failed(
        &run,
        &["transfer from the server stalled", "bytes in the last"],
    );
    assert_eq!(server.log().quits_ok, 0);
    assert_eq!(server.remaining().len(), 3, "nothing deleted");
    let text = std::fs::read(&mbox).unwrap_or_default();
    let has = |m: &Msg| {
        let subject = format!("Subject: message {}\n", &m.uidl[5..].escape_ascii());
        text.windows(subject.len())
            .filter(|w| *w == subject.as_bytes())
            .count()
    };
    assert_eq!(
        has(&box_[0]),
        1,
        "message 1 arrived complete before the stall: kept"
    );
    assert_eq!(has(&box_[1]), 0, "the trickled message is not delivered");
    server.heal();
    let run = fetch(&env);
    run.assert_code(0);
    let text = std::fs::read(&mbox).unwrap();
    for m in &box_ {
        let subject = format!("Subject: message {}\n", &m.uidl[5..].escape_ascii());
        let n = text
            .windows(subject.len())
            .filter(|w| *w == subject.as_bytes())
            .count();
        assert_eq!(n, 1, "{subject:?} delivered once");
    }
    assert!(server.remaining().is_empty());
}
