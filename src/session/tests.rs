use std::time::Duration;

use super::*;

fn flow(window: Duration) -> Flow {
    Flow {
        window,
        waited: Duration::ZERO,
        bytes: 0,
    }
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn a_trickle_is_a_stall_once_the_window_is_full() {
    // One octet every 0.25 s, each within any timeout.
    let mut f = flow(stall_window(Duration::from_secs(2)));
    let mut result = Ok(());
    let mut reads = 0;
    while result.is_ok() && reads < 1000 {
        result = f.count(Some(250 * MS), 1);
        reads += 1;
    }
    assert_eq!(
        reads, 40,
        "the stall is seen after the 10 s window, not before"
    );
    match result {
        Err(SessionError::Stalled { bytes, after }) => {
            assert_eq!(bytes, 40);
            assert_eq!(after, Duration::from_secs(10));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_slow_honest_link_is_no_stall() {
    // 2 KiB/s (a poor 2G link), read in pieces of 512 octets, for ten minutes.
    let mut f = flow(stall_window(Duration::from_secs(60)));
    for _ in 0..2400 {
        f.count(Some(250 * MS), 512).unwrap();
    }
    // A dip to nothing for most of a window, made up within it.
    f.count(Some(Duration::from_secs(50)), 0).unwrap();
    f.count(Some(Duration::from_secs(9)), 64 * 1024).unwrap();
}

#[test]
fn the_wait_for_an_answers_first_byte_does_not_count() {
    // A server thinking a minute before each of many short answers is slow, not trickling:
    // the timeout alone covers that wait.
    let mut f = flow(stall_window(Duration::from_secs(60)));
    for _ in 0..100 {
        f.count(None, 20).unwrap();
    }
    assert_eq!(f.waited, Duration::ZERO);
}
