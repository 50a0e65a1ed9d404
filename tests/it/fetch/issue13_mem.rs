//! Issue 13 item 11, memory: a server that announces a million new messages with the longest
//! unique-ids RFC 1939 allows is polled in bounded memory (peak RSS measured under
//! `/usr/bin/time`), the poll takes its slice and defers the rest, and the next poll goes on
//! where it stopped, with no message twice. Also the normal case of 2,000 messages, timed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, Run, expected, message};
use crate::pop3_server::{Listing, Msg, PASSWORD, Script, Server, USER, huge_uidl};

/// The longest a `popfetch fetch` here may take before the test calls it a hang.
const DEADLINE: Duration = Duration::from_secs(300);
/// Peak RSS allowed for a hostile listing (issue 13 item 11).
const MAX_RSS_KIB: u64 = 64 * 1024;
/// Messages the server announces and lists.
const ANNOUNCED: u64 = 1_000_000;
/// RFC 1939 §7: the longest unique-id.
const UIDL_LEN: usize = 70;

/// One account `alice` on `server`, delivering into the test's Maildir, with `extra` keys.
fn env_with(server: &Server, extra: &str) -> Env {
    let env = Env::new();
    env.write_config(&format!(
        "[[account]]\nname = \"alice\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         user = \"{USER}\"\npassword = \"{PASSWORD}\"\nallow_plaintext_auth = true\n\
         auth = \"user\"\ntimeout = \"60s\"\ndeliver = {{ maildir = \"{}\" }}\n{extra}\n",
        server.port(),
        env.maildir().display(),
    ));
    env
}

/// `popfetch fetch` under `/usr/bin/time -f %M`: the run and its peak RSS in KiB.
fn fetch_measured(env: &Env) -> (Run, u64) {
    let rss_file = env.path().join("rss");
    let cmd = env.command(&["fetch"]);
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    timed
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = timed.spawn().expect("spawn /usr/bin/time");
    let until = Instant::now() + DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("popfetch fetch did not end within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let rss = std::fs::read_to_string(&rss_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time:\n{}", run.stderr));
    (run, rss)
}

/// A server that announces and lists a million messages with 70-character unique-ids, all new
/// (only the first four exist to be fetched, 1000 octets each as the listing says). With
/// `keep = true` and `max_messages_per_poll = 2`, the first poll fetches messages 1 and 2 and
/// defers the rest within 64 MB of peak RSS; the second fetches 3 and 4, nothing twice.
///
/// Before the listing was read line by line, the whole listing was held (a map of every UIDL,
/// a map of sizes, an item for every new message): the first poll peaked at about 430 MB.
#[test]
fn issue13_11_a_million_new_messages_with_long_uidls_poll_in_bounded_memory() {
    crate::peers::require_peers!("time");
    let real: Vec<Msg> = (1..=4)
        .map(|i| {
            let mut m = Msg::new(message(i, 900), &huge_uidl(i as u64, UIDL_LEN));
            while m.size() < 1000 {
                m.data.insert(m.data.len() - 1, b'x');
            }
            m
        })
        .collect();
    assert!(real.iter().all(|m| m.size() == 1000));
    assert_eq!(huge_uidl(ANNOUNCED, UIDL_LEN).len(), UIDL_LEN);
    let server = Server::start(
        real.clone(),
        Script {
            stat: Some(format!("+OK {ANNOUNCED} {}", ANNOUNCED * 1000)),
            uidl: Listing::HugeUidls {
                lines: ANNOUNCED,
                uidl_len: UIDL_LEN,
            },
            list: Listing::HugeUidls {
                lines: ANNOUNCED,
                uidl_len: UIDL_LEN,
            },
            ..Script::default()
        },
    );
    let env = env_with(&server, "keep = true\nmax_messages_per_poll = 2\n");

    for poll in 1..=2 {
        let t = Instant::now();
        let (run, rss) = fetch_measured(&env);
        eprintln!(
            "measure: poll {poll} of {ANNOUNCED} listed with {UIDL_LEN}-character UIDLs: peak \
             RSS {rss} KiB, {:?}\n{}{}",
            t.elapsed(),
            run.stdout,
            run.stderr
        );
        run.assert_code(0);
        assert!(
            run.stdout.contains("2 new messages delivered"),
            "poll {poll}: {}",
            run.stdout
        );
        // Progress: the rest waits for the next poll, and says so.
        let deferred = ANNOUNCED - 2 * poll;
        assert!(
            run.stdout
                .contains(&format!("{deferred} left for the next poll")),
            "poll {poll}: {}",
            run.stdout
        );
        assert!(rss < MAX_RSS_KIB, "poll {poll}: peak RSS {rss} KiB");
        let got = env.delivered();
        assert_eq!(got.len(), 2 * poll as usize, "poll {poll}");
        for m in &real[..2 * poll as usize] {
            assert!(got.contains(&expected(&m.data)), "poll {poll}");
        }
    }
    // Each message fetched once, in server order, none deleted (keep = true).
    let log = server.log();
    assert_eq!(
        log.commands("RETR"),
        ["RETR 1", "RETR 2", "RETR 3", "RETR 4"]
    );
    assert!(log.deles.is_empty());
}

