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
        tls: TlsMode::Implicit,
        received_header: true,
        routed: None,
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

#[test]
fn received_header_names_the_transport() {
    for (tls, with) in [
        (TlsMode::Implicit, " with POP3S (popfetch "),
        (TlsMode::Starttls, " with POP3 (STLS; popfetch "),
        (TlsMode::None, " with POP3 (popfetch "),
    ] {
        let info = MessageInfo {
            account: "alice",
            server: "pop.example.org",
            uidl: None,
            tls,
            received_header: true,
            routed: None,
        };
        let h = String::from_utf8(received_header(&info)).unwrap();
        assert!(h.contains(with), "{tls:?}: {h}");
    }
}

#[tokio::test]
async fn maildir_delivery_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Mail");
    let target = crate::config::Deliver::Maildir(root.clone());
    let backend = Backend::open(&target, &test_account()).unwrap();
    let info = MessageInfo {
        account: "a",
        server: "s",
        uidl: None,
        tls: TlsMode::None,
        received_header: false,
        routed: None,
    };
    let mut sink = backend.begin(&info).unwrap();
    sink.write(b"Subject: x\n\nbody \xff\n").await.unwrap();
    let key = sink.key().unwrap().to_string();
    assert!(!backend.was_delivered(&key));
    // An abandoned delivery leaves nothing.
    drop(sink);
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);

    let mut sink = backend.begin(&info).unwrap();
    sink.write(b"Subject: y\n\nbody\n").await.unwrap();
    sink.finish().await.unwrap();
    let key = sink.key().unwrap().to_string();
    let mut batch = [sink];
    backend.sync_batch(&mut batch).await.unwrap();
    assert!(root.join("tmp").join(&key).exists() && !backend.was_delivered(&key));
    backend.publish_batch(batch.into()).await.unwrap();
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

/// A valid account to open backends with.
pub(crate) fn test_account() -> crate::config::Account {
    let cfg = crate::config::parse(
        std::path::Path::new("/x/config.toml"),
        "[[account]]\nname = \"a\"\nhost = \"h\"\nuser = \"u\"\npassword_file = \"p\"\n\
         deliver = { maildir = \"/m\" }\n",
    )
    .unwrap();
    (*cfg.accounts[0]).clone()
}

fn mda(argv: &[&str]) -> (Backend, crate::config::Account) {
    let mut account = test_account();
    account.mda_timeout = std::time::Duration::from_secs(2);
    let target = crate::config::Deliver::Mda(argv.iter().map(|s| s.to_string()).collect());
    (Backend::open(&target, &account).unwrap(), account)
}

async fn run_mda(backend: &Backend, message: &[u8], chunk: usize) -> Result<(), DeliverError> {
    let info = MessageInfo {
        account: "a",
        server: "s",
        uidl: None,
        tls: TlsMode::None,
        received_header: false,
        routed: None,
    };
    let mut sink = backend.begin(&info)?;
    for piece in message.chunks(chunk) {
        sink.write(piece).await?;
    }
    sink.finish().await?;
    assert!(sink.key().is_none());
    Ok(())
}

#[test]
fn placeholders_replace_whole_arguments_only() {
    let argv: Vec<String> = ["x", "{from}", "--f={from}", "{account}", "{user}", "{FROM}"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        mda::expand_argv(&argv, "s@example.org", "acc", "usr"),
        ["x", "s@example.org", "--f={from}", "acc", "usr", "{FROM}"]
    );
}

#[tokio::test]
async fn mda_gets_the_message_argv_and_environment_without_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = format!(
        "cat > {0}.msg; printf '%s|%s|%s|%s' \"$1\" \"$POPFETCH_FROM\" \"$POPFETCH_ACCOUNT\" \"$POPFETCH_USER\" > {0}.args",
        out.display()
    );
    let (b, _) = mda(&["sh", "-c", &script, "sh", "{from}"]);
    let msg = b"Return-Path: <bounce@example.org>\nFrom: \"$(touch /tmp/x)\" <a@example.org>\nSubject: `id`; rm -rf /\n\nbody $HOME\n";
    for chunk in [1, 7, 4096] {
        run_mda(&b, msg, chunk).await.unwrap();
        assert_eq!(std::fs::read(out.with_extension("msg")).unwrap(), msg);
        assert_eq!(
            std::fs::read_to_string(out.with_extension("args")).unwrap(),
            "bounce@example.org|bounce@example.org|a|u"
        );
    }
}

#[tokio::test]
async fn mda_exit_codes_and_timeout_are_classified() {
    let (b, _) = mda(&["sh", "-c", "cat >/dev/null; exit 75"]);
    let e = run_mda(&b, b"Subject: x\n\nbody\n", 100).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    let (b, _) = mda(&[
        "sh",
        "-c",
        "cat >/dev/null; echo 'no such user' >&2; exit 67",
    ]);
    let e = run_mda(&b, b"Subject: x\n\nbody\n", 100).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    // Exits without reading its input: the exit status still decides.
    let (b, _) = mda(&["true"]);
    run_mda(&b, &vec![b'x'; 1 << 20], 65536).await.unwrap();
    let (b, _) = mda(&["sleep", "30"]);
    let t = std::time::Instant::now();
    let e = run_mda(&b, b"Subject: x\n\nbody\n", 100).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("killed"), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    let (b, _) = mda(&["/nonexistent/mda"]);
    let e = run_mda(&b, b"Subject: x\n\nbody\n", 100).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
}
