//! Issue 13, the fetch loop's share: a message far short of its LIST size is held (2b), a
//! connection lost mid-poll keeps what arrived whole (5), a server without UIDL that refuses
//! QUIT does not get its session delivered twice (6), and the status counts every delivery of
//! a poll that later failed (7). All against the scripted server, through the built binary.

use std::path::Path;

use crate::harness::{Env, Run, delivered_in, expected, message};
use crate::pop3_server::{Fault, Listing, Msg, PASSWORD, Script, Server, USER};

/// `n` plain messages of about `size` bytes with UIDLs `uidl-1` ... `uidl-n`.
fn msgs(n: usize, size: usize) -> Vec<Msg> {
    (1..=n)
        .map(|i| Msg::new(message(i, size), &format!("uidl-{i}")))
        .collect()
}

fn data(msgs: &[Msg]) -> Vec<Vec<u8>> {
    msgs.iter().map(|m| m.data.clone()).collect()
}

/// An environment with the one account `alice` on `server`, delivering into its Maildir.
fn env_for(server: &Server, extra: &str) -> Env {
    let env = Env::new();
    env.write_config(&format!(
        "[[account]]\nname = \"alice\"\nhost = \"127.0.0.1\"\nport = {}\n\
         user = \"{USER}\"\npassword = \"{PASSWORD}\"\nauth = \"user\"\n\
         allow_plaintext_auth = true\ntls = \"none\"\ntimeout = \"2s\"\n\
         deliver = {{ maildir = \"{}\" }}\n{extra}\n",
        server.port(),
        env.maildir().display()
    ));
    env
}

#[track_caller]
fn assert_no_panic(run: &Run) {
    assert!(
        !run.stderr.contains("panicked"),
        "popfetch panicked:\n{}",
        run.stderr
    );
}

/// What landed, sorted, against what should have: each exactly once.
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

/// Every message a DELE named is in the Maildir.
#[track_caller]
fn assert_deles_delivered(server: &Server, maildir: &Path) {
    let got = delivered_in(maildir);
    for d in server.log().deles {
        assert!(
            got.contains(&expected(&d)),
            "DELE sent for a message that is not in the Maildir"
        );
    }
}

/// `popfetch status --json`'s row of `alice`.
fn status(env: &Env) -> serde_json::Value {
    let run = env.popfetch(&["status", "--json"]);
    assert!([0, 1].contains(&run.code), "{}", run.stderr);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    doc["accounts"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["account"] == "alice"))
        .cloned()
        .unwrap_or_else(|| panic!("no row for alice: {}", run.stdout))
}

fn retr_answer_sizes(msgs: &[Msg]) -> Vec<usize> {
    msgs.iter().map(|m| m.retr_answer().len()).collect()
}

/// Item 5: the link drops at the same point of every session's mail stream, in the middle of a
/// pipelined flight. What arrived whole before the cut is committed, so each poll gets further,
/// and every message is delivered exactly once.
#[test]
fn issue13_5_a_connection_lost_mid_poll_keeps_what_arrived_whole_and_makes_progress() {
    let msgs = msgs(10, 4000);
    let sources = data(&msgs);
    let sizes = retr_answer_sizes(&msgs);
    // Three answers and half of the fourth fit before the cut.
    let cut = sizes[..3].iter().sum::<usize>() + sizes[3] / 2;
    let server = Server::start(
        msgs,
        Script {
            cut_retr_octets: Some(cut),
            ..Script::default()
        },
    );
    let env = env_for(&server, "");
    let mut before = 0;
    let mut polls = 0;
    while !server.remaining().is_empty() {
        polls += 1;
        assert!(polls <= 8, "no progress after {} polls", polls - 1);
        let run = env.popfetch(&["fetch"]);
        assert_no_panic(&run);
        let now = delivered_in(&env.maildir()).len();
        eprintln!("poll {polls}: {now} delivered; {}", run.stderr.trim());
        assert_deles_delivered(&server, &env.maildir());
        if now < sources.len() {
            run.assert_code(1);
            assert!(
                run.stderr.contains("closed the connection"),
                "{}",
                run.stderr
            );
            assert!(
                now > before,
                "poll {polls} made no progress ({now} delivered)"
            );
            // Item 7: the status counts the deliveries of the failed poll too, and so does
            // the summary line.
            assert_eq!(status(&env)["delivered_total"], now as u64, "poll {polls}");
            assert!(
                run.stdout
                    .contains(&format!("alice: {} new messages delivered", now - before)),
                "{}",
                run.stdout
            );
        }
        before = now;
    }
    assert_delivered_exactly(&env.maildir(), &sources);
    assert_eq!(status(&env)["delivered_total"], sources.len() as u64);
    assert!(polls >= 3, "the cut was meant to end the first polls");
}

