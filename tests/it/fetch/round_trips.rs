//! Round trips per poll, counted by the session and logged with the poll's summary: a poll that
//! finds nothing takes connect, greeting, CAPA, USER and PASS in one flight, STAT and UIDL (and
//! LIST, for a small mailbox) in one, and a QUIT it does not wait for; one that fetches streams
//! its RETRs and DELEs, the last DELEs with the QUIT.

use std::time::{Duration, Instant};

use crate::harness::{Env, message};
use crate::pop3_server::{Msg, Script, Server};
use crate::support::config::Account;

/// The round trips the poll's debug line reports.
pub(super) fn round_trips(stderr: &str) -> u32 {
    let line = stderr
        .lines()
        .find(|l| l.contains("poll done:"))
        .unwrap_or_else(|| panic!("no poll line in:\n{stderr}"));
    let at = line.find(" round trips").expect("round trips");
    let digits: String = line[..at]
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.chars().rev().collect::<String>().parse().unwrap()
}

#[test]
fn a_poll_that_finds_nothing_takes_five_round_trips_over_plain_tcp() {
    let msgs: Vec<Msg> = (0..3)
        .map(|i| Msg::new(message(i, 500), &format!("uidl-{i}")))
        .collect();
    let server = Server::healthy(msgs);
    let env = Env::new();
    env.write_config(
        &Account::scripted(&server)
            .set("keep", true)
            .maildir(&env.maildir())
            .to_toml(),
    );
    let first = env.popfetch(&["-vv", "fetch"]);
    first.assert_code(0);
    // Connect, greeting, CAPA, USER+PASS, STAT+UIDL, LIST, the RETRs, QUIT not waited for
    // (keep: nothing deleted).
    let fetching = round_trips(&first.stderr);
    assert!(fetching <= 8, "{fetching} round trips:\n{}", first.stderr);
    let again = env.popfetch(&["-vv", "fetch"]);
    again.assert_code(0);
    assert_eq!(round_trips(&again.stderr), 5, "{}", again.stderr);
    // USER and PASS went in one flight, and the QUIT reached the server all the same.
    let until = Instant::now() + Duration::from_secs(5);
    while server.log().quits < 2 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.log().quits, 2);
}

#[test]
fn a_fetch_and_delete_waits_for_quit_and_counts_it() {
    let msgs: Vec<Msg> = (0..20)
        .map(|i| Msg::new(message(i, 4000), &format!("uidl-{i}")))
        .collect();
    let server = Server::healthy(msgs);
    let env = Env::new();
    env.write_config(&Account::scripted(&server).maildir(&env.maildir()).to_toml());
    let run = env.popfetch(&["-vv", "fetch"]);
    run.assert_code(0);
    assert!(server.remaining().is_empty());
    let n = round_trips(&run.stderr);
    // 20 messages ride in a few flights behind their RETRs; QUIT is waited for (it commits the
    // DELEs).
    assert!((7..=12).contains(&n), "{n} round trips:\n{}", run.stderr);
}

/// 200 small messages from a server one round trip away: the RETRs go in the flights the
/// retrieval window (bytes in flight) allows, not 32 at a time.
#[test]
fn two_hundred_small_messages_from_a_distant_server_take_few_round_trips() {
    let msgs: Vec<Msg> = (0..200)
        .map(|i| Msg::new(message(i, 4000), &format!("uidl-{i}")))
        .collect();
    let server = Server::start(
        msgs,
        Script {
            flight_delay: Some(Duration::from_millis(30)),
            ..Script::default()
        },
    );
    let env = Env::new();
    env.write_config(&Account::scripted(&server).maildir(&env.maildir()).to_toml());
    let started = Instant::now();
    let run = env.popfetch(&["-vv", "fetch"]);
    let wall = started.elapsed();
    run.assert_code(0);
    assert!(server.remaining().is_empty());
    assert_eq!(env.delivered().len(), 200);
    let n = round_trips(&run.stderr);
    eprintln!("{n} round trips counted, {wall:?}");
    // Connect, greeting, CAPA, USER+PASS, STAT+UIDL+LIST, the RETRs (under 1 MiB: one
    // flight), the last DELEs+QUIT (the DELEs of the batches committed while the rest streamed
    // are answered meanwhile): 7, and one more should a batch's commit end just late.
    assert!(n <= 8, "{n} round trips:\n{}", run.stderr);
}

