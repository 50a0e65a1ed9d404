//! Issue 13, items 1 and 3: the MDA's process group and its file descriptions, through the built
//! binary against the scripted server.
//!
//! An MDA that times out is ended with its whole process group, so a pipeline it started cannot
//! live on and read another message; every MDA reads its own message from its own open file
//! description; the outcome of a delivery is the MDA's exit status, never how long a background
//! child keeps its stderr open.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{Env, Run, expected, message, run_bounded, strip_received};
use crate::pop3_server::{Msg, PASSWORD, Server, USER};

/// The longest one `popfetch fetch` here may take before the test calls it a hang.
const DEADLINE: Duration = Duration::from_secs(90);

/// One account on `server` delivering through `mda`; `name` is also the marker the MDA's
/// processes carry in their environment (`POPFETCH_ACCOUNT`), to find survivors by.
fn env_with_mda(server: &Server, name: &str, mda: &[&str], mda_timeout: &str) -> Env {
    let env = Env::new();
    env.write_config(&format!(
        "[[account]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\n\
         user = \"{USER}\"\npassword = \"{PASSWORD}\"\nauth = \"user\"\n\
         allow_plaintext_auth = true\ntls = \"none\"\ntimeout = \"5s\"\n\
         mda_timeout = \"{mda_timeout}\"\ndeliver = {{ mda = {mda:?} }}\n",
        server.port(),
    ));
    env
}

/// `popfetch fetch`, killed with its process group (and the test failed) if it has not ended
/// within [`DEADLINE`].
fn fetch(env: &Env) -> Run {
    run_bounded(env.command(&["fetch"]), DEADLINE)
}

/// The processes (pid, command name) whose environment holds `POPFETCH_ACCOUNT=<marker>`.
fn processes_marked(marker: &str) -> Vec<(i32, String)> {
    let needle = format!("POPFETCH_ACCOUNT={marker}\0");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            // A zombie is dead already: it holds no file and reads nothing.
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            if state != Some("Z") {
                found.push((pid, comm.trim().to_string()));
            }
        }
    }
    found
}