/// The normal case, for comparison: 2,000 messages of 4 KB, all fetched and deleted in one poll.
#[test]
fn issue13_11_two_thousand_messages_are_fetched_in_one_poll() {
    crate::peers::require_peers!("time");
    let all: Vec<Msg> = (1..=2000)
        .map(|i| Msg::new(message(i, 4096), &format!("uidl-{i}")))
        .collect();
    let server = Server::start(all.clone(), Script::default());
    let env = env_with(&server, "");
    let t = Instant::now();
    let (run, rss) = fetch_measured(&env);
    eprintln!(
        "measure: 2,000 x 4 KB: peak RSS {rss} KiB, {:?}\n{}",
        t.elapsed(),
        run.stdout
    );
    run.assert_code(0);
    assert!(
        run.stdout.contains("2000 new messages delivered"),
        "{}",
        run.stdout
    );
    assert_eq!(env.delivered().len(), 2000);
    assert!(server.remaining().is_empty());
}

/// Delivered messages whose DELE is due are held by number only, and forgotten once deleted:
/// the first poll delivers three messages but every DELE is refused; the second deletes them
/// without fetching them again; a later message that reuses one of their UIDLs is new.
#[test]
fn issue13_11_delivered_messages_are_deleted_by_number_and_then_forgotten() {
    crate::peers::require_peers!("time");
    let all: Vec<Msg> = (1..=3)
        .map(|i| Msg::new(message(i, 500), &format!("uidl-{i}")))
        .collect();
    let server = Server::start(
        all.clone(),
        Script {
            dele_err: true,
            ..Script::default()
        },
    );
    let env = env_with(&server, "");
    let (run, _) = fetch_measured(&env);
    run.assert_code(1);
    assert_eq!(env.delivered().len(), 3);
    assert_eq!(server.remaining().len(), 3);

    server.heal();
    let (run, _) = fetch_measured(&env);
    run.assert_code(0);
    assert!(server.remaining().is_empty(), "{}", run.stderr);
    assert_eq!(
        server.log().commands("RETR").len(),
        3,
        "nothing fetched twice"
    );
    assert_eq!(env.delivered().len(), 3);

    let reused = Msg::new(message(4, 500), "uidl-2");
    server.push(reused.clone());
    let (run, _) = fetch_measured(&env);
    run.assert_code(0);
    let got = env.delivered();
    assert_eq!(got.len(), 4, "{}{}", run.stdout, run.stderr);
    assert!(got.contains(&expected(&reused.data)));
    assert!(server.remaining().is_empty());
}

/// A UIDL the journal knows, listed for two messages, is refused before anything is fetched or
/// deleted: both would count as delivered, and one would be deleted unread.
#[test]
fn issue13_11_a_delivered_uidl_listed_twice_deletes_nothing() {
    crate::peers::require_peers!("time");
    let all: Vec<Msg> = (1..=2)
        .map(|i| Msg::new(message(i, 500), &format!("uidl-{i}")))
        .collect();
    let server = Server::start(
        all[..1].to_vec(),
        Script {
            dele_err: true,
            ..Script::default()
        },
    );
    let env = env_with(&server, "");
    let (run, _) = fetch_measured(&env);
    run.assert_code(1);
    assert_eq!(env.delivered().len(), 1);

    server.push(all[1].clone().uidl_bytes(b"uidl-1"));
    server.heal();
    let (run, _) = fetch_measured(&env);
    run.assert_code(1);
    assert!(
        run.stderr.contains("same unique-id") && run.stderr.contains("listed twice"),
        "{}",
        run.stderr
    );
    assert_eq!(server.log().commands("RETR").len(), 1);
    assert_eq!(server.remaining().len(), 2);
    assert_eq!(env.delivered().len(), 1);
}

/// STAT announcing more messages than a mailbox may hold (67,108,864) is refused before any
/// listing: the one structure a listing needs whatever its length, a bit per message number,
/// stays within 8 MiB.
#[test]
fn issue13_11_stat_beyond_the_largest_mailbox_is_refused() {
    crate::peers::require_peers!("time");
    let server = Server::start(
        vec![Msg::new(message(1, 500), "uidl-1")],
        Script {
            stat: Some("+OK 4294967295 0".into()),
            ..Script::default()
        },
    );
    let env = env_with(&server, "");
    let (run, rss) = fetch_measured(&env);
    run.assert_code(1);
    assert!(
        run.stderr.contains("messages popfetch can poll"),
        "{}",
        run.stderr
    );
    assert!(rss < MAX_RSS_KIB, "peak RSS {rss} KiB");
    assert!(server.log().commands("RETR").is_empty());
    assert_eq!(server.remaining().len(), 1);
}
