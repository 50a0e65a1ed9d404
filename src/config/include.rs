//! `include = ["conf.d/*.toml"]`: accounts kept in files of their own, one per user if an
//! integrator likes, so that a tool adds or changes one without rewriting the whole config.
//!
//! An included file holds `[[account]]` tables and nothing else; each account takes the main
//! file's `[defaults]` and `interval`, and relative paths are the main file's directory's. The
//! files are read in a fixed order: the patterns as written, the files each one matches sorted
//! by name. A pattern with a wildcard (`*`, `?`, `[…]`, in its last component only) may match
//! nothing; a path without one must exist. No directory is read by convention: only what
//! `include` names.
//!
//! [`load`] refuses the whole config at the first error, as `fetch`, `check` and a start need.
//! [`load_keeping`] is the daemon's reload: an included file that fails (its text, its trust,
//! or an account it shares with another file) keeps the accounts it had, and the other files'
//! changes apply; a file whose text and main file did not change is not parsed again.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::validate::{
    ConfigError, Main, ca_file_problems, expand, hash, key_position, parse_included, parse_main,
    permission_problems, read,
};
use super::{Account, Config};

/// Most files the patterns may name together: one per account for ten times the accounts a
/// daemon is measured with.
pub const MAX_FILES: usize = 100_000;
/// Largest included file: a file per account is a few hundred bytes; a file of accounts
/// thousands of them.
pub const MAX_FILE_SIZE: u64 = 16 << 20;

/// One file `include` named, and the accounts it gave.
#[derive(Debug, Clone)]
pub struct Included {
    pub path: PathBuf,
    /// A digest of its text; `None` when the reload refused it and it holds its previous
    /// accounts.
    pub hash: Option<u64>,
    pub accounts: Vec<Arc<Account>>,
    /// The line of each account's name, for an error that names two files.
    lines: Vec<usize>,
}

/// A config read again by the daemon.
#[derive(Debug)]
pub struct Reloaded {
    pub config: Config,
    /// Each included file refused, with why; it kept its previous accounts.
    pub refused: Vec<ConfigError>,
}

impl Config {
    /// Whether `other` was read from the same texts: same main file, same included files.
    pub fn same_files(&self, other: &Config) -> bool {
        self.hash == other.hash
            && self.included.len() == other.included.len()
            && self
                .included
                .iter()
                .zip(&other.included)
                .all(|(a, b)| a.path == b.path && a.hash.is_some() && a.hash == b.hash)
    }
}

/// Reads and validates the config file at `path` and the files it includes, and checks that
/// each of them and every file they name that holds a secret may be trusted (see
/// [`crate::trust`]). The first error refuses it all.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, None).map(|r| r.config)
}

/// [`load`] for a reload of `previous`: an error in the main file refuses it all; an included
/// file that fails keeps its accounts of `previous`, and is in [`Reloaded::refused`].
pub fn load_keeping(path: &Path, previous: &Config) -> Result<Reloaded, ConfigError> {
    load_with(path, Some(previous))
}

fn error(path: &Path, position: Option<(usize, usize)>, message: String) -> ConfigError {
    ConfigError {
        path: path.to_path_buf(),
        position,
        account: None,
        key: None,
        message,
    }
}

/// The trust rule and the `ca_file`s for `accounts`, written in `path` (text `text`): the
/// first problem, placed on the key that names the file.
fn check_files(
    path: &Path,
    text: &str,
    meta: &std::fs::Metadata,
    accounts: &[Arc<Account>],
) -> Result<(), ConfigError> {
    let first = permission_problems(path, meta, accounts)
        .into_iter()
        .chain(ca_file_problems(path, accounts))
        .next();
    match first {
        Some(mut e) => {
            if e.position.is_none()
                && let Some(key) = e.key.as_deref()
            {
                e.position = key_position(text, e.account.as_deref(), key);
            }
            Err(e)
        }
        None => Ok(()),
    }
}

