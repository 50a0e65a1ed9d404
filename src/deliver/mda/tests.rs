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
