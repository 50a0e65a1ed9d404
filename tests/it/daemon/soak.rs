//! The daemon with 20 accounts on one Dovecot while mail keeps arriving: every message ends up
//! delivered exactly once, and the daemon's peak RSS and CPU time are printed. CI runs it for a
//! short while; `POPFETCH_SOAK_SECS=600 cargo test --release --test it soak -- --nocapture` is
//! the ten-minute run.

use std::time::{Duration, Instant};

use crate::dovecot::Dovecot;
use crate::harness::{Env, delivered_in, message};

const ACCOUNTS: usize = 20;

fn proc_field(pid: u32, file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
}

/// User + system CPU seconds of a live process.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn twenty_accounts_with_mail_arriving() {
    crate::peers::require_peers!("dovecot");
    let secs: u64 = std::env::var("POPFETCH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let d = Dovecot::start();
    let env = Env::new();
    let mut config =
        String::from("log_target = \"stderr\"\ninterval = \"5s\"\nshutdown_timeout = \"20s\"\n");
    for i in 0..ACCOUNTS {
        d.add_user(&format!("user{i}"), "pw");
        config.push_str(&format!(
            "[[account]]\nname = \"acct{i}\"\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"\n\
             user = \"user{i}\"\npassword = \"pw\"\ndeliver = {{ maildir = \"{}\" }}\n",
            d.pop3s_port(),
            d.ca_file().display(),
            env.path().join(format!("mail{i}")).display()
        ));
    }
    env.write_config(&config);
    let log = env.path().join("daemon.log");
    let mut child = env
        .command(&["daemon"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();

    // Mail arrives all along: a message every 50 ms to one account after another.
    let start = Instant::now();
    let mut sent = 0usize;
    while start.elapsed() < Duration::from_secs(secs) {
        let i = sent % ACCOUNTS;
        d.deliver(
            &format!("user{i}"),
            &message(sent, 3000 + (sent % 7) * 1000),
        );
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(7)); // one more interval to collect the last ones
    let rss = proc_field(pid, "status", "VmHWM:").unwrap();
    let cpu = cpu_secs(pid);
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(25);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "daemon did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    let polls = text.lines().filter(|l| l.contains("poll done")).count();

    // Whatever the last interval did not collect, a final fetch does; then each message is
    // delivered exactly once.
    env.popfetch(&["fetch"]).assert_code(0);
    let mut subjects = Vec::new();
    for i in 0..ACCOUNTS {
        for m in delivered_in(&env.path().join(format!("mail{i}"))) {
            subjects.push(m.split(|&b| b == b'\n').nth(2).unwrap().to_vec());
        }
        assert_eq!(d.message_count(&format!("user{i}")), 0);
    }
    let total = subjects.len();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), total, "duplicates");
    assert_eq!(total, sent, "every message delivered");
    assert!(!text.contains("poll failed"), "{text}");
    eprintln!(
        "measure: daemon, {ACCOUNTS} accounts, {secs} s of arriving mail: {sent} messages delivered, \
         {polls} polls, peak RSS {rss}, CPU {cpu:.2} s"
    );
}
