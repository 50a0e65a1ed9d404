//! Crash tests: `popfetch fetch` killed with SIGKILL at random instants, run again, repeated.
//! With Maildir delivery every message must end up delivered exactly once; with an MDA, nothing
//! may be lost and each kill may duplicate at most the message in flight. CI runs a few kills;
//! `POPFETCH_CRASH_KILLS=200` runs the long version.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::dovecot::Dovecot;
use crate::harness::{Env, delivered_in, message};

fn kills() -> usize {
    std::env::var("POPFETCH_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12)
}

/// A small pseudo-random sequence, different each run, printed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("POPFETCH_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("crash test seed: POPFETCH_CRASH_SEED={seed}");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Subjects ("Subject: message N") of what landed, with multiplicity.
fn subjects(msgs: &[Vec<u8>]) -> Vec<String> {
    let mut v: Vec<String> = msgs
        .iter()
        .map(|m| {
            String::from_utf8_lossy(m)
                .lines()
                .find(|l| l.starts_with("Subject: "))
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    v.sort();
    v
}

/// Runs fetch, kills it after a random delay (or lets it finish), until a run completes.
fn crash_until_done(env: &Env, rng: &mut Rng, kills: usize) -> usize {
    let mut done_kills = 0;
    loop {
        let mut child = env
            .command(&["fetch"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if done_kills < kills {
            let delay = Duration::from_micros(rng.below(250_000));
            let t = Instant::now();
            while t.elapsed() < delay {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                done_kills += 1;
                continue;
            }
        }
        let st = child.wait().unwrap();
        if st.success() {
            return done_kills;
        }
    }
}

/// The account `alice` on `d` over implicit TLS, delivering into `env`'s Maildir, with `extra`
/// lines.
fn maildir_account(d: &Dovecot, env: &Env, extra: &str) {
    env.write_config(&format!(
        "[[account]]\nname = \"alice\"\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"\n\
         user = \"alice\"\npassword = \"pw\"\n{extra}deliver = {{ maildir = \"{}\" }}\n",
        d.pop3s_port(),
        d.ca_file().display(),
        env.maildir().display()
    ));
}

/// Rounds of 300 fresh messages, each fetched under kills until a run completes, until
/// [`kills`] kills in all; `after_round` checks the server after each with the messages
/// delivered so far. Returns the kills and the messages.
fn kill_rounds(d: &Dovecot, env: &Env, after_round: impl Fn(usize)) -> (usize, usize) {
    let mut rng = Rng::new();
    let (mut killed, mut total) = (0, 0);
    while killed < kills() {
        let round = 300;
        d.deliver_many(
            "alice",
            (total..total + round)
                .map(|i| message(i, 1500))
                .collect::<Vec<_>>(),
        );
        total += round;
        killed += crash_until_done(env, &mut rng, kills() - killed);
        after_round(total);
    }
    (killed, total)
}

#[test]
fn sigkill_at_random_instants_maildir_exactly_once() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let env = Env::new();
    maildir_account(&d, &env, "");
    let (killed, total) = kill_rounds(&d, &env, |_| assert_eq!(d.message_count("alice"), 0));
    let got = subjects(&delivered_in(&env.maildir()));
    let mut dedup = got.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), got.len(), "duplicates after {killed} kills");
    assert_eq!(got.len(), total, "lost messages after {killed} kills");
    assert_eq!(
        std::fs::read_dir(env.maildir().join("tmp"))
            .unwrap()
            .count(),
        0,
        "tmp/ left over"
    );
    eprintln!("crash test: maildir, {killed} kills, {total} messages exactly once");
}

#[test]
fn sigkill_at_random_instants_mda_loses_nothing() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let total = 200;
    d.deliver_many(
        "alice",
        (0..total).map(|i| message(i, 1500)).collect::<Vec<_>>(),
    );
    let env = Env::new();
    let out = env.maildir().join("new");
    let tmp = env.maildir().join("tmp");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    // An MDA that writes the message under a temp name and renames it: what it took is complete.
    let script = format!(
        "f=$(mktemp {}/m.XXXXXX) && cat > \"$f\" && mv \"$f\" {}/",
        tmp.display(),
        out.display()
    );
    env.write_config(&format!(
        "[[account]]\nname = \"alice\"\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"\n\
         user = \"alice\"\npassword = \"pw\"\ndeliver = {{ mda = [\"sh\", \"-c\", {script:?}] }}\n",
        d.pop3s_port(),
        d.ca_file().display()
    ));
    let mut rng = Rng::new();
    let killed = crash_until_done(&env, &mut rng, kills());
    env.popfetch(&["fetch"]).assert_code(0);
    let mut got = subjects(&delivered_in(&env.maildir()));
    let n = got.len();
    got.dedup();
    assert_eq!(got.len(), total, "lost messages after {killed} kills");
    assert!(
        n - total <= killed,
        "{} duplicates after {killed} kills",
        n - total
    );
    assert_eq!(d.message_count("alice"), 0);
    eprintln!("crash test: mda, {killed} kills, {} duplicates", n - total);
}

/// Keep mode, where the journal is compacted at the end of polls: killed at random instants,
/// every message still lands exactly once, the mailbox is left whole, and a last poll finds
/// nothing new. Each round's `P` records outgrow the slack, so most rounds end compacting.
#[test]
fn sigkill_at_random_instants_keep_mode_with_compaction_exactly_once() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let env = Env::new();
    maildir_account(&d, &env, "keep = true\n");
    let (killed, total) = kill_rounds(&d, &env, |total| {
        assert_eq!(d.message_count("alice"), total, "keep mode deletes nothing");
    });
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("alice: 0 new messages"),
        "{}",
        run.stdout
    );
    let got = subjects(&delivered_in(&env.maildir()));
    let mut dedup = got.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), got.len(), "duplicates after {killed} kills");
    assert_eq!(got.len(), total, "lost messages after {killed} kills");
    let journal = std::fs::read_dir(env.path().join("state"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "uidls"))
        .unwrap();
    let text = std::fs::read_to_string(&journal).unwrap();
    let (recorded, _) = super::compaction::deliveries(&text);
    assert_eq!(
        recorded.len(),
        total,
        "one delivery recorded per kept message"
    );
    eprintln!("crash test: keep mode, {killed} kills, {total} messages exactly once");
}
