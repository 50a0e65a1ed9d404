//! `popfetch check`: what would fail at the first fetch, short of the network, found all at once.
//! [`load`](super::load) stays what the daemon's reload needs (the text, the trust rule, the
//! `ca_file`s readable); this pass also looks at every file and program the config names, as
//! the user who runs it: secret files there, readable and safe ([`crate::trust`], the same
//! rule as `load`), each `ca_file` holding a certificate, each Maildir and mbox writable or
//! creatable, each program there and executable, the state directory usable and owned right.

use std::ffi::CString;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::validate::{
    ConfigError, ca_file_problems, ca_files, defaults_key_position, key_position, parse_main,
    permission_problems, read, secret_files,
};
use super::{Account, Config, Credentials, Deliver, OAuth2Source, PasswordSource};
use std::collections::HashMap;

/// How much a finding matters: an error fails the first fetch, a warning does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One thing `check` found, placed like a config error (file, line, account, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub error: ConfigError,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{what}: {}", self.error)
    }
}

/// Reads and validates the config at `path` (an error there ends the check, as it ends `load`),
/// then returns it with everything found about the files and programs it names.
pub fn check(path: &Path) -> Result<(Config, Vec<Finding>), ConfigError> {
    let (text, meta) = read(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        position: None,
        account: None,
        key: None,
        message: format!("cannot read it: {e}"),
    })?;
    let (mut config, mut main) = parse_main(path, &text)?;
    let included = super::include::read_all(path, &text, &mut config, &mut main)?;
    let mut f = Findings {
        path,
        text: &text,
        list: Vec::new(),
        files: HashMap::new(),
        included: &included,
    };
    for (i, inc) in config.included.iter().enumerate() {
        for a in &inc.accounts {
            f.files.insert(a.name.clone(), i);
        }
    }
    if config.accounts.is_empty() {
        f.error(
            None,
            "account",
            "no accounts: add an [[account]] table (see popfetch.toml(5)); fetch and daemon \
             refuse to run without one"
                .into(),
        );
    }
    let own = &config.accounts[..config.accounts.len()
        - config
            .included
            .iter()
            .map(|i| i.accounts.len())
            .sum::<usize>()];
    for e in permission_problems(path, &meta, own)
        .into_iter()
        .chain(ca_file_problems(path, own))
    {
        f.push(Severity::Error, e);
    }
    for (inc, (file, _, meta)) in config.included.iter().zip(&included) {
        for e in permission_problems(file, meta, &inc.accounts)
            .into_iter()
            .chain(ca_file_problems(file, &inc.accounts))
        {
            f.push(Severity::Error, e);
        }
    }
    for (account, key, file) in ca_files(&config.accounts) {
        if let Some(why) = certificates(file) {
            f.error(Some(account), key, why);
        }
    }
    state_dir(&mut f, &config.state_dir);
    for a in &config.accounts {
        account(&mut f, a);
    }
    // In the order of the files, as a reader goes through them.
    let order: HashMap<&Path, usize> = std::iter::once(path)
        .chain(included.iter().map(|(p, _, _)| p.as_path()))
        .enumerate()
        .map(|(i, p)| (p, i))
        .collect();
    f.list
        .sort_by_key(|f| (order.get(f.error.path.as_path()).copied(), f.error.position));
    Ok((config, f.list))
}

struct Findings<'a> {
    path: &'a Path,
    text: &'a str,
    list: Vec<Finding>,
    /// The included file (its index in `included`) of each account not in the main file.
    files: HashMap<String, usize>,
    /// Each included file, its text and metadata.
    included: &'a [(PathBuf, String, std::fs::Metadata)],
}

impl Findings<'_> {
    fn push(&mut self, severity: Severity, mut error: ConfigError) {
        let mut text = self.text;
        let mut included = false;
        if let Some(i) = error.account.as_ref().and_then(|a| self.files.get(a))
            && let Some((file, t, _)) = self.included.get(*i)
        {
            error.path = file.clone();
            text = t;
            included = true;
        }
        if error.position.is_none()
            && let Some(key) = error.key.as_deref()
        {
            error.position = key_position(text, error.account.as_deref(), key);
            // Not in the account's own table: taken from the main file's `[defaults]`.
            if error.position.is_none()
                && included
                && let Some(at) = defaults_key_position(self.text, key)
            {
                error.path = self.path.to_path_buf();
                error.position = Some(at);
            }
        }
        // The trust rule and this pass may see one file twice (a refused mode): say it once.
        if !self.list.iter().any(|f| f.error == error) {
            self.list.push(Finding { severity, error });
        }
    }

    fn found(&mut self, severity: Severity, account: Option<&str>, key: &str, message: String) {
        let error = ConfigError {
            path: self.path.to_path_buf(),
            position: None,
            account: account.map(str::to_string),
            key: Some(key.to_string()),
            message,
        };
        self.push(severity, error);
    }

    fn error(&mut self, account: Option<&str>, key: &str, message: String) {
        self.found(Severity::Error, account, key, message);
    }

    fn warning(&mut self, account: Option<&str>, key: &str, message: String) {
        self.found(Severity::Warning, account, key, message);
    }
}

