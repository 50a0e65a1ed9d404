//! Whether a file or directory popfetch reads may be trusted, decided from its owner and mode as
//! OpenSSH decides for `~/.ssh`. Two rules:
//!
//! - The state directory and the files in it ([`state_dir`], [`state_file`]): owned by the
//!   running user, writable by no one else, and (a file) a regular file, not a symlink. Whoever
//!   can write the state can make popfetch send `DELE` for mail it never delivered.
//! - A file that holds a secret or names a command ([`secret_file`]): the config, a
//!   `password_file`, OAuth2 client secret and refresh token files. Owned by the running user or
//!   root, writable by no one else; one holding a secret is also not readable by others (group
//!   may read: the package's `root:popfetch` 0640 config stays valid). A config that names a
//!   command (`mda`, `password_command`, `oauth2_token_command`) counts as holding a secret; one
//!   with neither may be readable by anyone, but is never writable by others.
//!
//! Every refusal names the file, its owner and mode, and the command that fixes it.

use std::fmt::Write;
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A path popfetch refuses to trust, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {}: {problem}; {fix}", self.what, path.display())]
pub struct Untrusted {
    pub what: &'static str,
    pub path: PathBuf,
    pub problem: String,
    pub fix: String,
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid takes no argument, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// The name of user `uid`, from `/etc/passwd`, or `#uid` (a form `sudo -u` and `chown` accept).
pub fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                f.next()?;
                (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| format!("#{uid}"))
}

fn describe(meta: &Metadata) -> String {
    format!(
        "owner {} (uid {}), mode {:04o}",
        user_name(meta.uid()),
        meta.uid(),
        meta.permissions().mode() & 0o7777
    )
}

fn untrusted(
    what: &'static str,
    path: &Path,
    meta: &Metadata,
    why: &str,
    fix: String,
) -> Untrusted {
    Untrusted {
        what,
        path: path.to_path_buf(),
        problem: format!("{why} ({})", describe(meta)),
        fix,
    }
}

/// Checks the state directory (`meta` from `stat`, following a symlink to it).
pub fn state_dir(path: &Path, meta: &Metadata) -> Result<(), Untrusted> {
    state_entry("state directory", path, meta, true, euid())
}

/// Checks a file in the state directory (`meta` from the opened file, or from `lstat`).
pub fn state_file(path: &Path, meta: &Metadata) -> Result<(), Untrusted> {
    state_entry("state file", path, meta, false, euid())
}

fn state_entry(
    what: &'static str,
    path: &Path,
    meta: &Metadata,
    dir: bool,
    me: u32,
) -> Result<(), Untrusted> {
    let shown = path.display();
    if dir && !meta.is_dir() {
        return Err(untrusted(
            what,
            path,
            meta,
            "not a directory",
            "set `state_dir` to a directory".into(),
        ));
    }
    if !dir && !meta.file_type().is_file() {
        return Err(untrusted(
            what,
            path,
            meta,
            "not a regular file",
            format!("remove it (`rm {shown}`) if you did not put it there"),
        ));
    }
    if meta.uid() != me {
        let owner = user_name(meta.uid());
        let fix = if me == 0 {
            format!(
                "it belongs to {owner}: run popfetch as that user, e.g. `sudo -u {owner} popfetch \
                 ...`; files a root run created there would lock that user out"
            )
        } else {
            let mut s = "use a `state_dir` of your own, or have root run `chown".to_string();
            if dir {
                s.push_str(" -R");
            }
            let _ = write!(s, " {} {shown}`", user_name(me));
            s
        };
        return Err(untrusted(
            what,
            path,
            meta,
            &format!("not owned by the user running popfetch ({})", user_name(me)),
            fix,
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(untrusted(
            what,
            path,
            meta,
            "writable by group or others, who could make popfetch delete mail it never delivered",
            format!("run `chmod go-w {shown}`"),
        ));
    }
    Ok(())
}

/// Checks a file that holds a secret (`secret`) or names the programs popfetch runs.
pub fn secret_file(
    what: &'static str,
    path: &Path,
    meta: &Metadata,
    secret: bool,
) -> Result<(), Untrusted> {
    secret_entry(what, path, meta, secret, euid())
}

fn secret_entry(
    what: &'static str,
    path: &Path,
    meta: &Metadata,
    secret: bool,
    me: u32,
) -> Result<(), Untrusted> {
    let shown = path.display();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(untrusted(
            what,
            path,
            meta,
            &format!(
                "owned by neither the user running popfetch ({}) nor root, so its owner \
                 controls what popfetch does",
                user_name(me)
            ),
            format!("run `chown {} {shown}`", user_name(me)),
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(untrusted(
            what,
            path,
            meta,
            "writable by group or others, who could change what popfetch runs or logs in with",
            format!("run `chmod go-w {shown}`"),
        ));
    }
    if secret && mode & 0o004 != 0 {
        return Err(untrusted(
            what,
            path,
            meta,
            "holds a secret or names a command but is readable by others",
            format!("run `chmod o-r {shown}` (or `chmod 600 {shown}`)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
