//! The command line: clap definitions, and what each subcommand does with a loaded config.
//! `main` stays thin: it parses, calls [`run`], and turns the result into an exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Validate the config and all it names short of the network, and print the effective
    /// settings (secrets redacted); with --connect, look at the servers instead.
    ///
    /// Beyond the syntax: every file it names is there and safe (the trust rule of the config),
    /// each `ca_file` holds a certificate, each Maildir and mbox can be written or created,
    /// each program exists and is executable, the state directory is usable, and there is at
    /// least one account, all as the user who runs it. Every finding is printed with its line;
    /// a warning (a Maildir not created yet) does not fail. Exit status: 0 valid, 2 invalid.
    ///
    /// --connect connects to each named account's server (default: all), negotiates TLS and
    /// logs in as a poll would, then shows the certificate (subject, issuer, validity,
    /// SHA-256 fingerprints of the certificate and of its public key), the capabilities, the
    /// login method chosen, how many messages are on the server, how many of them are new for
    /// popfetch, their sizes, and LOGIN-DELAY and EXPIRE; for an account with a route, where
    /// the first 50 new messages would go, told by their headers alone (TOP n 0; not from a
    /// server that announces EXPIRE, as some count TOP as a retrieval). Nothing is retrieved
    /// or deleted and no state is written (fetchmail's --check, mpop's --serverinfo). A poll of the same
    /// mailbox that starts meanwhile is refused as busy and tried again later, and a look
    /// while a poll runs is refused likewise. The login counts towards the server's
    /// LOGIN-DELAY.
    Check {
        /// Connect to the servers and show what is there, changing nothing
        #[arg(long)]
        connect: bool,
        /// With --connect: print JSON, an array with one object per account, for scripts
        #[arg(long, requires = "connect")]
        json: bool,
        /// With --connect: the accounts to look at, as in the config's `name` keys
        #[arg(value_name = "ACCOUNT", requires = "connect")]
        accounts: Vec<String>,
    },
    /// Run in the foreground, polling every account on its schedule, until SIGTERM or SIGINT.
    ///
    /// The config is reloaded when its file or a file it includes changes, or on SIGHUP;
    /// SIGUSR1 polls every account now. Under systemd it reports readiness and status (Type=notify).
    Daemon,
    /// Show each account's health, last poll, errors, mail waiting and next poll, from the
    /// state directory (no daemon needed).
    ///
    /// With an invalid or missing config it shows every status file in the state directory
    /// that config names (or the default one) and says why the config was not used. Exit status: 0 when
    /// every account is healthy, 1 when any is failing or holding mail, 2 when the config is
    /// invalid and no status file could be read.
    Status {
        /// Print JSON for scripts: {"schema": 2, "config", "config_error", "state_dir",
        /// "accounts": [...]}; the fields are in popfetch(1), STATUS
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
/// Exit status of `status` when an account is failing or holding mail: the same as `fetch`'s
/// for a failed account, so a check needs one line (`popfetch status >/dev/null || alert`).
pub const EXIT_UNHEALTHY: u8 = 1;

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
    #[error(
        "no accounts in {}: add an [[account]] table (see popfetch.toml(5))",
        .0.display()
    )]
    NoAccounts(PathBuf),
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
    // `status` reads the state even when the config is broken or missing.
    if let Command::Status { json } = cli.command {
        return status_command(config::find(cli.config.as_deref()), json);
    }
    let path = config::find(cli.config.as_deref()).map_err(UsageError::NoConfig)?;
    if let Command::Check { connect: false, .. } = cli.command {
        return check(&path);
    }
    let config = config::load(&path)?;
    // Like fetchmail's "no mailservers have been specified": nothing to do is a mistake.
    if config.accounts.is_empty() {
        return Err(UsageError::NoAccounts(path));
    }
    match cli.command {
        Command::Check { json, accounts, .. } => {
            let selected = select(&config, &accounts)?;
            Ok(serverinfo(&config, &selected, json).await)
        }
        Command::Fetch { accounts } => {
            let selected = select(&config, &accounts)?;
            Ok(fetch(&config, selected, cli.quiet).await)
        }
        Command::Daemon => Ok(crate::daemon::run(path, config).await),
        Command::Status { .. } => Ok(ExitCode::SUCCESS),
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

/// `popfetch check`: the effective settings on stdout, every finding on stderr; exit status 2
/// when any is an error, so that a script or a package's postinst can trust it.
fn check(path: &std::path::Path) -> Result<ExitCode, UsageError> {
    let (config, findings) = config::check::check(path)?;
    let errors = findings
        .iter()
        .filter(|f| f.severity == config::Severity::Error)
        .count();
    out(&describe(&config, errors, findings.len() - errors));
    for f in &findings {
        eprintln!("popfetch: {f}");
    }
    if errors > 0 {
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    Ok(ExitCode::SUCCESS)
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
    let servers = crate::daemon::limits::ServerLimits::new(config.max_parallel_per_server);
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
        let server = servers.of(&account.host, account.port);
        let stop = stop.clone();
        let progress = progress[i].clone();
        let name = account.name.clone();
        let handle = tasks.spawn(async move {
            // The server's permit first: waiting for a busy provider holds no global slot.
            let _server = server.acquire_owned().await;
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

/// `check --connect`: each account's server, one after the other, as text or as one JSON
/// array (a failed account is an object with its `error`). Exit status 1 when any failed.
async fn serverinfo(config: &Config, accounts: &[Arc<Account>], json: bool) -> ExitCode {
    let stop = CancellationToken::new();
    crate::daemon::signals::stop_on_signal(stop.clone());
    let mut failed = false;
    let mut objects = Vec::new();
    for (i, account) in accounts.iter().enumerate() {
        match crate::probe::serverinfo(account, &config.state_dir, &stop).await {
            Ok(info) if json => objects.push(serde_json::to_value(&info).unwrap_or_default()),
            Ok(info) => out(&format!("{}{}", if i > 0 { "\n" } else { "" }, info.text())),
            Err(e) => {
                failed = true;
                let error = error_chain(&e);
                eprintln!("popfetch: account {}: {error}", account.name);
                if json {
                    objects.push(serde_json::json!({ "account": account.name, "error": error }));
                }
            }
        }
    }
    if json {
        out(&(serde_json::to_string_pretty(&objects).unwrap_or_default() + "\n"));
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

/// The effective settings, TOML-like, secrets redacted, under a line that says whether `check`
/// found `errors` (then the config is invalid) and `warnings`.
pub fn describe(config: &Config, errors: usize, warnings: usize) -> String {
    use std::fmt::Write;
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut s = String::new();
    let mut verdict = format!(
        "{}, {} account(s)",
        if errors == 0 { "valid" } else { "invalid" },
        config.accounts.len()
    );
    for (n, what) in [(errors, "error"), (warnings, "warning")] {
        if n > 0 {
            verdict.push_str(&format!(", {}", plural(n, what)));
        }
    }
    let _ = writeln!(s, "# {}: {verdict}", config.path.display());
    let _ = writeln!(
        s,
        "state_dir = {:?}",
        config.state_dir.display().to_string()
    );
    let _ = writeln!(
        s,
        "interval = {:?}",
        humantime::format_duration(config.interval).to_string()
    );
    let _ = writeln!(s, "max_parallel = {}", config.max_parallel);
    let _ = writeln!(
        s,
        "max_parallel_per_server = {}",
        config.max_parallel_per_server
    );
    let _ = writeln!(
        s,
        "shutdown_timeout = {:?}",
        humantime::format_duration(config.shutdown_timeout).to_string()
    );
    let _ = writeln!(
        s,
        "log_target = {:?}",
        format!("{:?}", config.log_target).to_lowercase()
    );
    if let Some(level) = &config.log_level {
        let _ = writeln!(s, "log_level = {level:?}");
    }
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
    if !a.tls_fingerprint.is_empty() {
        let pins: Vec<String> = a
            .tls_fingerprint
            .iter()
            .map(|f| format!("\"{f}\""))
            .collect();
        let _ = writeln!(s, "tls_fingerprint = [{}]", pins.join(", "));
    }
    let _ = writeln!(s, "tls_min_version = \"{}\"", a.tls_min_version);
    if let Some((cert, key)) = &a.tls_client {
        let _ = writeln!(s, "tls_client_cert = {:?}", cert.display().to_string());
        let _ = writeln!(s, "tls_client_key = {:?}", key.display().to_string());
    }
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
        // The certificate is the credential: `tls_client_cert` and `auth` say it.
        Credentials::Certificate => Ok(()),
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
    if let Some(r) = &a.route {
        describe_route(s, r);
    }
}

/// `[account.route]` as one inline table, map entries in lookup order.
fn describe_route(s: &mut String, r: &crate::config::Route) {
    use crate::config::RouteTo;
    use std::fmt::Write;
    let to = |t: &RouteTo| match t {
        RouteTo::Recipient(r) => format!("{r:?}"),
        RouteTo::Hold => "\"hold\"".into(),
    };
    let mut map: Vec<String> = r
        .addresses
        .iter()
        .map(|(k, v)| format!("{k:?} = {}", to(v)))
        .chain(
            r.domains
                .iter()
                .map(|(k, v)| format!("\"*@{k}\" = {}", to(v))),
        )
        .collect();
    if let Some(v) = &r.any {
        map.push(format!("\"*\" = {}", to(v)));
    }
    let _ = write!(s, "route = {{ envelope_header = {:?}, ", r.envelope_header);
    if let Some(i) = r.envelope_header_index {
        let _ = write!(s, "envelope_header_index = {i}, ");
    }
    let _ = write!(s, "local_domains = {:?}, ", r.local_domains);
    if let Some(d) = r.recipient_delimiter {
        let _ = write!(s, "recipient_delimiter = \"{d}\", ");
    }
    let _ = writeln!(s, "map = {{ {} }} }}", map.join(", "));
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
            "deliver = {{ smtp = {{ {}, to = {:?}{}{}{} }} }}",
            match &t.socket {
                Some(p) => format!("socket = {:?}", p.display().to_string()),
                None => format!(
                    "host = {:?}, port = {}, tls = {:?}",
                    t.host,
                    t.port,
                    format!("{:?}", t.tls).to_lowercase()
                ),
            },
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

/// Where `popfetch status` found what it shows.
struct StatusSource<'a> {
    /// The config file, when one was found.
    config: Option<&'a Path>,
    /// Why the config was not used, when it was not; then every status file is shown.
    config_error: Option<String>,
    state_dir: PathBuf,
}

/// `popfetch status`: each account's status file, by the config's accounts, or every status
/// file in the state directory the config names (or the default one) when the config is
/// invalid: the daemon keeps running on its last good config meanwhile, and a check of its
/// health must not go blind. Exit status: 0 when every account is healthy, [`EXIT_UNHEALTHY`]
/// when any is failing or holding mail, [`EXIT_CONFIG`] only when nothing could be read.
/// `found` is the config file, or every place looked at for one.
fn status_command(
    found: Result<PathBuf, Vec<PathBuf>>,
    json: bool,
) -> Result<ExitCode, UsageError> {
    let path = found.as_ref().ok().map(PathBuf::as_path);
    let loaded = match &found {
        Ok(p) => config::load(p).map_err(UsageError::from),
        Err(tried) => Err(UsageError::NoConfig(tried.clone())),
    };
    let (rows, source) = match loaded {
        Ok(config) if config.accounts.is_empty() => {
            return Err(UsageError::NoAccounts(config.path));
        }
        Ok(config) => {
            let rows = config
                .accounts
                .iter()
                .map(|a| crate::status::read(&config.state_dir, &a.name))
                .collect();
            let source = StatusSource {
                config: path,
                config_error: None,
                state_dir: config.state_dir.clone(),
            };
            (rows, source)
        }
        Err(e) => {
            let state_dir = match path {
                Some(p) => config::state_dir_hint(p),
                None => config::default_state_dir(),
            };
            let Some(state_dir) = state_dir else {
                return Err(e);
            };
            let rows = crate::status::read_all(&state_dir).unwrap_or_default();
            if rows.is_empty() {
                return Err(e);
            }
            let why = error_chain(&e);
            let what = match path {
                Some(p) => format!("the config {} is not valid ({why})", p.display()),
                None => why.clone(),
            };
            eprintln!(
                "popfetch status: warning: {what}; showing every status file in {}",
                state_dir.display()
            );
            let source = StatusSource {
                config: path,
                config_error: Some(why),
                state_dir,
            };
            (rows, source)
        }
    };
    out(&if json {
        status_json(&rows, &source)
    } else {
        status_text(&rows, SystemTime::now())
    });
    let healthy = |r: &crate::status::Status| {
        !matches!(
            r.health(),
            crate::status::health::FAILING | crate::status::health::HOLDING
        )
    };
    Ok(if rows.iter().all(healthy) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_UNHEALTHY)
    })
}

/// `popfetch status --json`: one object with the [`crate::status::SCHEMA`] version, where the
/// rows come from, and per account its status file's fields plus `health`.
fn status_json(rows: &[crate::status::Status], source: &StatusSource) -> String {
    #[derive(serde::Serialize)]
    struct Row<'a> {
        #[serde(flatten)]
        status: &'a crate::status::Status,
        health: &'static str,
    }
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        schema: u32,
        config: Option<&'a Path>,
        config_error: Option<&'a str>,
        state_dir: &'a Path,
        accounts: Vec<Row<'a>>,
    }
    let doc = Doc {
        schema: crate::status::SCHEMA,
        config: source.config,
        config_error: source.config_error.as_deref(),
        state_dir: &source.state_dir,
        accounts: rows
            .iter()
            .map(|status| Row {
                status,
                health: status.health(),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// `popfetch status`'s text: per account its health, then one line per fact.
fn status_text(rows: &[crate::status::Status], now: SystemTime) -> String {
    use std::fmt::Write;
    let date = |t: u64| crate::deliver::rfc5322_date(UNIX_EPOCH + Duration::from_secs(t));
    let when = |t: Option<u64>| t.map_or_else(|| "never".into(), date);
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut s = String::new();
    for r in rows {
        let _ = writeln!(s, "{}: {}", r.account, r.health());
        let Some(last) = r.last_poll else {
            let _ = writeln!(s, "  last poll:      never");
            continue;
        };
        let took = r
            .last_duration_ms
            .map(|ms| match ms {
                0..1000 => format!(" in {ms} ms"),
                _ => format!(" in {:.1} s", ms as f64 / 1000.0),
            })
            .unwrap_or_default();
        let result = r.last_result.as_deref().unwrap_or("-");
        let _ = writeln!(s, "  last poll:      {}, {result}{took}", date(last));
        let _ = writeln!(s, "  last success:   {}", when(r.last_success));
        if r.consecutive_failures > 0 {
            let _ = writeln!(s, "  failures:       {} in a row", r.consecutive_failures);
        }
        let error = |label: &str, e: &Option<String>, at: Option<u64>, s: &mut String| {
            if let Some(e) = e {
                let at = at.map(|t| format!("{}: ", date(t))).unwrap_or_default();
                let _ = writeln!(s, "  {label:<15} {at}{e}");
            }
        };
        error("last error:", &r.last_error, r.last_error_at, &mut s);
        error(
            "previous error:",
            &r.previous_error,
            r.previous_error_at,
            &mut s,
        );
        let _ = write!(
            s,
            "  messages:       {} delivered ({} delivered in total), ",
            r.delivered, r.delivered_total,
        );
        let _ = match r.waiting {
            Some(waiting) => writeln!(
                s,
                "{} failed for now, {} held, {} too large, {waiting} waiting on the server",
                r.failed, r.held, r.too_large,
            ),
            None => writeln!(s, "what waits on the server is known once a poll finishes"),
        };
        if r.held > 0 {
            if let Some(e) = &r.held_error {
                let _ = writeln!(s, "  held because:   {e}");
            }
            let _ = writeln!(
                s,
                "  held:           not tried again until `popfetch retry {}` or a change of \
                 what delivery does",
                r.account
            );
        }
        for short in &r.held_short {
            let _ = writeln!(s, "  held:           {short}");
        }
        if let Some(ends) = r.tls_not_after {
            let days = ends.saturating_sub(now) / 86_400;
            let soon = if ends <= now {
                " (ENDED: the server's administrator must renew it)".to_string()
            } else if r
                .tls_expiry_warned
                .is_some_and(|w| now.saturating_sub(w) < 2 * 86_400)
            {
                // Warned within the last two days: within `tls_expiry_warning`.
                format!(" ({days} days left: soon, renew it)")
            } else {
                format!(" ({days} days left)")
            };
            let _ = writeln!(s, "  certificate:    ends {}{soon}", date(ends));
        }
        let _ = writeln!(s, "  next poll:      {}", next_poll(r, now));
    }
    s
}

/// When and why the daemon polls an account next, as `popfetch status` says it.
fn next_poll(r: &crate::status::Status, now: u64) -> String {
    let reason = match r.next_reason.as_deref() {
        Some("suspended") => {
            return "none: suspended after the server's [SYS/PERM] until the account's config \
                    changes"
                .into();
        }
        None => return "not scheduled (the last poll was not the daemon's)".into(),
        Some("backoff") => format!("backoff after {} failures in a row", r.consecutive_failures),
        Some("auth") => "[AUTH]: the credentials were refused; waiting an hour".into(),
        Some("login-delay") => "the server's LOGIN-DELAY".into(),
        Some(other) => other.to_string(),
    };
    let Some(at) = r.next_poll else {
        return reason;
    };
    let overdue = if at + 60 < now {
        "; overdue: is the daemon running?"
    } else {
        ""
    };
    format!(
        "{} ({reason}){overdue}",
        crate::deliver::rfc5322_date(UNIX_EPOCH + Duration::from_secs(at))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;

    /// A config of one account `a` whose table ends with `src`.
    fn parsed_account(src: &str) -> Config {
        let text = format!(
            "[[account]]\nname = \"a\"\nhost = \"h\"\nuser = \"u\"\ndeliver = {{ maildir = \"/m\" }}\n{src}\n"
        );
        crate::config::parse(std::path::Path::new("/etc/popfetch/config.toml"), &text)
            .expect("a valid config")
    }

    #[test]
    fn check_shows_the_token_source_without_secrets() {
        let c = parsed_account(
            "oauth2 = { provider = \"microsoft\", client_id = \"c1\", client_secret_file = \"/etc/popfetch/ms.secret\", refresh_token_file = \"/var/lib/popfetch/a.rt\" }",
        );
        let shown = describe(&c, 0, 0);
        assert!(
            shown.contains("oauth2 = { provider = \"microsoft\", token_url = \"https://login.microsoftonline.com/common/oauth2/v2.0/token\""),
            "{shown}"
        );
        assert!(
            shown.contains("client_secret_file = \"/etc/popfetch/ms.secret\""),
            "{shown}"
        );
        assert!(shown.contains("flow = \"device\" }"), "{shown}");
        assert!(!shown.contains("password"), "{shown}");
        let c = parsed_account(
            "oauth2_token_command = [\"oama\", \"access\", \"a\"]\noauth2_token_ttl = \"50m\"",
        );
        let shown = describe(&c, 0, 0);
        assert!(
            shown.contains(
                "oauth2_token_command = [\"oama\", \"access\", \"a\"]\noauth2_token_ttl = \"50m\""
            ),
            "{shown}"
        );
    }

    fn polled(next: Option<u64>, reason: &str) -> Status {
        Status {
            account: "a".into(),
            last_poll: Some(1_000),
            last_result: Some("ok".into()),
            next_poll: next,
            next_reason: Some(reason.into()),
            ..Status::default()
        }
    }

    #[test]
    fn the_next_poll_says_why_and_when_it_is_overdue() {
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        let text = status_text(&[polled(Some(1_300), "interval")], at(1_100));
        assert!(
            text.contains("next poll:      Thu, 01 Jan 1970 00:21:40 +0000 (interval)\n"),
            "{text}"
        );
        // Long past its time: no daemon is polling it.
        let text = status_text(&[polled(Some(1_300), "interval")], at(2_000));
        assert!(
            text.contains("(interval); overdue: is the daemon running?"),
            "{text}"
        );
        let text = status_text(&[polled(None, "suspended")], at(1_100));
        assert!(
            text.contains("none: suspended after the server's [SYS/PERM]"),
            "{text}"
        );
        let never = Status {
            account: "b".into(),
            ..Status::default()
        };
        assert_eq!(
            status_text(&[never], at(0)),
            "b: unknown\n  last poll:      never\n"
        );
    }
}