/// The DELEs of the last messages and the QUIT that commits them go in one flight, and LIST
/// rides with STAT and UIDL: a fetch of three messages from a distant server takes connect,
/// greeting, CAPA, USER+PASS, STAT+UIDL+LIST, the RETRs, and DELEs+QUIT.
#[test]
fn the_last_deles_and_quit_go_in_one_flight() {
    let msgs: Vec<Msg> = (0..3)
        .map(|i| Msg::new(message(i, 2000), &format!("uidl-{i}")))
        .collect();
    let sources: Vec<Vec<u8>> = msgs.iter().map(|m| m.wire()).collect();
    let server = Server::start(
        msgs,
        Script {
            flight_delay: Some(Duration::from_millis(50)),
            ..Script::default()
        },
    );
    let env = Env::new();
    env.write_config(&Account::scripted(&server).maildir(&env.maildir()).to_toml());
    let run = env.popfetch(&["-vv", "fetch"]);
    run.assert_code(0);
    assert!(server.remaining().is_empty());
    assert_eq!(server.log().quits_ok, 1);
    assert_eq!(env.delivered().len(), sources.len());
    assert_eq!(round_trips(&run.stderr), 7, "{}", run.stderr);
}

/// LIST is sent ahead only while the journal knows few messages: a large kept mailbox is not
/// listed twice at every poll that finds nothing.
#[test]
fn list_is_sent_ahead_only_for_a_small_mailbox() {
    let msgs: Vec<Msg> = (0..1001)
        .map(|i| Msg::new(message(i, 100), &format!("uidl-{i}")))
        .collect();
    let server = Server::healthy(msgs);
    let env = Env::new();
    env.write_config(
        &Account::scripted(&server)
            .set("keep", true)
            .maildir(&env.maildir())
            .to_toml(),
    );
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(env.delivered().len(), 1001);
    let lists = server.log().commands("LIST").len();
    // The journal knows 1,001 messages now: LIST is not sent when nothing is new.
    let again = env.popfetch(&["-vv", "fetch"]);
    again.assert_code(0);
    assert_eq!(
        server.log().commands("LIST").len(),
        lists,
        "{}",
        again.stderr
    );
    assert_eq!(round_trips(&again.stderr), 5, "{}", again.stderr);
}

/// A server named by a host name is looked up at each poll through the system resolver (whose
/// cache honours the TTL), and the lookup's time is logged at debug level with the poll; an
/// address literal is not looked up at all.
#[test]
fn the_name_lookup_is_logged_with_its_time() {
    let server = Server::healthy(vec![Msg::new(message(0, 500), "uidl-0")]);
    let env = Env::new();
    let named = Account::scripted(&server)
        .text("host", "localhost")
        .set("keep", true)
        .maildir(&env.maildir());
    env.write_config(&named.to_toml());
    let run = env.popfetch(&["-vv", "fetch"]);
    run.assert_code(0);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("resolved localhost in "))
        .unwrap_or_else(|| panic!("no lookup line:\n{}", run.stderr));
    assert!(line.contains(" ms"), "{line}");
    env.write_config(
        &Account::scripted(&server)
            .name("literal")
            .set("keep", true)
            .maildir(&env.maildir())
            .to_toml(),
    );
    let run = env.popfetch(&["-vv", "fetch"]);
    run.assert_code(0);
    assert!(!run.stderr.contains("resolved "), "{}", run.stderr);
}