fn load_with(path: &Path, previous: Option<&Config>) -> Result<Reloaded, ConfigError> {
    let (text, meta) = read(path).map_err(|e| error(path, None, format!("cannot read it: {e}")))?;
    let (mut config, mut main) = parse_main(path, &text)?;
    check_files(path, &text, &meta, &config.accounts)?;
    let files = files(path, &main.include)?;
    let before: HashMap<&Path, &Included> = previous
        .map(|p| p.included.iter().map(|i| (i.path.as_path(), i)).collect())
        .unwrap_or_default();
    // Not parsed again: a file whose text is the same, under the same main file.
    let reuse = previous.is_some_and(|p| p.hash == config.hash);
    let outcomes: Vec<Result<Included, ConfigError>> = files
        .iter()
        .map(|file| {
            let (t, meta) = read_included(file)?;
            let h = hash(t.as_bytes());
            if reuse
                && let Some(old) = before.get(file.as_path())
                && old.hash == Some(h)
            {
                check_files(file, &t, &meta, &old.accounts)?;
                return Ok((*old).clone());
            }
            let (accounts, lines) = parse_included(file, &t, (path, &text), &main)?;
            check_files(file, &t, &meta, &accounts)?;
            Ok(Included {
                path: file.clone(),
                hash: Some(h),
                accounts,
                lines,
            })
        })
        .collect();
    // A reload takes the files that did not change first, so that an account a changed file
    // takes from another is refused in the changed file.
    let unchanged = |i: usize| match &outcomes[i] {
        Ok(new) => before
            .get(files[i].as_path())
            .is_some_and(|old| old.accounts == new.accounts),
        Err(_) => false,
    };
    let mut order: Vec<usize> = (0..files.len()).collect();
    if previous.is_some() {
        order.sort_by_key(|&i| !unchanged(i));
    }
    let mut taken: Vec<Option<Included>> = vec![None; files.len()];
    let mut refused = Vec::new();
    for (i, outcome) in order.into_iter().map(|i| (i, &outcomes[i])) {
        let failed = match outcome {
            Ok(new) => match admit(&mut main, new) {
                Ok(()) => {
                    taken[i] = Some(new.clone());
                    continue;
                }
                Err(e) => e,
            },
            Err(e) => e.clone(),
        };
        if previous.is_none() {
            return Err(failed);
        }
        // Its previous accounts, as far as no other file has taken them meanwhile.
        let mut kept = Included {
            path: files[i].clone(),
            hash: None,
            accounts: Vec::new(),
            lines: Vec::new(),
        };
        if let Some(old) = before.get(files[i].as_path()) {
            let f = main.seen.file(&old.path);
            for (a, line) in old.accounts.iter().zip(&old.lines) {
                if main.seen.conflict(a, Some(f)).is_none() {
                    main.seen.insert(a, f, *line);
                    kept.accounts.push(a.clone());
                    kept.lines.push(*line);
                }
            }
        }
        taken[i] = Some(kept);
        refused.push(failed);
    }
    for inc in taken.into_iter().flatten() {
        config.accounts.extend(inc.accounts.iter().cloned());
        config.included.push(inc);
    }
    Ok(Reloaded { config, refused })
}

/// For `check`: the included files of the main file `path` (text `text`) read, their accounts
/// added to `config`, each file's text and metadata returned; the first error refuses it all.
/// The trust rule is left to the caller, which reports every finding.
pub(super) fn read_all(
    path: &Path,
    text: &str,
    config: &mut Config,
    main: &mut Main,
) -> Result<Vec<(PathBuf, String, std::fs::Metadata)>, ConfigError> {
    let mut read = Vec::new();
    for file in files(path, &main.include)? {
        let (t, meta) = read_included(&file)?;
        let (accounts, lines) = parse_included(&file, &t, (path, text), main)?;
        let inc = Included {
            path: file.clone(),
            hash: Some(hash(t.as_bytes())),
            accounts,
            lines,
        };
        admit(main, &inc)?;
        config.accounts.extend(inc.accounts.iter().cloned());
        config.included.push(inc);
        read.push((file, t, meta));
    }
    Ok(read)
}

/// Takes the accounts of `new`, or refuses the file at its first account that another file
/// already has.
fn admit(main: &mut Main, new: &Included) -> Result<(), ConfigError> {
    let f = main.seen.file(&new.path);
    for (a, line) in new.accounts.iter().zip(&new.lines) {
        if let Some((key, message)) = main.seen.conflict(a, Some(f)) {
            return Err(ConfigError {
                path: new.path.clone(),
                position: Some((*line, 1)),
                account: Some(a.name.clone()),
                key: Some(key.into()),
                message,
            });
        }
    }
    for (a, line) in new.accounts.iter().zip(&new.lines) {
        main.seen.insert(a, f, *line);
    }
    Ok(())
}

/// An included file's text, at most [`MAX_FILE_SIZE`], and its metadata.
fn read_included(path: &Path) -> Result<(String, std::fs::Metadata), ConfigError> {
    let cannot = |e: std::io::Error| error(path, None, format!("cannot read it: {e}"));
    let f = std::fs::File::open(path).map_err(cannot)?;
    let meta = f.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(error(path, None, "not a regular file".into()));
    }
    if meta.len() > MAX_FILE_SIZE {
        return Err(error(
            path,
            None,
            format!(
                "larger than {} MiB; split its accounts over several files",
                MAX_FILE_SIZE >> 20
            ),
        ));
    }
    let mut text = String::new();
    f.take(MAX_FILE_SIZE + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    Ok((text, meta))
}

