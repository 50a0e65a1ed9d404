use proptest::prelude::*;

use super::*;

fn stderr(data: &[u8]) -> Stderr {
    let mut s = Stderr::default();
    for piece in data.chunks(1000) {
        s.push(piece);
    }
    s
}

#[test]
fn stderr_text_is_whole_lines() {
    assert_eq!(stderr(b"").text(), None);
    assert_eq!(
        stderr(b"procmail: Couldn't create \"/var/mail/x\"\r\n\nprocmail: bye\n")
            .text()
            .unwrap(),
        "procmail: Couldn't create \"/var/mail/x\" | procmail: bye"
    );
    assert_eq!(stderr(b"no newline").text().unwrap(), "no newline");
    assert_eq!(
        stderr(b"tab\there\x1b[31m").text().unwrap(),
        "tab?here?[31m"
    );
}

#[test]
fn stderr_text_is_bounded_and_says_what_was_left_out() {
    let mut data = Vec::new();
    for i in 0..1000 {
        data.extend_from_slice(format!("line {i}\n").as_bytes());
    }
    let text = stderr(&data).text().unwrap();
    // " | " for "\n" at most doubles the kept bytes (the shortest line is one byte).
    assert!(text.len() < 2 * MAX_STDERR + 100, "{}", text.len());
    let (lines, note) = text.rsplit_once(" (").unwrap();
    // Every shown line is whole: the cut falls on a line end.
    for l in lines.split(" | ") {
        let n: usize = l.strip_prefix("line ").unwrap().parse().unwrap();
        assert!(n < 1000);
    }
    let shown = lines.split(" | ").count();
    let shown_bytes: usize = (0..shown)
        .map(|i| format!("line {i}\n").len())
        .sum::<usize>()
        - 1;
    assert_eq!(
        note,
        format!("{} more bytes not shown)", data.len() - shown_bytes)
    );
    // One huge line is cut at the cap.
    let text = stderr(&vec![b'x'; 100_000]).text().unwrap();
    assert!(text.starts_with(&"x".repeat(MAX_STDERR)));
    assert!(text.ends_with(&format!("({} more bytes not shown)", 100_000 - MAX_STDERR)));
}

/// Processes of group `pgid` that are not zombies, waited for (bounded) to be none.
async fn group_left(pgid: &str) -> Vec<String> {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let mut rest = stat
                .rsplit_once(')')
                .map_or("", |(_, r)| r)
                .split_whitespace();
            let state = rest.next();
            if rest.nth(1) == Some(pgid) && state != Some("Z") {
                left.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        if left.is_empty() || std::time::Instant::now() >= until {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A delivery abandoned while its MDA runs (a poll cancelled, its future dropped) leaves none
/// of the MDA's processes behind, pipeline included.
#[tokio::test]
async fn an_abandoned_delivery_ends_the_mda_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > {}; sleep 30 | sleep 31", pid_file.display());
    let mda = Mda::new(
        vec!["/bin/sh".into(), "-c".into(), script],
        Duration::from_secs(60),
        "a",
        "u",
    );
    let mut sink = mda.begin(None, None).unwrap();
    sink.write(b"Subject: x\n\nbody\n").unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(1), sink.prepare()).await;
    assert!(waited.is_err(), "the MDA cannot have finished");
    drop(sink);
    let pgid = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(group_left(pgid.trim()).await, Vec::<String>::new());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever an MDA writes, in whatever pieces: the logged text is one line of printable
    /// characters, bounded, and shows whole lines from the start of what was written.
    #[test]
    fn stderr_text_is_one_bounded_printable_line(
        data in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(0xc3u8), Just(0x1b), proptest::num::u8::ANY],
            0..6000,
        ),
        piece in 1usize..5000,
    ) {
        let mut s = Stderr::default();
        for p in data.chunks(piece) {
            s.push(p);
        }
        prop_assert_eq!(s.total, data.len() as u64);
        match s.text() {
            None => prop_assert!(data.is_empty()),
            Some(text) => {
                prop_assert!(!text.chars().any(char::is_control), "{:?}", text);
                prop_assert!(text.len() <= 3 * 2 * MAX_STDERR + 100);
                let first = data
                    .split(|&b| b == b'\n')
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                    .find(|l| !l.iter().all(u8::is_ascii_whitespace));
                if let Some(first) = first.filter(|l| l.len() < MAX_STDERR) {
                    let shown = crate::pop3::printable(first, MAX_STDERR);
                    prop_assert!(text.starts_with(&shown), "{:?} / {:?}", text, shown);
                }
            }
        }
    }
}
