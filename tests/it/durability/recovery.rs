//! What a crashed run leaves behind is settled at the next poll, against a real Dovecot: a
//! delivery that reached the Maildir is not repeated, one that did not is redone.

use crate::dovecot::Dovecot;
use crate::harness::{Env, expected, message};

#[test]
fn pending_deliveries_are_settled_without_duplicates() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let m1 = message(1, 1000);
    let m2 = message(2, 1000);
    let u1 = d.deliver("alice", &m1);
    let u2 = d.deliver("alice", &m2);
    let env = Env::new();
    env.write_config(&format!(
        "[[account]]\nname = \"alice\"\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"\n\
         user = \"alice\"\npassword = \"pw\"\ndeliver = {{ maildir = \"{}\" }}\n",
        d.pop3s_port(),
        d.ca_file().display(),
        env.maildir().display()
    ));

    // As a crash would leave them: m1 committed to new/ but only its P record durable; m2's P
    // record durable and its file still in tmp/.
    let state = env.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(env.maildir().join(sub)).unwrap();
    }
    let mut committed =
        b"Received: from localhost by test with POP3S (popfetch)\n\t(account alice); x\n".to_vec();
    committed.extend_from_slice(&m1);
    std::fs::write(env.maildir().join("new/k1.host"), &committed).unwrap();
    std::fs::write(env.maildir().join("tmp/k2.host"), b"half a mess").unwrap();
    std::fs::write(
        state.join("alice.uidls"),
        format!("popfetch-uidls 1\nP {u1} k1.host\nP {u2} k2.host\n"),
    )
    .unwrap();

    let run = env.popfetch(&["-v", "fetch"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("the interrupted delivery of message")
            && run.stderr.contains("was complete"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("will be redone"), "{}", run.stderr);
    assert!(
        run.stdout.contains("1 new message delivered"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("2 deleted"), "{}", run.stdout);
    let mut got = env.delivered();
    got.sort();
    assert_eq!(got, vec![expected(&m1), expected(&m2)], "each exactly once");
    assert_eq!(
        std::fs::read_dir(env.maildir().join("tmp"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(d.message_count("alice"), 0);
}

#[test]
fn a_corrupt_state_file_stops_the_account_and_deletes_nothing() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    d.deliver("alice", &message(1, 100));
    let env = Env::new();
    env.write_config(&format!(
        "[[account]]\nname = \"alice\"\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"\n\
         user = \"alice\"\npassword = \"pw\"\nkeep = true\ndeliver = {{ maildir = \"{}\" }}\n",
        d.pop3s_port(),
        d.ca_file().display(),
        env.maildir().display()
    ));
    let state = env.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("alice.uidls"),
        "popfetch-uidls 1\nD ok\n???\nD later\n",
    )
    .unwrap();
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("is corrupt at line 3"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("restore it from a backup"),
        "{}",
        run.stderr
    );
    assert!(env.delivered().is_empty(), "no silent refetch");
    assert_eq!(d.message_count("alice"), 1);
}