/// Kills what a failing run left behind, so a red test leaves no processes.
fn kill_all(procs: &[(i32, String)]) {
    for (pid, _) in procs {
        // SAFETY: kill(2) on processes this test's MDA started (found by their marker).
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
}

/// A unique account name, also the environment marker of this test's MDA processes.
fn marker(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// Files in `dir` whose names start with `prefix`, with their contents.
fn files(dir: &Path, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The first MDA runs a pipeline that outlives its shell: `{ sleep; cat; } | cat`. It is killed
/// at `mda_timeout` (2 s), a second before the pipeline reads (3 s); the pipeline must die with
/// it. Every later MDA copies its stdin to `out.$$` once that pipeline has read or is dead
/// (bounded). Before the fix the pipeline read message 2 through the shared spool offset,
/// message 2's MDA got 0 bytes, exited 0, and message 2 was recorded delivered and deleted:
/// lost.
#[test]
fn issue13_1_mda_timeout_ends_the_whole_process_group() {
    let msgs: Vec<Msg> = (1..=3)
        .map(|i| Msg::new(message(i, 3000), &format!("uidl-{i}")))
        .collect();
    let server = Server::healthy(msgs.clone());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // `left.pid` is the pid of the pipeline's left side (the parent of the `sh` in it).
    let script = format!(
        "if mkdir {d}/slow 2>/dev/null; then \
           {{ sh -c 'echo $PPID' > {d}/left.pid; sleep 3; cat; sleep 30; }} | cat > {d}/orphan.$$; \
         else \
           i=0; \
           while [ $i -lt 40 ] && ! [ -s {d}/orphan.* ] 2>/dev/null \
             && kill -0 \"$(cat {d}/left.pid)\" 2>/dev/null; do sleep 0.1; i=$((i+1)); done; \
           cat > {d}/out.$$; \
         fi"
    );
    let name = marker("i13-1");
    let env = env_with_mda(&server, &name, &["/bin/sh", "-c", &script], "2s");

    let first = fetch(&env);
    let survivors = processes_marked(&name);
    kill_all(&survivors);

    // Nothing the killed pipeline held may have been read from another message.
    let orphans = files(dir.path(), "orphan.");
    assert!(
        orphans.iter().all(|(_, data)| data.is_empty()),
        "the timed-out MDA's pipeline read a message: {:?}\n{}",
        orphans
            .iter()
            .map(|(n, d)| (n, String::from_utf8_lossy(d).into_owned()))
            .collect::<Vec<_>>(),
        first.stderr
    );
    assert!(
        survivors.is_empty(),
        "processes of the timed-out MDA's group survived popfetch: {survivors:?}\n{}",
        first.stderr
    );
    // The timed-out message is transient: left on the server, not deleted.
    let log = server.log();
    assert!(
        !log.deles.contains(&msgs[0].data),
        "the timed-out message was deleted\n{}",
        first.stderr
    );
    assert!(server.remaining().contains(&msgs[0].data));
    assert!(
        first.stdout.contains("did not finish within"),
        "{}",
        first.stdout
    );

    // Every message that was deleted is in an output file byte for byte, and no output is
    // empty or foreign.
    let outs: Vec<Vec<u8>> = files(dir.path(), "out.")
        .into_iter()
        .map(|(_, data)| data)
        .collect();
    for out in &outs {
        assert!(
            !out.is_empty(),
            "an MDA got an empty message and exited 0\n{}",
            first.stderr
        );
    }
    let got: Vec<Vec<u8>> = outs.iter().map(|o| strip_received(o)).collect();
    for deleted in &log.deles {
        assert!(
            got.contains(&expected(deleted)),
            "a deleted message is not in any output: {}\n{}",
            String::from_utf8_lossy(&deleted[..80]),
            first.stderr
        );
    }
    assert_eq!(log.deles.len(), 2, "{}", first.stderr);

    // The next poll delivers message 1 (the slow path ran once), exactly once overall.
    fetch(&env).assert_code(0);
    kill_all(&processes_marked(&name));
    let mut got: Vec<Vec<u8>> = files(dir.path(), "out.")
        .into_iter()
        .map(|(_, data)| strip_received(&data))
        .collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| expected(&m.data)).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(server.remaining().is_empty());
}

/// `sh -c 'cat >> f; sleep 15 &'` exits 0 at once while `sleep` keeps its stderr open. Before
/// the fix the wait for stderr ran into `mda_timeout`, the delivery counted as timed out, and
/// every poll delivered the message again.
#[test]
fn issue13_3_mda_exit_zero_counts_even_when_a_child_holds_stderr() {
    let msgs = vec![Msg::new(message(1, 2000), "uidl-1")];
    let server = Server::healthy(msgs.clone());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    let script = format!("cat >> {}; sleep 15 &", f.display());
    let name = marker("i13-3");
    let env = env_with_mda(&server, &name, &["/bin/sh", "-c", &script], "10s");

    let first = fetch(&env);
    let second = fetch(&env);
    kill_all(&processes_marked(&name));
    first.assert_code(0);
    assert!(
        first.stdout.contains("1 new message delivered"),
        "{}\n{}",
        first.stdout,
        first.stderr
    );
    assert!(
        !first.stderr.contains("did not finish within"),
        "{}",
        first.stderr
    );
    second.assert_code(0);
    let data = std::fs::read(&f).unwrap();
    assert_eq!(
        strip_received(&data),
        expected(&msgs[0].data),
        "delivered more than once or not whole"
    );
    assert!(server.remaining().is_empty());
}

/// The exit status decides: an MDA that exits 0 without reading its stdin has delivered (its
/// choice, as a filter that discards a message), and one that exits 75 has not.
#[test]
fn issue13_1_mda_exit_status_alone_decides() {
    let msgs = vec![Msg::new(message(1, 200_000), "uidl-1")];
    let server = Server::healthy(msgs.clone());
    let name = marker("i13-1-true");
    let env = env_with_mda(&server, &name, &["/bin/true"], "10s");
    fetch(&env).assert_code(0);
    assert!(server.remaining().is_empty());

    let server = Server::healthy(msgs.clone());
    let name = marker("i13-1-tempfail");
    let env = env_with_mda(
        &server,
        &name,
        &["/bin/sh", "-c", "cat > /dev/null; exit 75"],
        "10s",
    );
    let run = fetch(&env);
    assert!(
        run.stdout.contains("exited with 75"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(server.remaining(), vec![msgs[0].data.clone()]);
    assert!(server.log().deles.is_empty());
}

/// An MDA that exits 0 may leave work running (here a reader of its stdin, late). What it left
/// may read only its own message: every MDA gets its own file, so a later message is never
/// behind a shared offset. Before the fix the leftover read message 2 from the reused spool and
/// message 2's MDA got 0 bytes, exited 0, and message 2 was deleted: lost.
#[test]
fn issue13_1_leftovers_of_an_mda_never_read_another_message() {
    let msgs: Vec<Msg> = (1..=3)
        .map(|i| Msg::new(message(i, 3000), &format!("uidl-{i}")))
        .collect();
    let server = Server::healthy(msgs.clone());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // The leftover reads 0.5 s after its MDA exits; the next MDA reads 1 s after it starts.
    // (A background list's stdin is /dev/null unless redirected: fd 3 carries the real one.)
    let script = format!(
        "exec 3<&0; sleep 1; cat > {d}/out.$$; \
         {{ sleep 0.5; cat <&3 > {d}/leftover.$$; }} 2>/dev/null &"
    );
    let name = marker("i13-1-leftover");
    let env = env_with_mda(&server, &name, &["/bin/sh", "-c", &script], "20s");
    let run = fetch(&env);
    // Let the last leftover read (bounded), then end what is left.
    let until = Instant::now() + Duration::from_secs(5);
    while !processes_marked(&name).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_all(&processes_marked(&name));
    run.assert_code(0);
    let leftovers = files(dir.path(), "leftover.");
    assert_eq!(leftovers.len(), 3, "{}", run.stderr);
    for (name, data) in &leftovers {
        assert!(
            data.is_empty(),
            "{name} read a message: {}",
            String::from_utf8_lossy(&data[..data.len().min(300)])
        );
    }
    let mut got: Vec<Vec<u8>> = files(dir.path(), "out.")
        .into_iter()
        .map(|(_, data)| strip_received(&data))
        .collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| expected(&m.data)).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(server.remaining().is_empty());
}

/// The processes whose command line holds the argument `arg`, with their command names.
fn processes_with_arg(arg: &str) -> Vec<(i32, String)> {
    let needle = format!("\0{arg}\0");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            found.push((pid, comm.trim().to_string()));
        }
    }
    found
}

/// A `password_command` or `oauth2_token_command` (the TOML key `key`) that runs a pipeline
/// and never answers: after the account's `timeout`, the fetch fails saying so and no process
/// of the pipeline is left. Before the fix only the shell was killed.
fn command_timeout_ends_its_group(key: &str, auth: &str) {
    let server = Server::healthy(vec![Msg::new(message(1, 500), "uidl-1")]);
    // A duration no other process uses, to find the pipeline's `sleep` by. Its stderr must not
    // hold popfetch's (a password command's stderr is popfetch's), or this test would wait.
    let unique = format!("30.{}{}", std::process::id(), key.len());
    let script = format!("exec 2>/dev/null; sleep {unique} | cat");
    let env = Env::new();
    env.write_config(&format!(
        "[[account]]\nname = \"a\"\nhost = \"127.0.0.1\"\nport = {}\n\
         user = \"{USER}\"\nauth = \"{auth}\"\nallow_plaintext_auth = true\ntls = \"none\"\n\
         timeout = \"1s\"\n{key} = [\"/bin/sh\", \"-c\", {script:?}]\n\
         deliver = {{ maildir = \"{}\" }}\n",
        server.port(),
        env.maildir().display()
    ));
    let run = fetch(&env);
    let survivors = processes_with_arg(&unique);
    kill_all(&survivors);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("no answer within"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        survivors.is_empty(),
        "the {key} pipeline survived its timeout: {survivors:?}"
    );
}

#[test]
fn issue13_1_password_command_timeout_ends_its_process_group() {
    command_timeout_ends_its_group("password_command", "user");
}

#[test]
fn issue13_1_oauth2_token_command_timeout_ends_its_process_group() {
    command_timeout_ends_its_group("oauth2_token_command", "xoauth2");
}

/// The sibling of item 3 in the credential commands: a password command that answers and exits
/// but leaves a process holding its stdout is an answer, not a timeout.
#[test]
fn issue13_3_password_command_answer_counts_even_when_a_leftover_holds_stdout() {
    let server = Server::healthy(vec![Msg::new(message(1, 500), "uidl-1")]);
    let unique = format!("30.{}7", std::process::id());
    let script = format!("exec 2>/dev/null; echo {PASSWORD}; sleep {unique} &");
    let env = Env::new();
    env.write_config(&format!(
        "[[account]]\nname = \"a\"\nhost = \"127.0.0.1\"\nport = {}\n\
         user = \"{USER}\"\nauth = \"user\"\nallow_plaintext_auth = true\ntls = \"none\"\n\
         timeout = \"10s\"\npassword_command = [\"/bin/sh\", \"-c\", {script:?}]\n\
         deliver = {{ maildir = \"{}\" }}\n",
        server.port(),
        env.maildir().display()
    ));
    let run = fetch(&env);
    kill_all(&processes_with_arg(&unique));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("1 new message delivered"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(!run.stderr.contains("no answer within"), "{}", run.stderr);
}