/// Item 5, every kind of session error: a timeout, garbage instead of a status line, a cut
/// connection, all in message 4 of a pipelined flight. Messages 1 to 3 arrived whole: committed,
/// counted, and deleted at the next poll, which (the server healed) delivers the rest once.
#[test]
fn issue13_5_every_session_error_keeps_the_messages_that_arrived_whole() {
    let probe = Msg::new(message(4, 3000), "uidl-4");
    let faults = [
        ("a stall (timeout)", Fault::StallAfterStatus),
        (
            "garbage",
            Fault::Answer(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()),
        ),
        ("a cut", Fault::CutAt(probe.retr_answer().len() / 2)),
    ];
    for (what, fault) in faults {
        let mut msgs = msgs(6, 3000);
        msgs[3] = msgs[3].clone().fault(fault);
        let sources = data(&msgs);
        let server = Server::healthy(msgs);
        let env = env_for(&server, "");
        let run = env.popfetch(&["fetch"]);
        assert_no_panic(&run);
        run.assert_code(1);
        assert_delivered_exactly(&env.maildir(), &sources[..3]);
        assert_eq!(status(&env)["delivered_total"], 3, "{what}");
        assert!(
            run.stdout.contains("alice: 3 new messages delivered"),
            "{what}: {}",
            run.stdout
        );
        assert!(server.log().deles.is_empty(), "{what}");
        server.heal();
        let run = env.popfetch(&["fetch"]);
        run.assert_code(0);
        assert!(
            run.stdout.contains("alice: 3 new messages delivered")
                && run.stdout.contains("6 deleted"),
            "{what}: {}",
            run.stdout
        );
        assert_delivered_exactly(&env.maildir(), &sources);
        assert!(server.remaining().is_empty(), "{what}");
    }
}

/// Item 7: a poll that committed a full batch and then failed counts that batch in the status.
#[test]
fn issue13_7_status_counts_the_deliveries_of_a_poll_that_failed() {
    let msgs = msgs(70, 300);
    let sizes = retr_answer_sizes(&msgs);
    // More than one group commit (64 messages) arrives before the cut.
    let cut = sizes[..66].iter().sum::<usize>() + sizes[66] / 2;
    let server = Server::start(
        msgs,
        Script {
            cut_retr_octets: Some(cut),
            ..Script::default()
        },
    );
    let env = env_for(&server, "");
    let run = env.popfetch(&["fetch"]);
    assert_no_panic(&run);
    run.assert_code(1);
    let delivered = delivered_in(&env.maildir()).len();
    assert!(delivered >= 64, "{delivered} delivered\n{}", run.stderr);
    let st = status(&env);
    assert_eq!(st["last_result"], "failed");
    assert_eq!(st["delivered_total"], delivered as u64, "{st}");
    assert!(
        st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("closed the connection")),
        "{st}"
    );
    assert_deles_delivered(&server, &env.maildir());
}

/// Item 6: a server without UIDL answers QUIT with -ERR, so its deletions do not apply. The next
/// poll finds the same messages and recognises them by Message-ID and size: nothing is
/// delivered twice. A message without a Message-ID cannot be recognised and is delivered again
/// (the documented limit).
#[test]
fn issue13_6_without_uidl_a_refused_quit_does_not_deliver_the_session_again() {
    let mut msgs = msgs(3, 1000);
    let sources = data(&msgs);
    let script = Script {
        uidl: Listing::Refused,
        quit_err: true,
        ..Script::default()
    };
    let server = Server::start(msgs.clone(), script);
    let env = env_for(&server, "");
    let run = env.popfetch(&["fetch"]);
    assert_no_panic(&run);
    run.assert_code(1);
    assert!(run.stderr.contains("QUIT with -ERR"), "{}", run.stderr);
    assert_delivered_exactly(&env.maildir(), &sources);
    assert_eq!(server.remaining().len(), 3);

    let run = env.popfetch(&["fetch"]);
    assert_no_panic(&run);
    run.assert_code(1);
    assert_delivered_exactly(&env.maildir(), &sources);
    assert!(
        run.stdout.contains("alice: 0 new messages delivered")
            && run.stdout.contains("3 already delivered"),
        "{}",
        run.stdout
    );

    // Healed: the next poll deletes them, still without delivering them again.
    server.heal();
    server.set_script(Script {
        uidl: Listing::Refused,
        ..Script::default()
    });
    let run = env.popfetch(&["fetch"]);
    assert_no_panic(&run);
    run.assert_code(0);
    assert!(server.remaining().is_empty());
    assert_delivered_exactly(&env.maildir(), &sources);

    // Without a Message-ID there is nothing to recognise it by: delivered again.
    let bare = b"From: a@example.org\nSubject: no id\n\nbody\n".to_vec();
    msgs.clear();
    msgs.push(Msg::new(bare.clone(), "x"));
    server.set_messages(msgs);
    server.set_script(Script {
        uidl: Listing::Refused,
        quit_err: true,
        ..Script::default()
    });
    env.popfetch(&["fetch"]).assert_code(1);
    env.popfetch(&["fetch"]).assert_code(1);
    let copies = delivered_in(&env.maildir())
        .iter()
        .filter(|m| **m == expected(&bare))
        .count();
    assert_eq!(
        copies, 2,
        "the documented limit: no Message-ID, no recognition"
    );
}