/// The files the patterns name, in order, each once; the main file itself is left out (a
/// pattern such as `*.toml` next to it would otherwise match it).
fn files(main: &Path, patterns: &[(String, (usize, usize))]) -> Result<Vec<PathBuf>, ConfigError> {
    let base = main.parent().unwrap_or(Path::new("."));
    let itself = std::fs::canonicalize(main).ok();
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    for (pattern, at) in patterns {
        let fail = |message: String| ConfigError {
            path: main.to_path_buf(),
            position: Some(*at),
            account: None,
            key: Some("include".into()),
            message,
        };
        for file in matches(&expand(base, Path::new(pattern))).map_err(fail)? {
            if file.as_path() == main
                || (file.file_name() == main.file_name()
                    && itself.is_some()
                    && std::fs::canonicalize(&file).ok() == itself)
            {
                continue;
            }
            if seen.insert(file.clone()) {
                all.push(file);
            }
        }
        if all.len() > MAX_FILES {
            return Err(fail(format!(
                "more than {MAX_FILES} files; put several accounts in one file"
            )));
        }
    }
    Ok(all)
}

fn has_wildcard(s: &[u8]) -> bool {
    s.iter().any(|c| matches!(c, b'*' | b'?' | b'['))
}

/// The files `pattern` names: itself when it has no wildcard (it must be there), else the
/// files of its directory whose names match its last component, sorted.
fn matches(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let name = pattern
        .file_name()
        .map(|n| n.as_bytes())
        .unwrap_or_default();
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    if has_wildcard(dir.as_os_str().as_bytes()) {
        return Err(format!(
            "`{}`: a wildcard may only be in the file name, not in a directory",
            pattern.display()
        ));
    }
    if !has_wildcard(name) {
        return match std::fs::metadata(pattern) {
            Ok(m) if m.is_file() => Ok(vec![pattern.to_path_buf()]),
            Ok(_) => Err(format!("{} is not a regular file", pattern.display())),
            Err(e) => Err(format!("cannot read {}: {e}", pattern.display())),
        };
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the directory {}: {e}", dir.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| format!("cannot read the directory {}: {e}", dir.display()))?;
        let n = entry.file_name();
        // As in the shell, a wildcard does not match a leading dot: a ConfigMap volume's
        // `..data` and `..2026_…` directories, editors' hidden files.
        if n.as_bytes().starts_with(b".") && !name.starts_with(b".") {
            continue;
        }
        if !glob(name, n.as_bytes()) {
            continue;
        }
        let path = dir.join(&n);
        // Through symlinks: a ConfigMap's names are links into `..data`.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            found.push(path);
        }
        if found.len() > MAX_FILES {
            break;
        }
    }
    found.sort();
    Ok(found)
}

/// Whether `name` matches the shell pattern `pattern`: `*` any run, `?` one byte, `[abc]`,
/// `[a-z]`, `[!abc]` one of (or none of) a set.
pub fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the name position it now stands for up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => class(&pattern[p..], name[n])
                .map(|(ok, len)| (ok, p + len))
                .and_then(|(ok, next)| ok.then_some(next)),
            Some(c) if *c == name[n] => Some(p + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                n += 1;
            }
            (None, Some((sp, sn))) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// A `[…]` class at the start of `pattern`: whether `c` is in it and the class's length.
/// `None` when it is not closed (then it matches nothing).
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut found = false;
    let mut first = true;
    loop {
        let lo = *pattern.get(i)?;
        if lo == b']' && !first {
            return Some((found != negate, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|h| *h != b']') {
            let hi = pattern[i + 2];
            found |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            found |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn shell_patterns() {
        for (p, n, want) in [
            ("*.toml", "alice.toml", true),
            ("*.toml", "alice.toml.bak", false),
            ("*.toml", ".toml", true),
            ("a?c.toml", "abc.toml", true),
            ("a?c.toml", "ac.toml", false),
            ("[ab]*.toml", "bob.toml", true),
            ("[!ab]*.toml", "bob.toml", false),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("*a*b", "xaxxb", true),
            ("*a*b", "xaxxbc", false),
            ("**", "", true),
            ("[ab", "a", false),
            ("user-*.toml", "user-1.toml", true),
        ] {
            assert_eq!(glob(p.as_bytes(), n.as_bytes()), want, "{p} {n}");
        }
    }
}
