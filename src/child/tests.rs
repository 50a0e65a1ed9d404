use std::time::{Duration, Instant};

use super::*;

/// The processes of group `pgid` that are not zombies.
fn members(pgid: libc::pid_t) -> Vec<libc::pid_t> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
        let mut rest = stat
            .rsplit_once(')')
            .map_or("", |(_, r)| r)
            .split_whitespace();
        let state = rest.next();
        let group = rest.nth(1).and_then(|g| g.parse::<libc::pid_t>().ok());
        if group == Some(pgid) && state != Some("Z") {
            found.push(pid);
        }
    }
    found
}

/// Waits (bounded) until group `pgid` has no live member; returns what is left.
async fn settle(pgid: libc::pid_t) -> Vec<libc::pid_t> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let left = members(pgid);
        if left.is_empty() || Instant::now() >= until {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sh(script: &str) -> Group {
    Group::spawn(Command::new("/bin/sh").args(["-c", script])).unwrap()
}

#[tokio::test]
async fn the_child_leads_its_own_group() {
    let mut g = sh("exit 3");
    // SAFETY: getpgrp(2) has no preconditions.
    let ours = unsafe { libc::getpgrp() };
    assert_ne!(g.pgid, ours);
    assert_eq!(g.wait().await.unwrap().code(), Some(3));
}

#[tokio::test]
async fn end_takes_the_whole_pipeline() {
    let mut g = sh("sleep 30 | sleep 31 & sleep 32");
    let pgid = g.pgid;
    let until = Instant::now() + Duration::from_secs(5);
    while members(pgid).len() < 4 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(members(pgid).len(), 4, "sh and three sleeps");
    let status = g.end().await.expect("the leader is reaped");
    assert!(!status.success());
    assert_eq!(settle(pgid).await, Vec::<libc::pid_t>::new());
}

#[tokio::test]
async fn end_kills_what_ignores_sigterm() {
    // An ignored signal stays ignored in the children.
    let mut g = sh("trap '' TERM; sleep 30 & sleep 31");
    let pgid = g.pgid;
    let until = Instant::now() + Duration::from_secs(5);
    while members(pgid).len() < 3 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    g.end().await.expect("the leader is reaped");
    assert_eq!(settle(pgid).await, Vec::<libc::pid_t>::new());
}

#[tokio::test]
async fn a_dropped_group_is_killed() {
    let g = sh("sleep 30 & sleep 31");
    let pgid = g.pgid;
    let until = Instant::now() + Duration::from_secs(5);
    while members(pgid).len() < 2 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(g);
    assert_eq!(settle(pgid).await, Vec::<libc::pid_t>::new());
}

#[tokio::test]
async fn a_cancelled_wait_then_drop_kills_the_group() {
    let mut g = sh("sleep 30 | sleep 31");
    let pgid = g.pgid;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), g.wait())
            .await
            .is_err()
    );
    drop(g);
    assert_eq!(settle(pgid).await, Vec::<libc::pid_t>::new());
}

#[tokio::test]
async fn what_a_finished_leader_left_running_is_left_alone() {
    let mut g = sh("sleep 30 &");
    let pgid = g.pgid;
    assert!(g.wait().await.unwrap().success());
    drop(g);
    let left = members(pgid);
    assert_eq!(left.len(), 1, "the background sleep");
    for pid in left {
        // SAFETY: kill(2) on the sleep this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[tokio::test]
async fn wait_reading_answers_at_the_exit_when_a_leftover_holds_the_pipe() {
    use tokio::io::AsyncReadExt;
    let mut g = Group::spawn(
        Command::new("/bin/sh")
            .args(["-c", "echo answer; sleep 30 &"])
            .stdout(std::process::Stdio::piped()),
    )
    .unwrap();
    let pgid = g.pgid;
    let mut stdout = g.child().stdout.take().unwrap();
    let mut out = Vec::new();
    let read = async { stdout.read_to_end(&mut out).await.map(drop) };
    let status = g
        .wait_reading(Duration::from_secs(20), read)
        .await
        .expect("the exit decides, not the pipe")
        .unwrap();
    assert!(status.success());
    assert_eq!(out, b"answer\n");
    // What the leader left running is its own business; clean up after the test.
    // SAFETY: kill(2) on the group this test started.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    assert_eq!(settle(pgid).await, Vec::<libc::pid_t>::new());
}

#[tokio::test]
async fn wait_reading_ends_the_group_at_the_timeout() {
    let mut g = sh("sleep 30 | sleep 31");
    let pgid = g.pgid;
    let read = std::future::pending::<std::io::Result<()>>();
    assert!(
        g.wait_reading(Duration::from_millis(200), read)
            .await
            .is_none()
    );
    assert_eq!(settle(pgid).await, Vec::<libc::pid_t>::new());
}

/// Runs `sh -c script` through [`run_capture`].
async fn capture(
    script: &str,
    timeout: Duration,
    stdout: usize,
    stderr: Option<usize>,
) -> Result<Captured, RunError> {
    let argv = ["sh", "-c", script].map(String::from);
    run_capture(&argv, timeout, Caps { stdout, stderr }).await
}

#[tokio::test]
async fn run_capture_keeps_the_first_bytes_and_reads_the_rest() {
    // 200 KiB on stdout: more than a pipe holds, so a reader that stopped at the cap would
    // leave the program blocked until the timeout.
    let script = "printf 'hello world'; head -c 204800 /dev/zero; printf oops >&2; exit 3";
    let ran = capture(script, Duration::from_secs(30), 5, Some(3))
        .await
        .unwrap();
    assert_eq!(ran.status.code(), Some(3));
    assert_eq!(ran.stdout.expose().as_slice(), b"hello");
    assert_eq!(ran.stderr, b"oop");
}

#[tokio::test]
async fn run_capture_without_stderr_cap_leaves_stderr_alone() {
    let ran = capture("echo pw; echo note >&2", Duration::from_secs(30), 64, None)
        .await
        .unwrap();
    assert!(ran.status.success());
    assert_eq!(ran.stdout.expose().as_slice(), b"pw\n");
    assert!(ran.stderr.is_empty());
}

#[tokio::test]
async fn run_capture_ends_a_program_past_its_timeout() {
    let r = capture("sleep 30", Duration::from_millis(200), 64, None).await;
    assert!(matches!(r, Err(RunError::Timeout(_))), "{r:?}");
    let caps = Caps {
        stdout: 64,
        stderr: None,
    };
    let r = run_capture(
        &["/nonexistent/program".to_string()],
        Duration::from_secs(5),
        caps,
    )
    .await;
    assert!(matches!(r, Err(RunError::Spawn(_))), "{r:?}");
}