fn account(f: &mut Findings, a: &Account) {
    let name = Some(a.name.as_str());
    for (key, what, file) in secret_files(a) {
        match std::fs::File::open(file) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let fix = if key == "oauth2.refresh_token_file" {
                    format!("run `popfetch oauth2-authorize {}` to create it", a.name)
                } else {
                    format!(
                        "write the secret on its first line (`chmod 600 {}`), or fix the path",
                        file.display()
                    )
                };
                f.error(
                    name,
                    key,
                    format!("{what} {} does not exist; {fix}", file.display()),
                );
            }
            Err(e) => f.error(
                name,
                key,
                format!("cannot read {what} {}: {e}", file.display()),
            ),
        }
    }
    let mut commands: Vec<(&str, &[String])> = Vec::new();
    match &a.credentials {
        Credentials::Password(PasswordSource::Command(argv)) => {
            commands.push(("password_command", argv));
        }
        Credentials::OAuth2(OAuth2Source::Command { argv, .. }) => {
            commands.push(("oauth2_token_command", argv));
        }
        _ => {}
    }
    match &a.deliver {
        Deliver::Maildir(p) => maildir(f, name, "deliver.maildir", p),
        Deliver::Mbox(p) => mbox(f, name, p),
        Deliver::Mda(argv) => commands.push(("deliver.mda", argv)),
        Deliver::Smtp(s) => {
            if let Some((_, PasswordSource::Command(argv))) = &s.credentials {
                commands.push(("deliver.smtp.password_command", argv));
            }
            if let Some(p) = &s.socket {
                socket(f, name, "deliver.smtp.socket", p, "SMTP server");
            }
        }
        Deliver::Lmtp(l) => {
            if let crate::config::LmtpAt::Socket(p) = &l.at {
                socket(
                    f,
                    name,
                    "deliver.lmtp.socket",
                    p,
                    "LMTP server (e.g. dovecot-lmtpd)",
                );
            }
        }
    }
    if let Some(q) = &a.quarantine {
        maildir(f, name, "quarantine", q);
    }
    for (key, argv) in commands {
        if let Some(program) = argv.first()
            && let Some(why) = program_problem(program)
        {
            f.error(name, key, why);
        }
    }
}

/// Whether `file` holds at least one PEM certificate; `None` when it does, or when it cannot
/// be read (said by `load`'s check already).
fn certificates(file: &Path) -> Option<String> {
    let pem = std::fs::read(file).ok()?;
    match openssl::x509::X509::stack_from_pem(&pem) {
        Ok(certs) if !certs.is_empty() => None,
        _ => Some(format!(
            "{} holds no certificate: it must be a PEM file of one or more \
             `-----BEGIN CERTIFICATE-----` blocks (remove the key to use the system's trust store)",
            file.display()
        )),
    }
}

/// A warning when `path` is not a socket: the server may just not run yet, and a fetch then
/// leaves the mail for later.
fn socket(f: &mut Findings, name: Option<&str>, key: &str, path: &Path, server: &str) {
    if !std::fs::symlink_metadata(path)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
    {
        f.warning(
            name,
            key,
            format!(
                "{} is not a socket (yet): start the {server} or fix the path",
                path.display()
            ),
        );
    }
}

/// A Maildir: a writable directory (and writable `tmp`, `new`, `cur` where they exist), or a
/// path whose nearest existing ancestor lets the first delivery create it.
fn maildir(f: &mut Findings, account: Option<&str>, key: &str, root: &Path) {
    match std::fs::metadata(root) {
        Ok(m) if !m.is_dir() => f.error(
            account,
            key,
            format!(
                "{} is not a directory: a Maildir is a directory holding tmp/, new/ and cur/; \
                 point `{key}` at a directory, or move the file away",
                root.display()
            ),
        ),
        Ok(_) => {
            // The first of them that fails is enough to say.
            for sub in ["", "tmp", "new", "cur"] {
                let dir = match sub {
                    "" => root.to_path_buf(),
                    _ => root.join(sub),
                };
                let why = match std::fs::metadata(&dir) {
                    Ok(m) if !m.is_dir() => format!("{} is not a directory", dir.display()),
                    Ok(_) if !may(&dir, libc::W_OK | libc::X_OK) => not_writable(&dir),
                    _ => continue,
                };
                f.error(account, key, why);
                break;
            }
        }
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            creatable(f, account, key, root, "the first delivery")
        }
        Err(e) => f.error(
            account,
            key,
            format!("cannot look at {}: {e}", root.display()),
        ),
    }
}

