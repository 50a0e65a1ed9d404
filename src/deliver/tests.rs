use std::time::{Duration, SystemTime};

use super::*;

#[test]
fn dates_are_rfc5322() {
    let t = SystemTime::UNIX_EPOCH;
    assert_eq!(rfc5322_date(t), "Thu, 01 Jan 1970 00:00:00 +0000");
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_691_031);
    assert_eq!(rfc5322_date(t), "Thu, 26 Nov 2026 11:03:51 +0000");
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // leap day 2000
    assert_eq!(rfc5322_date(t), "Tue, 29 Feb 2000 00:00:00 +0000");
}

#[test]
fn received_header_escapes_the_uidl() {
    let uidl: Uidl = "a(b)c\\d".parse().unwrap();
    let info = MessageInfo {
        account: "alice",
        server: "pop.example.org",
        uidl: Some(&uidl),
        tls: true,
        received_header: true,
    };
    let h = String::from_utf8(received_header(&info)).unwrap();
    assert!(h.starts_with("Received: from pop.example.org by "), "{h}");
    assert!(h.contains("with POP3S (popfetch "), "{h}");
    assert!(
        h.contains("\n\t(account alice, uidl a\\(b\\)c\\\\d); "),
        "{h}"
    );
    assert!(h.ends_with(" +0000\n"), "{h}");
    assert_eq!(h.matches('\n').count(), 2);
}

#[tokio::test]
async fn maildir_delivery_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Mail");
    let backend = Backend::open(&crate::config::Deliver::Maildir(root.clone())).unwrap();
    let info = MessageInfo {
        account: "a",
        server: "s",
        uidl: None,
        tls: false,
        received_header: false,
    };
    let mut sink = backend.begin(&info).unwrap();
    sink.write(b"Subject: x\n\nbody \xff\n").await.unwrap();
    let key = sink.key().to_string();
    assert!(!backend.was_delivered(&key));
    // An abandoned delivery leaves nothing.
    drop(sink);
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);

    let mut sink = backend.begin(&info).unwrap();
    sink.write(b"Subject: y\n\nbody\n").await.unwrap();
    sink.prepare().await.unwrap();
    let key = sink.key().to_string();
    assert!(root.join("tmp").join(&key).exists() && !backend.was_delivered(&key));
    sink.commit().await.unwrap();
    assert!(backend.was_delivered(&key));
    assert_eq!(
        std::fs::read(root.join("new").join(&key)).unwrap(),
        b"Subject: y\n\nbody\n"
    );
    // A mail reader moves it to cur/ with flags: still found.
    std::fs::rename(
        root.join("new").join(&key),
        root.join("cur").join(format!("{key}:2,S")),
    )
    .unwrap();
    assert!(backend.was_delivered(&key));
    assert!(!backend.was_delivered("nonexistent"));
}
