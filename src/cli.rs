//! The command line: clap definitions, and what each subcommand does with a loaded config.
//! `main` stays thin: it parses, calls [`run`], and turns the result into an exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Account, Config, Credentials, Deliver, PasswordSource};
use crate::progress::Progress;
use crate::text::error_chain;

/// Fetch mail from POP3 accounts and deliver it locally, without ever losing a message.
#[derive(Debug, Parser)]
#[command(name = "popfetch", version, about, max_term_width = 100)]
pub struct Cli {
    /// Config file [default: $POPFETCH_CONFIG, else $XDG_CONFIG_HOME/popfetch/config.toml,
    /// else /etc/popfetch/config.toml]
    #[arg(short = 'c', long = "config", value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,

    /// Log more: -v for each poll, -vv for each message and protocol detail (POPFETCH_LOG or
    /// RUST_LOG override)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// No progress display and no summary lines; errors only
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Poll the named accounts (default: all) once, deliver new mail, and exit.
    ///
    /// Exit status: 0 when every account was polled, 1 when any failed, 2 on a usage or
    /// config error.
    Fetch {
        /// Account names, as in the config's `name` keys
        #[arg(value_name = "ACCOUNT")]
        accounts: Vec<String>,
    },
    /// Validate the config and print each account's effective settings (secrets redacted).
    Check,
    /// Run in the foreground, polling every account on its schedule, until SIGTERM or SIGINT.
    ///
    /// The config is reloaded when its file changes or on SIGHUP; SIGUSR1 polls every account
    /// now. Under systemd it reports readiness and status (Type=notify).
    Daemon,
    /// Show each account's last poll, from the state directory (no daemon needed).
    Status {
        /// Print JSON, one object per account, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Try again the messages held on the server after a permanent delivery failure.
    ///
    /// They are tried at the account's next poll.
    Retry {
        /// Account name
        #[arg(value_name = "ACCOUNT")]
        account: String,
    },
    /// Authorize popfetch at the account's OAuth2 provider and store the refresh token.
    ///
    /// Needs the account's `oauth2` table. The device flow shows a URL and a code to enter
    /// there from any device; the browser flow shows a URL whose answer comes back to a
    /// listener on 127.0.0.1 (or paste the address the browser ended on). Run it again when
    /// popfetch reports that the refresh token was refused.
    #[command(name = "oauth2-authorize")]
    Oauth2Authorize {
        /// Account name
        #[arg(value_name = "ACCOUNT")]
        account: String,
        /// The flow to use [default: the account's `oauth2.flow`, else the provider's]
        #[arg(long, value_enum)]
        flow: Option<config::OAuth2Flow>,
    },
    /// Switch from fetchmail, getmail6 or mpop: print an equivalent config and record the
    /// messages they already fetched.
    ///
    /// The config goes to stdout; what could not be translated is listed in it as comments
    /// and on stderr, with the rc file's line and why. The UIDLs of the messages the old tool
    /// fetched and left on the server are recorded as delivered in popfetch's state, so the
    /// first `popfetch fetch` takes only what is new. Stop the old tool first.
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
}

/// The tool `popfetch import` reads.
#[derive(Debug, Subcommand)]
pub enum ImportFrom {
    /// From fetchmail: the rc file and its UIDL file (.fetchids).
    Fetchmail {
        /// The rc file [default: ~/.fetchmailrc, or $FETCHMAILHOME/fetchmailrc]
        #[arg(value_name = "RCFILE")]
        rcfile: Option<PathBuf>,
        /// fetchmail's UIDL file [default: the rc file's `set idfile`, else ~/.fetchids]
        #[arg(long, value_name = "IDFILE")]
        ids: Option<PathBuf>,
        #[command(flatten)]
        opts: ImportOpts,
    },
    /// From getmail6: rc files and the oldmail-* files of the getmail directory.
    Getmail {
        /// The rc files, relative ones in the getmail directory [default: getmailrc]
        #[arg(value_name = "RCFILE")]
        rcfiles: Vec<PathBuf>,
        /// The getmail directory [default: ~/.getmail]
        #[arg(long, value_name = "DIR")]
        getmaildir: Option<PathBuf>,
        #[command(flatten)]
        opts: ImportOpts,
    },
    /// From mpop: the rc file and each account's UIDLs file.
    Mpop {
        /// The rc file [default: ~/.mpoprc, else $XDG_CONFIG_HOME/mpop/config]
        #[arg(value_name = "RCFILE")]
        rcfile: Option<PathBuf>,
        #[command(flatten)]
        opts: ImportOpts,
    },
}

/// Options every `popfetch import` takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportOpts {
    /// Where to record the state; also written into the config as `state_dir` [default: the
    /// state directory popfetch uses without one]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print the config and what would be recorded, and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// Exit status for a usage or config error.
pub const EXIT_CONFIG: u8 = 2;

/// An error that ends the run before any account is polled (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(
        "no config file: none at {}; write one (popfetch.toml(5) describes it) or name one \
         with -c PATH",
        .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or ")
    )]
    NoConfig(Vec<PathBuf>),
    #[error("no account named `{0}` in {1}")]
    UnknownAccount(String, PathBuf),
    #[error("import: {0}")]
    Import(#[from] crate::import::ImportError),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode, UsageError> {
    // `import` writes a config; it reads none.
    if let Command::Import { from } = &cli.command {
        return import(from, cli.quiet);
    }
    let path = config::find(cli.config.as_deref()).map_err(UsageError::NoConfig)?;
    let config = config::load(&path)?;
    match cli.command {
        Command::Check => {
            out(&describe(&config));
            Ok(ExitCode::SUCCESS)
        }
        Command::Fetch { accounts } => {
            let selected = select(&config, &accounts)?;
            Ok(fetch(&config, selected, cli.quiet).await)
        }
        Command::Daemon => Ok(crate::daemon::run(path, config).await),
        Command::Status { json } => {
            out(&status(&config, json));
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { .. } => Ok(ExitCode::SUCCESS),
        Command::Retry { account } => {
            let account = select(&config, std::slice::from_ref(&account))?.remove(0);
            let mailbox = crate::state::Mailbox::of(&account);
            let released =
                crate::state::AccountState::open(&config.state_dir, &mailbox, &account.name)
                    .and_then(|mut st| {
                        let n = st.release_held();
                        st.sync().map(|()| n)
                    });
            match released {
                Ok(n) => {
                    out(&format!(
                        "{}: {n} held message{} will be tried at the next poll\n",
                        account.name,
                        if n == 1 { "" } else { "s" }
                    ));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("popfetch: account {}: {}", account.name, error_chain(&e));
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Oauth2Authorize { account, flow } => {
            let account = select(&config, std::slice::from_ref(&account))?.remove(0);
            match crate::oauth2::authorize::authorize(&account, &config.state_dir, flow).await {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("popfetch: account {}: {}", account.name, error_chain(&e));
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// `popfetch import`: the config on stdout, notes and the state summary on stderr.
fn import(from: &ImportFrom, quiet: bool) -> Result<ExitCode, UsageError> {
    use crate::import::{ImportError, Request, Source};
    let (source, opts) = match from {
        ImportFrom::Fetchmail { rcfile, ids, opts } => (
            Source::Fetchmail {
                rcfile: rcfile.clone(),
                ids: ids.clone(),
            },
            opts,
        ),
        ImportFrom::Getmail {
            rcfiles,
            getmaildir,
            opts,
        } => (
            Source::Getmail {
                rcfiles: rcfiles.clone(),
                getmaildir: getmaildir.clone(),
            },
            opts,
        ),
        ImportFrom::Mpop { rcfile, opts } => (
            Source::Mpop {
                rcfile: rcfile.clone(),
            },
            opts,
        ),
    };
    let req = Request {
        source,
        state_dir: opts.state_dir.clone(),
        dry_run: opts.dry_run,
    };
    match crate::import::run(&req) {
        Ok(outcome) => {
            out(&outcome.config);
            if !quiet {
                for m in &outcome.messages {
                    eprintln!("popfetch import: {m}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (ImportError::Busy(_) | ImportError::State { .. })) => {
            eprintln!("popfetch import: {}", error_chain(&e));
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(UsageError::Import(e)),
    }
}

/// The accounts `names` picks, in the order given, each once: an account polled twice at once
/// would lock itself out of its own mailbox.
fn select(config: &Config, names: &[String]) -> Result<Vec<Arc<Account>>, UsageError> {
    if names.is_empty() {
        return Ok(config.accounts.clone());
    }
    let mut picked: Vec<Arc<Account>> = Vec::with_capacity(names.len());
    for n in names {
        let account = config
            .account(n)
            .ok_or_else(|| UsageError::UnknownAccount(n.clone(), config.path.clone()))?;
        if !picked.iter().any(|a| a.name == account.name) {
            picked.push(account.clone());
        }
    }
    Ok(picked)
}

/// Polls `accounts` concurrently; prints one summary line per account.
async fn fetch(config: &Config, accounts: Vec<Arc<Account>>, quiet: bool) -> ExitCode {
    // SIGINT or SIGTERM: finish the messages in flight and QUIT; a second one exits at once.
    let stop = CancellationToken::new();
    crate::daemon::signals::stop_on_signal(stop.clone());
    let limit = Arc::new(tokio::sync::Semaphore::new(config.max_parallel));
    let live = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress: Vec<Arc<Progress>> = accounts.iter().map(|a| Progress::new(&a.name)).collect();
    let drawn = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renderer =
        live.then(|| tokio::spawn(crate::progress::render(progress.clone(), drawn.clone())));
    let mut tasks = tokio::task::JoinSet::new();
    let mut ids = std::collections::HashMap::new();
    for (i, account) in accounts.into_iter().enumerate() {
        let state_dir = config.state_dir.clone();
        let limit = limit.clone();
        let stop = stop.clone();
        let progress = progress[i].clone();
        let name = account.name.clone();
        let handle = tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let r = crate::fetch::poll(&account, &state_dir, &stop, Some(&progress)).await;
            let failed = r.1.is_err();
            progress
                .failed
                .store(failed, std::sync::atomic::Ordering::Relaxed);
            progress
                .finished
                .store(true, std::sync::atomic::Ordering::Relaxed);
            (i, account, r)
        });
        ids.insert(handle.id(), name);
    }
    let mut results = Vec::new();
    let mut crashed = false;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(r) => results.push(r),
            // A bug in one account's poll must not hide the others' results. Nothing it did
            // not record as delivered was deleted.
            Err(e) => {
                crashed = true;
                let name = ids.get(&e.id()).map_or("?", String::as_str);
                crate::logging::terminal::print(&format!(
                    "popfetch: account {name}: internal error: {e}\n"
                ));
            }
        }
    }
    results.sort_by_key(|(i, _, _)| *i);
    if let Some(r) = renderer {
        drawn.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = r.await;
    }
    let mut failed = crashed;
    for (_, account, (rep, r)) in results {
        // A poll that failed after delivering says so too: its deliveries count.
        let did_something = rep.delivered + rep.quarantined + rep.newly_held + rep.duplicates > 0;
        if r.is_ok() || did_something {
            if !quiet {
                out(&format!("{}\n", summary_line(&account.name, &rep)));
            }
            failed |= rep.has_failures();
        }
        if let Err(e) = r {
            failed = true;
            eprintln!("popfetch: account {}: {}", account.name, error_chain(&e));
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The line `fetch` prints for one account's poll.
fn summary_line(name: &str, rep: &crate::fetch::Report) -> String {
    format!("{name}: {}", rep.summary())
}

/// Writes to stdout. A reader that went away (`popfetch status | head -1`) is no reason to
/// panic, nor to fail a fetch that has delivered its mail: the text is dropped.
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// The effective settings, TOML-like, secrets redacted.
pub fn describe(config: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# {}: valid, {} account(s)",
        config.path.display(),
        config.accounts.len()
    );
    let _ = writeln!(
        s,
        "state_dir = {:?}",
        config.state_dir.display().to_string()
    );
    if let Some(addr) = config.metrics_listen {
        let _ = writeln!(s, "metrics_listen = \"{addr}\"");
        if config.metrics_listen_public {
            let _ = writeln!(s, "metrics_listen_public = true");
        }
    }
    if let Some(p) = &config.metrics_textfile {
        let _ = writeln!(s, "metrics_textfile = {:?}", p.display().to_string());
    }
    for a in &config.accounts {
        describe_account(&mut s, a);
    }
    s
}

/// One account's settings, secrets redacted.
fn describe_account(s: &mut String, a: &Account) {
    use std::fmt::Write;
    let _ = writeln!(s, "\n[[account]]");
    let _ = writeln!(s, "name = {:?}", a.name);
    let _ = writeln!(s, "host = {:?}", a.host);
    let _ = writeln!(s, "port = {}", a.port);
    let _ = writeln!(s, "tls = {:?}", format!("{:?}", a.tls).to_lowercase());
    if let Some(ca) = &a.ca_file {
        let _ = writeln!(s, "ca_file = {:?}", ca.display().to_string());
    }
    let _ = writeln!(s, "tls_verify = {}", a.tls_verify);
    let _ = writeln!(s, "user = {:?}", a.user);
    let _ = match &a.credentials {
        Credentials::Password(PasswordSource::Inline(_)) => {
            writeln!(s, "password = \"<redacted>\"")
        }
        Credentials::Password(PasswordSource::File(p)) => {
            writeln!(s, "password_file = {:?}", p.display().to_string())
        }
        Credentials::Password(PasswordSource::Command(argv)) => {
            writeln!(s, "password_command = {argv:?}")
        }
        Credentials::OAuth2(o) => {
            describe_oauth2(s, o);
            Ok(())
        }
    };
    let _ = writeln!(s, "auth = {:?}", a.auth.config_name());
    let _ = writeln!(s, "allow_plaintext_auth = {}", a.allow_plaintext_auth);
    let _ = writeln!(s, "keep = {}", a.keep);
    let _ = writeln!(s, "received_header = {}", a.received_header);
    let _ = writeln!(
        s,
        "timeout = {:?}",
        humantime::format_duration(a.timeout).to_string()
    );
    let _ = writeln!(
        s,
        "mda_timeout = {:?}",
        humantime::format_duration(a.mda_timeout).to_string()
    );
    let _ = writeln!(
        s,
        "on_permanent_failure = {:?}",
        format!("{:?}", a.on_permanent_failure).to_lowercase()
    );
    if let Some(q) = &a.quarantine {
        let _ = writeln!(s, "quarantine = {:?}", q.display().to_string());
    }
    if let Some(m) = a.max_size {
        let _ = writeln!(s, "max_size = {m}");
        let _ = writeln!(
            s,
            "max_size_action = {:?}",
            format!("{:?}", a.max_size_action).to_lowercase()
        );
    }
    if let Some(d) = a.delete_after {
        let _ = writeln!(
            s,
            "delete_after = {:?}",
            humantime::format_duration(d).to_string()
        );
    }
    if let Some(m) = a.max_messages_per_poll {
        let _ = writeln!(s, "max_messages_per_poll = {m}");
    }
    if let Some(m) = a.max_bytes_per_poll {
        let _ = writeln!(s, "max_bytes_per_poll = {m}");
    }
    if a.dedupe_message_id {
        let _ = writeln!(s, "dedupe_message_id = true");
    }
    describe_deliver(s, &a.deliver);
}

/// Where an account delivers, secrets redacted.
fn describe_deliver(s: &mut String, deliver: &Deliver) {
    use std::fmt::Write;
    let _ = match deliver {
        Deliver::Mbox(p) => writeln!(s, "deliver = {{ mbox = {:?} }}", p.display().to_string()),
        Deliver::Mda(argv) => writeln!(s, "deliver = {{ mda = {argv:?} }}"),
        Deliver::Lmtp(t) => writeln!(
            s,
            "deliver = {{ lmtp = {{ {}, to = {:?}{}{} }} }}",
            match &t.at {
                crate::config::LmtpAt::Socket(p) =>
                    format!("socket = {:?}", p.display().to_string()),
                crate::config::LmtpAt::Tcp {
                    host, port, tls, ..
                } => format!(
                    "host = {host:?}, port = {port}, tls = {:?}",
                    format!("{tls:?}").to_lowercase()
                ),
            },
            t.to,
            t.from
                .as_ref()
                .map(|f| format!(", from = {f:?}"))
                .unwrap_or_default(),
            t.lhlo
                .as_ref()
                .map(|f| format!(", lhlo = {f:?}"))
                .unwrap_or_default(),
        ),
        Deliver::Smtp(t) => writeln!(
            s,
            "deliver = {{ smtp = {{ host = {:?}, port = {}, tls = {:?}, to = {:?}{}{}{} }} }}",
            t.host,
            t.port,
            format!("{:?}", t.tls).to_lowercase(),
            t.to,
            t.from
                .as_ref()
                .map(|f| format!(", from = {f:?}"))
                .unwrap_or_default(),
            t.helo
                .as_ref()
                .map(|h| format!(", helo = {h:?}"))
                .unwrap_or_default(),
            t.credentials
                .as_ref()
                .map(|(u, _)| format!(", user = {u:?}, password = \"<redacted>\""))
                .unwrap_or_default(),
        ),
        Deliver::Maildir(p) => {
            writeln!(s, "deliver = {{ maildir = {:?} }}", p.display().to_string())
        }
    };
}

/// The token source's settings; it holds paths and URLs only, no secret.
fn describe_oauth2(s: &mut String, source: &config::OAuth2Source) {
    use std::fmt::Write;
    let ttl = |t: Option<std::time::Duration>| {
        t.map(|t| {
            format!(
                "oauth2_token_ttl = {:?}\n",
                humantime::format_duration(t).to_string()
            )
        })
        .unwrap_or_default()
    };
    match source {
        config::OAuth2Source::Command { argv, ttl: t } => {
            let _ = write!(s, "oauth2_token_command = {argv:?}\n{}", ttl(*t));
        }
        config::OAuth2Source::Refresh(c) => {
            let _ = write!(s, "{}", ttl(c.ttl));
            let path = |p: &std::path::Path| format!("{:?}", p.display().to_string());
            let mut fields = Vec::new();
            if let Some(p) = c.provider {
                fields.push(format!("provider = {:?}", format!("{p:?}").to_lowercase()));
            }
            fields.push(format!("token_url = {:?}", c.token_url));
            if let Some(u) = &c.device_authorization_url {
                fields.push(format!("device_authorization_url = {u:?}"));
            }
            if let Some(u) = &c.authorization_url {
                fields.push(format!("authorization_url = {u:?}"));
            }
            fields.push(format!("client_id = {:?}", c.client_id));
            if let Some(p) = &c.client_secret_file {
                fields.push(format!("client_secret_file = {}", path(p)));
            }
            fields.push(format!(
                "refresh_token_file = {}",
                path(&c.refresh_token_file)
            ));
            fields.push(format!("scope = {:?}", c.scope));
            if let Some(p) = &c.ca_file {
                fields.push(format!("ca_file = {}", path(p)));
            }
            fields.push(format!(
                "flow = {:?}",
                format!("{:?}", c.flow).to_lowercase()
            ));
            let _ = writeln!(s, "oauth2 = {{ {} }}", fields.join(", "));
        }
    }
}

/// The account rows of `popfetch status`.
pub fn status(config: &Config, json: bool) -> String {
    let rows: Vec<crate::status::Status> = config
        .accounts
        .iter()
        .map(|a| crate::status::read(&config.state_dir, &a.name))
        .collect();
    if json {
        return serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n";
    }
    let when = |t: Option<u64>| {
        t.map(|s| {
            crate::deliver::rfc5322_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
        })
        .unwrap_or_else(|| "never".into())
    };
    let mut out = String::new();
    for r in rows {
        out.push_str(&format!(
            "{}: last poll {} ({}), last success {}, {} delivered in total, {} waiting on the server{}\n",
            r.account,
            when(r.last_poll),
            r.last_result.as_deref().unwrap_or("-"),
            when(r.last_success),
            r.delivered_total,
            r.waiting.map_or("?".to_string(), |w| w.to_string()),
            r.last_error.map(|e| format!("; last error: {e}")).unwrap_or_default()
        ));
        for short in &r.held_short {
            out.push_str(&format!("{}: held: {short}\n", r.account));
        }
    }
    out
}
