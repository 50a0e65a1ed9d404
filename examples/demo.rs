//! The README's first command: a complete fetch with no mail account.
//!
//! Starts popfetch's in-process POP3 server on loopback with a few sample messages, writes a
//! config for it, and runs the real fetch path twice: the first poll delivers everything into a
//! Maildir and deletes it from the server, the second finds nothing new.

use std::os::unix::fs::PermissionsExt;

use popfetch::demo::{DemoServer, Mailbox, sample_messages};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    popfetch::logging::init(1, false, None, popfetch::logging::LogTarget::Stderr);
    let dir = std::env::temp_dir().join(format!("popfetch-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    let messages = sample_messages();
    let server = DemoServer::start(Mailbox {
        user: "demo".into(),
        password: "demo-password".into(),
        messages: messages.clone(),
    })
    .await?;
    println!(
        "demo POP3 server on {} holding {} messages",
        server.addr(),
        messages.len()
    );

    // The demo server speaks clear text on loopback and knows only USER/PASS, so the config
    // allows a clear-text login; a real account keeps TLS and the default refusal.
    let config_path = dir.join("config.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"state_dir = "state"

[[account]]
name = "demo"
host = "127.0.0.1"
port = {port}
tls = "none"
allow_plaintext_auth = true
user = "demo"
password = "demo-password"
deliver = {{ maildir = "Maildir" }}
"#,
            port = server.addr().port()
        ),
    )?;
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o600))?;
    let config = popfetch::config::load(&config_path)?;
    let account = &config.accounts[0];

    for round in 1..=2 {
        let (report, r) =
            popfetch::fetch::poll(account, &config.state_dir, &Default::default(), None).await;
        r?;
        println!(
            "poll {round}: {} delivered ({} bytes), {} deleted from the server",
            report.delivered, report.bytes, report.deleted
        );
    }

    let maildir = dir.join("Maildir/new");
    let mut files: Vec<_> = std::fs::read_dir(&maildir)?.flatten().collect();
    files.sort_by_key(|e| e.file_name());
    println!("\n{} messages in {}:", files.len(), maildir.display());
    for f in &files {
        let text = std::fs::read(f.path())?;
        let subject = text
            .split(|&b| b == b'\n')
            .find(|l| l.starts_with(b"Subject:"))
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .unwrap_or_default();
        println!("  {:>6} bytes  {subject}", text.len());
    }
    println!("\nconfig used: {}", config_path.display());
    println!(
        "server now holds {} messages",
        server.remaining().await.len()
    );
    Ok(())
}
