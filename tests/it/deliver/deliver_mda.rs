//! The MDA backend against the real programs a user would point it at: procmail, maildrop and
//! dovecot-lda (a full round trip: delivered into Dovecot's store, fetched again over POP3).
//! Messages must arrive byte-exact, and a hostile From header reaches the MDA only as data.

use std::path::Path;

use crate::dovecot::Dovecot;
use crate::harness::{Env, expected, message, strip_received};
use crate::postfix::{
    DOVECOT_LDA, dovecot_config_file, maildir_messages, maildrop_filter, procmail_rc,
};
use crate::support::config::Account;

/// Written to by a shell if a message's header ever reached one.
const PWNED: &str = "/tmp/popfetch-pwned-marker";

fn messages() -> Vec<Vec<u8>> {
    vec![
        message(1, 4000),
        b"Return-Path: <bounce@example.org>\nFrom: b@example.org\nSubject: dots\n\n.\n..\n.leading\n".to_vec(),
        "From: c@example.org\nSubject: 8bit\n\nGr\u{fc}\u{df}e \u{1f600}\n".as_bytes().to_vec(),
        format!(
            "From: \"$(touch {PWNED}); `touch {PWNED}`\" <x'\"$(id)\"@example.org>\n\
             Reply-To: a@b; touch {PWNED} | sh\n\
             Subject: $(touch {PWNED})\n\t`rm -rf /tmp/nothing`\n\n\
             $(touch {PWNED}) ; && || > < 'quoted' \"double\"\n"
        )
        .into_bytes(),
    ]
}

fn setup() -> (Dovecot, Env, Vec<Vec<u8>>) {
    let _ = std::fs::remove_file(PWNED);
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let msgs = messages();
    d.deliver_many("alice", msgs.clone());
    (d, Env::new(), msgs)
}

fn config(d: &Dovecot, env: &Env, mda: &[String]) {
    let account = Account::dovecot(d).set("deliver", format_args!("{{ mda = {mda:?} }}"));
    env.write_config(&account.to_toml());
}

#[track_caller]
fn assert_same(maildir: &Path, sources: &[Vec<u8>]) {
    let mut got: Vec<Vec<u8>> = maildir_messages(maildir)
        .iter()
        .map(|m| strip_received(m))
        .collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = sources.iter().map(|m| expected(m)).collect();
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
    assert!(!Path::new(PWNED).exists(), "a header reached a shell");
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn procmail_delivers_byte_exact() {
    crate::peers::require_peers!("procmail", "dovecot");
    let (d, env, msgs) = setup();
    let rc = procmail_rc(env.path());
    config(
        &d,
        &env,
        &s(&[
            "/usr/bin/procmail",
            "-f",
            "{from}",
            "-m",
            rc.to_str().unwrap(),
        ]),
    );
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("4 new messages delivered"),
        "{}",
        run.stdout
    );
    assert_same(&env.path().join("Maildir"), &msgs);
    assert_eq!(d.message_count("alice"), 0);
}

#[test]
fn maildrop_delivers_byte_exact() {
    crate::peers::require_peers!("maildrop", "dovecot");
    let (d, env, msgs) = setup();
    let filter = maildrop_filter(env.path());
    config(
        &d,
        &env,
        &s(&[
            "/usr/bin/maildrop",
            "-f",
            "{from}",
            filter.to_str().unwrap(),
        ]),
    );
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert_same(&env.path().join("Maildir"), &msgs);
    assert_eq!(d.message_count("alice"), 0);
}

#[test]
fn dovecot_lda_round_trip() {
    crate::peers::require_peers!("dovecot");
    let (d, env, msgs) = setup();
    d.add_user("bob", "pw");
    let conf = dovecot_config_file(&d);
    config(
        &d,
        &env,
        &s(&[
            DOVECOT_LDA,
            "-c",
            conf.to_str().unwrap(),
            "-d",
            "bob",
            "-f",
            "{from}",
        ]),
    );
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(d.message_count("alice"), 0);
    assert_eq!(d.message_count("bob"), msgs.len());
    // Fetch bob's mailbox back over POP3: each message carries one Received line per trip.
    let back = Env::new();
    back.write_config(&format!(
        "[[account]]\nname = \"bob\"\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"\n\
         user = \"bob\"\npassword = \"pw\"\ndeliver = {{ maildir = \"{}\" }}\n",
        d.pop3s_port(),
        d.ca_file().display(),
        back.maildir().display()
    ));
    back.popfetch(&["fetch"]).assert_code(0);
    let mut got: Vec<Vec<u8>> = maildir_messages(&back.maildir())
        .iter()
        .map(|m| strip_received(&strip_received(m)))
        .collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| expected(m)).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(!Path::new(PWNED).exists());
}

#[test]
fn hostile_from_reaches_a_shell_mda_only_as_data() {
    crate::peers::require_peers!("dovecot");
    let (d, env, msgs) = setup();
    let out = env.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // The user asked for a shell; popfetch hands it {from} and the variables, never header text.
    let script = format!(
        "f=$(mktemp {0}/m.XXXXXX); cat > \"$f\"; printf '%s\\n%s\\n' \"$1\" \"$POPFETCH_FROM\" > \"$f.from\"",
        out.display()
    );
    config(&d, &env, &s(&["sh", "-c", &script, "sh", "{from}"]));
    env.popfetch(&["fetch"]).assert_code(0);
    let mut froms: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".from"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    froms.sort();
    // The hostile From yields no address at all; the others their plain address.
    assert_eq!(
        froms,
        [
            "\n\n",
            "bounce@example.org\nbounce@example.org\n",
            "c@example.org\nc@example.org\n",
            "sender@example.org\nsender@example.org\n"
        ]
    );
    let mut got: Vec<Vec<u8>> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".from"))
        .map(|e| strip_received(&std::fs::read(e.path()).unwrap()))
        .collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| expected(m)).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(!Path::new(PWNED).exists(), "a header reached a shell");
}