/// An mbox: a writable file, or one its directory lets the first delivery create.
fn mbox(f: &mut Findings, account: Option<&str>, file: &Path) {
    let key = "deliver.mbox";
    match std::fs::metadata(file) {
        Ok(m) if m.is_dir() => f.error(
            account,
            key,
            format!(
                "{} is a directory; an mbox is one file (for a directory of mail, use \
                 `maildir`)",
                file.display()
            ),
        ),
        Ok(_) if !may(file, libc::W_OK) => f.error(account, key, not_writable(file)),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let dir = parent(file);
            if dir.is_dir() && may(&dir, libc::W_OK | libc::X_OK) {
                f.warning(
                    account,
                    key,
                    format!(
                        "{} does not exist yet; the first delivery creates it",
                        file.display()
                    ),
                );
            } else {
                f.error(
                    account,
                    key,
                    format!(
                        "{} does not exist and its directory {} is not a directory the user \
                         running popfetch ({}) may write, so it cannot be created",
                        file.display(),
                        dir.display(),
                        me()
                    ),
                );
            }
        }
        Err(e) => f.error(
            account,
            key,
            format!("cannot look at {}: {e}", file.display()),
        ),
    }
}

/// The state directory: owned and writable as [`crate::trust::state_dir`] says, or creatable.
fn state_dir(f: &mut Findings, dir: &Path) {
    let key = "state_dir";
    match std::fs::metadata(dir) {
        Ok(m) => {
            if let Err(e) = crate::trust::state_dir(dir, &m) {
                f.error(None, key, e.to_string());
            } else if !may(dir, libc::W_OK | libc::X_OK) {
                f.error(None, key, not_writable(dir));
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            creatable(f, None, key, dir, "the first fetch")
        }
        Err(e) => f.error(None, key, format!("cannot look at {}: {e}", dir.display())),
    }
}

/// A directory that does not exist: a warning when its nearest existing ancestor lets `who`
/// create it, else an error.
fn creatable(f: &mut Findings, account: Option<&str>, key: &str, path: &Path, who: &str) {
    let mut ancestor = parent(path);
    while !ancestor.exists() {
        match ancestor.parent() {
            Some(p) if !p.as_os_str().is_empty() => ancestor = p.to_path_buf(),
            _ => break,
        }
    }
    if ancestor.is_dir() && may(&ancestor, libc::W_OK | libc::X_OK) {
        f.warning(
            account,
            key,
            format!(
                "{} does not exist yet; {who} creates it (in {})",
                path.display(),
                ancestor.display()
            ),
        );
    } else {
        f.error(
            account,
            key,
            format!(
                "{} does not exist, and {} is not a directory the user running popfetch ({}) \
                 may write, so it cannot be created; create it, or fix the path",
                path.display(),
                ancestor.display(),
                me()
            ),
        );
    }
}

/// Why `program` (a command's first word) cannot be run, if it cannot: a path must name an
/// executable file; a bare name must be found on `PATH`, as it is looked up when it runs.
fn program_problem(program: &str) -> Option<String> {
    if program.contains('/') {
        let p = Path::new(program);
        return match std::fs::metadata(p) {
            Err(e) if e.kind() == ErrorKind::NotFound => Some(format!(
                "{program} does not exist; install it or fix the path"
            )),
            Err(e) => Some(format!("cannot look at {program}: {e}")),
            Ok(m) if !m.is_file() => Some(format!("{program} is not a file")),
            Ok(_) if !may(p, libc::X_OK) => Some(format!(
                "{program} is not executable by the user running popfetch ({}); \
                 run `chmod +x {program}`",
                me()
            )),
            Ok(_) => None,
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| {
        let p = dir.join(program);
        p.is_file() && may(&p, libc::X_OK)
    });
    (!found).then(|| {
        format!(
            "`{program}` is not found in any directory of PATH; install it, or write its full \
             path"
        )
    })
}

/// Whether the user running popfetch may access `path` as `mode` says (`faccessat` with the
/// effective ids, as the delivery will).
fn may(path: &Path, mode: libc::c_int) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; faccessat only
    // reads it.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

fn not_writable(path: &Path) -> String {
    format!(
        "{} is not writable by the user running popfetch ({}); run popfetch as its owner, or \
         `chown {} {}`",
        path.display(),
        me(),
        me(),
        path.display()
    )
}

fn me() -> String {
    crate::trust::user_name(crate::trust::euid())
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
