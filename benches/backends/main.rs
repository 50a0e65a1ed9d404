//! The same 1,000 × 4 KB messages from the same Dovecot through every backend (LMTP into that
//! Dovecot's own LMTP service among them), one after the
//! other in one run: each must arrive complete, and the wall time of each is printed
//! (`cargo bench --bench backends`; `POPFETCH_BENCH_ONLY=NAME` for some). Timings are reported, never
//! asserted.

// The test fixtures, shared with the integration tests (tests/it); this binary uses a part.
#[allow(dead_code)]
#[path = "../../tests/it/support/dovecot.rs"]
mod dovecot;
#[allow(dead_code)]
#[path = "../../tests/it/support/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../../tests/it/support/postfix.rs"]
mod postfix;

use std::time::Instant;

use crate::dovecot::Dovecot;
use crate::harness::{Env, message};
use crate::postfix::{
    DOVECOT_LDA, Postfix, dovecot_config_file, maildir_count, maildrop_filter, procmail_rc,
};

const N: usize = 1000;

fn main() {
    every_backend_delivers_a_thousand_messages();
}

/// The benchmark (`harness = false`: `cargo bench --bench backends`).
fn every_backend_delivers_a_thousand_messages() {
    let d = Dovecot::start_with(dovecot::Options {
        lmtp: true,
        ..dovecot::Options::default()
    });
    d.add_user("alice", "pw");
    d.add_user("lda", "pw");
    d.add_user("lmtp", "pw");
    let msgs: Vec<Vec<u8>> = (0..N).map(|i| message(i, 4096)).collect();
    let p = Postfix::start();
    let env = Env::new();
    let root = env.path();
    let conf = dovecot_config_file(&d);
    let mbox = root.join("mbox");
    let backends: Vec<(&str, String)> = vec![
        (
            "maildir",
            format!("{{ maildir = \"{}\" }}", root.join("Maildir").display()),
        ),
        ("mbox", format!("{{ mbox = \"{}\" }}", mbox.display())),
        (
            "mda procmail",
            format!(
                "{{ mda = [\"/usr/bin/procmail\", \"-m\", {:?}] }}",
                procmail_rc(&root.join("pm")).display().to_string()
            ),
        ),
        (
            "mda maildrop",
            format!(
                "{{ mda = [\"/usr/bin/maildrop\", {:?}] }}",
                maildrop_filter(&root.join("md")).display().to_string()
            ),
        ),
        (
            "mda dovecot-lda",
            format!(
                "{{ mda = [{DOVECOT_LDA:?}, \"-c\", {:?}, \"-d\", \"lda\"] }}",
                conf.display().to_string()
            ),
        ),
        (
            "lmtp dovecot",
            format!(
                "{{ lmtp = {{ socket = {:?}, to = [\"lmtp\"] }} }}",
                d.lmtp_socket().display().to_string()
            ),
        ),
        (
            "smtp postfix",
            format!(
                "{{ smtp = {{ host = \"127.0.0.1\", port = {}, to = [\"alice@test.example\"] }} }}",
                p.port()
            ),
        ),
    ];
    // `POPFETCH_BENCH_ONLY=lmtp` runs the backends whose name contains it, and checks only those.
    let only = std::env::var("POPFETCH_BENCH_ONLY").unwrap_or_default();
    for (name, deliver) in &backends {
        if !name.contains(only.as_str()) {
            continue;
        }
        d.deliver_many("alice", msgs.clone());
        env.write_config(&format!(
            "[[account]]\nname = \"alice\"\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"\n\
             user = \"alice\"\npassword = \"pw\"\ndeliver = {deliver}\n",
            d.pop3s_port(),
            d.ca_file().display()
        ));
        let t = Instant::now();
        let run = env.popfetch(&["fetch"]);
        let secs = t.elapsed().as_secs_f64();
        run.assert_code(0);
        assert!(
            run.stdout.contains(&format!("{N} new messages delivered")),
            "{name}: {}",
            run.stdout
        );
        assert_eq!(d.message_count("alice"), 0, "{name}");
        eprintln!("measure: {N} x 4 KB through {name}: {secs:.2} s");
    }
    if !only.is_empty() {
        return;
    }
    assert_eq!(maildir_count(&root.join("Maildir")), N);
    let mbox_text = std::fs::read(&mbox).unwrap();
    assert_eq!(
        mbox_text
            .split(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"From "))
            .count(),
        N
    );
    assert_eq!(maildir_count(&root.join("pm/Maildir")), N);
    assert_eq!(maildir_count(&root.join("md/Maildir")), N);
    assert_eq!(d.message_count("lda"), N);
    assert_eq!(d.message_count("lmtp"), N);
    assert_eq!(p.wait_for(N).len(), N);
}