/// Item 2b: a message listed at 100,000 octets that arrives with 2 KB is not committed: held,
/// not delivered, not deleted, on this and the next poll, reported with both sizes; `popfetch
/// retry` lets the next poll try it again.
#[test]
fn issue13_2_a_message_far_short_of_its_list_size_is_held_with_both_sizes() {
    let mut msgs = msgs(3, 2000);
    msgs[1] = msgs[1].clone().listed(100_000);
    let received = msgs[1].size();
    let sources = data(&msgs);
    let server = Server::healthy(msgs);
    let env = env_for(&server, "");
    let run = env.popfetch(&["fetch"]);
    assert_no_panic(&run);
    run.assert_code(1);
    eprintln!("{}\n{}", run.stdout, run.stderr);
    assert_delivered_exactly(&env.maildir(), &[sources[0].clone(), sources[2].clone()]);
    assert_eq!(server.remaining(), vec![sources[1].clone()]);
    assert_deles_delivered(&server, &env.maildir());
    let both = |text: &str| text.contains("100000") && text.contains(&received.to_string());
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("uidl-2") && l.contains("LIST size") && both(l)),
        "log names both sizes:\n{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("alice: 2 new messages delivered")
            && run.stdout.lines().any(|l| both(l) && l.contains("uidl-2")),
        "summary names both sizes:\n{}",
        run.stdout
    );
    let st = status(&env);
    let short = &st["held_short"][0];
    assert_eq!(short["uidl"], "uidl-2", "{st}");
    assert_eq!(short["listed"], 100_000u64, "{st}");
    assert_eq!(short["received"], received, "{st}");

    // The next poll leaves it alone: not fetched, not deleted.
    let retrs = server.log().commands("RETR").len();
    let run = env.popfetch(&["fetch"]);
    assert_no_panic(&run);
    assert!(run.stdout.contains("1 held"), "{}", run.stdout);
    assert_eq!(server.log().commands("RETR").len(), retrs);
    assert_eq!(server.remaining(), vec![sources[1].clone()]);
    assert_eq!(delivered_in(&env.maildir()).len(), 2);
    assert_eq!(status(&env)["held_short"][0]["uidl"], "uidl-2");

    // `popfetch retry`, and the server now sends it whole (or lists it truly): delivered.
    env.popfetch(&["retry", "alice"]).assert_code(0);
    server.heal();
    let run = env.popfetch(&["fetch"]);
    assert_no_panic(&run);
    run.assert_code(0);
    assert_delivered_exactly(&env.maildir(), &sources);
    assert!(server.remaining().is_empty());
    assert!(
        status(&env)["held_short"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "nothing held any more"
    );
}

/// Item 2b, the other side: honest servers never trip the rule. A size counted with LF line
/// endings, a size over-reported a little, and a small message over-reported a lot all deliver.
#[test]
fn issue13_2_honest_list_sizes_never_hold_a_message() {
    let mut msgs = msgs(4, 20_000);
    let lf = msgs[0].data.len() as u64;
    msgs[0] = msgs[0].clone().listed(lf);
    let s = msgs[1].size();
    msgs[1] = msgs[1].clone().listed(s + s / 3);
    msgs[2] = Msg::new(message(3, 500), "uidl-3").listed(30_000);
    let s = msgs[3].size();
    msgs[3] = msgs[3].clone().listed(s + 40_000);
    let sources = data(&msgs);
    let server = Server::healthy(msgs);
    let env = env_for(&server, "");
    let run = env.popfetch(&["fetch"]);
    assert_no_panic(&run);
    run.assert_code(0);
    assert_delivered_exactly(&env.maildir(), &sources);
    assert!(server.remaining().is_empty());
}
