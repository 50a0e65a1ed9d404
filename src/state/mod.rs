//! The per-mailbox UIDL store: which messages were delivered, durably, crash-safe and locked.
//!
//! One append-only journal per mailbox ([`Mailbox`]: server, port, user), `STATE_DIR/STEM.uidls`
//! with `STEM` = `USER@HOST:PORT` (see [`Mailbox::file_stem`]), guarded by an exclusive lock on
//! `STATE_DIR/STEM.lock` for as long as the [`AccountState`] lives. State follows the mailbox, not
//! the account's name: a renamed account keeps what it fetched, and two accounts on one mailbox
//! never poll it at once. `STATE_DIR/ACCOUNT.mailbox` remembers the stem an account used last, so
//! that a new host name or port of the same mailbox is refused with what to do rather than
//! fetching a kept mailbox again; a journal of the name-keyed layout (`ACCOUNT.uidls`) is moved
//! to the mailbox's name when first opened.
//!
//! Nothing here is trusted that someone else could have written: the directory and every file
//! are checked with [`crate::trust`] (ours, writable by no one else, regular files opened with
//! `O_NOFOLLOW`), and temporary files are created with `O_EXCL|O_NOFOLLOW`.
//!
//! Records, one per line (their text form is `record::Record`'s alone):
//!
//! ```text
//! popfetch-uidls 4          header: format version
//! P <uidl> <key>            delivery under way; <key> lets the backend tell whether it finished
//! D <uidl> <time>           delivered at <time> (Unix seconds; format 1 had no time): never
//!                           fetch again; DELE it in delete mode, or once `delete_after` passed
//! F <uidl>                  forget: gone from the server, a delivery that never finished, or
//!                           a held message released
//! H <uidl>                  held: the backend refused it for good; leave it on the server and
//!                           do not try again until the account's delivery settings change
//!                           or `popfetch retry` releases it
//! C <fingerprint>           the delivery settings the held records were made under: `d1-` and
//!                           32 hex digits (older popfetch wrote 16 hex digits, a hash of the
//!                           whole account, taken over once: see `set_fingerprint`)
//! O <uidl>                  over `max_size`, left on the server and reported (once)
//! M <time> <size> <digest>  a message with this Message-ID digest and LIST size was delivered
//!                           at <time> (for `dedupe_message_id`; kept for [`DEDUPE_WINDOW`])
//! R <uidl> <recipient>      (format 3) <recipient> has the message though another recipient
//!                           refused it (LMTP's replies per recipient): a retry leaves it out;
//!                           dropped with the message's `D` or `F`, kept when `H` is released
//! T <time>                  (format 4) the bare UIDL lines that follow were delivered at <time>
//! <uidl>                    (format 4) a line without a space: delivered at the last `T`'s time,
//!                           as a `D` line says; a compaction writes the deliveries so, grouped
//!                           by time, one UIDL a line: the size of a plain UIDL list
//! ```
//!
//! A journal of an older format is read as it is and rewritten in the current one at once; a
//! format 1 journal's deliveries are dated to the upgrade: an age counted from then is never
//! older than the truth. Format 3 only adds `R`; an older popfetch refuses a format 3 journal
//! by its header ("upgrade popfetch") rather than misreading an `R` as corruption; format 4 adds
//! `T` and bare UIDL lines the same way.
//!
//! Appends are buffered and reach the disk at [`AccountState::sync`] (write + fsync). A crash can
//! only cut the last record short; such a torn tail (no final newline, or NUL bytes the file
//! system left behind) is ignored on load, since nothing acted on a record before it was synced.
//! Anything else that does not parse is corruption and stops the account with an error that says
//! what to do: silently starting afresh would fetch a whole kept mailbox again. The journal is
//! rewritten as its live set alone (a `P` its `D` superseded, a `D` its `F` forgot, are dropped)
//! by atomic replace (temp file, fsync, rename, fsync of the directory): within a poll when it
//! has grown past twice the live set, and at the poll's end ([`AccountState::finish`]) when the
//! dead part is over an eighth of it; a crash leaves the old journal or the new one, both whole.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::pop3::Uidl;

mod delivered;
mod hint;
mod record;

use delivered::Delivered;
pub use hint::{capa_hint, store_capa_hint};
use record::Record;

/// The journal format this build writes and reads.
pub const FORMAT: u32 = 4;
pub use crate::config::DEDUPE_WINDOW;

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{what} is being fetched by another popfetch process or another account on the same \
         mailbox (it holds the lock {path}); try again when it has finished"
    )]
    Locked { what: String, path: PathBuf },
    #[error("{0}")]
    Untrusted(#[from] crate::trust::Untrusted),
    #[error("{0}")]
    MailboxChanged(Box<MailboxChanged>),
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state file {path} is corrupt at line {line} ({why}); restore it from a backup, or move \
         it aside to start afresh (kept messages will then be fetched again)"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error(
        "state file {path} was written by a newer popfetch (format {found}, this one reads \
         {FORMAT}); upgrade popfetch"
    )]
    FutureFormat { path: PathBuf, found: u32 },
}

/// An account polls a mailbox without a journal while the one it polled before has one.
#[derive(Debug, thiserror::Error)]
#[error(
    "account {account} now polls {mailbox}, but what it fetched is recorded in {} for the \
     mailbox it polled before; if it is the same mailbox under a new host name or port, run \
     `mv {} {}` to keep that record (otherwise every message kept on the server is fetched \
     again); if it is another mailbox, run `rm {}` to start it afresh",
    old_path.display(),
    old_path.display(),
    new_path.display(),
    pointer.display()
)]
pub struct MailboxChanged {
    pub account: String,
    pub mailbox: String,
    pub old_path: PathBuf,
    pub new_path: PathBuf,
    pub pointer: PathBuf,
}

/// The open, locked state of one account.
#[derive(Debug)]
pub struct AccountState {
    path: PathBuf,
    dir: PathBuf,
    journal: File,
    /// Held for the lock; released on drop.
    _lock: File,
    /// Delivered UIDLs and when (Unix seconds).
    delivered: Delivered,
    pending: HashMap<Uidl, String>,
    held: HashSet<Uidl>,
    oversize: HashSet<Uidl>,
    /// (Message-ID digest, LIST size) of recent deliveries, and when.
    message_ids: HashMap<(String, u64), u64>,
    fingerprint: Option<String>,
    /// Recipients that have a message not yet delivered to all of them.
    reached: HashMap<Uidl, BTreeSet<String>>,
    /// Records appended but not yet written and synced.
    unsynced: Vec<u8>,
    /// Octets in the journal file, to decide when to compact.
    file_len: usize,
}

impl AccountState {
    /// Opens (creating if needed) and locks the state of `mailbox`, polled by the account named
    /// `account`. State and lock follow the mailbox, not the name: a renamed account finds its
    /// state, and two accounts on one mailbox never poll it at once. A journal of the name-keyed
    /// layout (`ACCOUNT.uidls`) is moved to the mailbox's file the first time. Fails at once,
    /// with [`StateError::Locked`], when another process or account holds the mailbox, and with
    /// [`StateError::Untrusted`] when the directory or a file in it may have been written by
    /// someone else.
    pub fn open(dir: &Path, mailbox: &Mailbox, account: &str) -> Result<AccountState, StateError> {
        prepare_dir(dir)?;
        let stem = mailbox.file_stem();
        let lock = lock(dir, &stem, &format!("mailbox {mailbox}"))?;
        let path = dir.join(format!("{stem}.uidls"));
        migrate_named(dir, &path, account)?;
        let pointer = dir.join(format!("{account}.mailbox"));
        let before = read_pointer(&pointer)?;
        if let Some(old) = before.as_deref().filter(|old| *old != stem) {
            let old_path = dir.join(format!("{old}.uidls"));
            if !exists(&path)? && exists(&old_path)? && holds_deliveries(&old_path)? {
                return Err(StateError::MailboxChanged(Box::new(MailboxChanged {
                    account: account.to_string(),
                    mailbox: mailbox.to_string(),
                    old_path,
                    new_path: path,
                    pointer,
                })));
            }
        }
        let state = Self::load(dir, lock, path)?;
        if before.as_deref() != Some(stem.as_str()) {
            write_atomic(dir, &pointer, format!("{stem}\n").as_bytes())?;
        }
        Ok(state)
    }

    /// Opens the journal `STEM.uidls` directly, for tests of the journal itself.
    #[cfg(test)]
    fn open_stem(dir: &Path, stem: &str) -> Result<AccountState, StateError> {
        prepare_dir(dir)?;
        let lock = lock(dir, stem, stem)?;
        Self::load(dir, lock, dir.join(format!("{stem}.uidls")))
    }

    fn load(dir: &Path, lock: File, path: PathBuf) -> Result<AccountState, StateError> {
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let (parsed, valid_len) = match open_trusted(&path, OpenOptions::new().read(true)) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map_err(io)?;
                parse(&path, &bytes)?
            }
            Err(StateError::Io { source: e, .. }) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(dir, &path, &header())?;
                (Parsed::default(), header().len())
            }
            Err(e) => return Err(e),
        };
        let journal = open_trusted(&path, OpenOptions::new().append(true))?;
        // Cut a torn tail so that new records start on a line of their own.
        if journal.metadata().map_err(io)?.len() != valid_len as u64 {
            journal.set_len(valid_len as u64).map_err(io)?;
            journal.sync_all().map_err(io)?;
        }
        let mut state = AccountState {
            path,
            dir: dir.to_path_buf(),
            journal,
            _lock: lock,
            delivered: parsed.delivered,
            pending: parsed.pending,
            held: parsed.held,
            oversize: parsed.oversize,
            message_ids: parsed.message_ids,
            fingerprint: parsed.fingerprint,
            reached: parsed.reached,
            unsynced: Vec::new(),
            file_len: valid_len,
        };
        if parsed.version < FORMAT {
            // Undated deliveries of format 1 get today's date, once and for all.
            state.delivered.date_undated(now_secs());
            state.compact()?;
        } else {
            state.compact_if_large()?;
        }
        Ok(state)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `uidl` was delivered (and so must not be fetched again).
    pub fn is_delivered(&self, uidl: &Uidl) -> bool {
        self.delivered.contains(uidl.as_str().as_bytes())
    }

    /// When `uidl` was delivered (Unix seconds), if it was.
    pub fn delivered_at(&self, uidl: &Uidl) -> Option<u64> {
        self.delivered.get(uidl.as_str().as_bytes())
    }

    /// Whether `uidl` was found over `max_size` and reported already.
    pub fn is_oversize(&self, uidl: &Uidl) -> bool {
        self.oversize.contains(uidl)
    }

    /// Notes that `uidl` is over `max_size` and was reported: it is not reported again.
    pub fn record_oversize(&mut self, uidl: &Uidl) {
        if self.oversize.insert(uidl.clone()) {
            self.append(Record::Oversize(uidl.clone()));
        }
    }

    /// Whether a message with this Message-ID `digest` and LIST `size` was delivered within
    /// [`DEDUPE_WINDOW`].
    pub fn seen_message_id(&self, digest: &str, size: u64) -> bool {
        self.message_ids
            .get(&(digest.to_string(), size))
            .is_some_and(|&at| now_secs().saturating_sub(at) < DEDUPE_WINDOW.as_secs())
    }

    /// Notes the delivery of a message with this Message-ID `digest` (plain token characters)
    /// and LIST `size`.
    pub fn record_message_id(&mut self, digest: &str, size: u64) {
        debug_assert!(!digest.is_empty() && !digest.contains(char::is_whitespace));
        let now = now_secs();
        self.append(Record::MessageId {
            at: now,
            size,
            digest: digest.to_string(),
        });
        self.message_ids.insert((digest.to_string(), size), now);
    }

    pub fn delivered_count(&self) -> usize {
        self.delivered.len()
    }

    /// Deliveries that were under way when a previous run stopped, with their backend keys.
    pub fn pending(&self) -> Vec<(Uidl, String)> {
        let mut v: Vec<_> = self
            .pending
            .iter()
            .map(|(u, k)| (u.clone(), k.clone()))
            .collect();
        v.sort();
        v
    }

    /// Notes that `uidl` is being delivered under the backend's `key`. Must be synced before
    /// the delivery becomes visible, so that a crash in between can be resolved.
    pub fn record_pending(&mut self, uidl: &Uidl, key: &str) {
        debug_assert!(!key.is_empty() && !key.contains(char::is_whitespace));
        self.append(Record::Pending {
            uidl: uidl.clone(),
            key: key.to_string(),
        });
        self.pending.insert(uidl.clone(), key.to_string());
    }

    /// Notes that `uidl` was delivered. Must be synced before its DELE is sent.
    pub fn record_delivered(&mut self, uidl: &Uidl) {
        self.record_delivered_at(uidl, now_secs());
    }

    /// [`AccountState::record_delivered`] with the time of delivery (Unix seconds), for state
    /// imported from another tool.
    pub fn record_delivered_at(&mut self, uidl: &Uidl, at: u64) {
        self.append(Record::Delivered {
            uidl: uidl.clone(),
            at: Some(at),
        });
        self.pending.remove(uidl);
        self.reached.remove(uidl);
        self.delivered.insert(uidl.as_str().as_bytes(), at);
    }

    /// The recipients that already have `uidl` (see [`AccountState::record_reached`]).
    pub fn reached(&self, uidl: &Uidl) -> Vec<String> {
        self.reached
            .get(uidl)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Notes that recipient `rcpt` (a word: no space or newline) has `uidl`, which some other
    /// recipient still lacks: a retry leaves `rcpt` out, so no one gets a second copy. Must be
    /// synced before the message is tried again.
    pub fn record_reached(&mut self, uidl: &Uidl, rcpt: &str) {
        debug_assert!(record::is_word(rcpt), "bad recipient {rcpt:?}");
        if self
            .reached
            .entry(uidl.clone())
            .or_default()
            .insert(rcpt.to_string())
        {
            self.append(Record::Reached {
                uidl: uidl.clone(),
                rcpt: rcpt.to_string(),
            });
        }
    }

    /// Whether `uidl` is held after a permanent delivery failure.
    pub fn is_held(&self, uidl: &Uidl) -> bool {
        self.held.contains(uidl)
    }

    /// Holds `uidl` after a permanent delivery failure: it stays on the server, untried.
    pub fn record_held(&mut self, uidl: &Uidl) {
        if self.held.insert(uidl.clone()) {
            self.append(Record::Held(uidl.clone()));
        }
    }

    /// Releases every held message, so the next poll tries them again. Returns how many.
    pub fn release_held(&mut self) -> usize {
        let held: Vec<Uidl> = self.held.iter().cloned().collect();
        for u in &held {
            // The recipients that have it keep it: only the others are tried again.
            let reached = self.reached.get(u).cloned().unwrap_or_default();
            self.forget(u);
            for r in &reached {
                self.record_reached(u, r);
            }
        }
        held.len()
    }

    /// Notes the fingerprint of the account's delivery settings
    /// ([`crate::config::Account::delivery_fingerprint`]). When it differs from the one the held
    /// records were made under, they are released and the count returned: a changed delivery
    /// deserves a new try.
    ///
    /// A fingerprint of the kind older popfetch wrote (a hash of the account's whole `Debug`
    /// text, which this build cannot compute) is taken over once without releasing anything:
    /// the upgrade alone is no reason to try held mail again. A config change made between the
    /// last poll of the older popfetch and the first of this one is missed; `popfetch retry`
    /// releases the mail then.
    pub fn set_fingerprint(&mut self, fingerprint: &str) -> usize {
        match self.fingerprint.as_deref() {
            Some(old) if old == fingerprint => return 0,
            Some(old) if is_legacy_fingerprint(old) && !is_legacy_fingerprint(fingerprint) => {
                if !self.held.is_empty() {
                    tracing::info!(
                        journal = %self.path.display(),
                        held = self.held.len(),
                        "held messages stay held across the upgrade of the config fingerprint"
                    );
                }
                self.append(Record::Config(fingerprint.to_string()));
                self.fingerprint = Some(fingerprint.to_string());
                return 0;
            }
            _ => {}
        }
        let released = self.release_held();
        self.append(Record::Config(fingerprint.to_string()));
        self.fingerprint = Some(fingerprint.to_string());
        released
    }

    /// Forgets `uidl`: deleted from the server for good, a delivery that never finished, or a
    /// held message released.
    pub fn forget(&mut self, uidl: &Uidl) {
        if self.delivered.remove(uidl.as_str().as_bytes()).is_some()
            | self.pending.remove(uidl).is_some()
            | self.held.remove(uidl)
            | self.oversize.remove(uidl)
            | self.reached.remove(uidl).is_some()
        {
            self.append(Record::Forget(uidl.clone()));
        }
    }

    /// Forgets every delivered UIDL that is not in `on_server`: after a complete session, those
    /// messages are gone and their UIDLs will not come back (RFC 1939 §7).
    pub fn retain_only(&mut self, on_server: &HashSet<&Uidl>) {
        let on_server: HashSet<&str> = on_server.iter().map(|u| u.as_str()).collect();
        self.retain_only_by(|u| on_server.contains(u));
    }

    /// [`AccountState::retain_only`] with a test in place of a set, so that a caller need not
    /// hold every UIDL a server listed.
    pub fn retain_only_by(&mut self, on_server: impl Fn(&str) -> bool) {
        let gone: Vec<Uidl> = self
            .delivered
            .iter()
            .map(|(u, _)| u)
            .chain(self.oversize.iter().map(Uidl::as_str))
            .chain(self.reached.keys().map(Uidl::as_str))
            .filter(|u| !on_server(u))
            .filter_map(|u| Uidl::parse(u.as_bytes()).ok())
            .collect();
        for u in &gone {
            self.forget(u);
        }
    }

    /// Writes and fsyncs every appended record. Returns only once they are durable.
    pub fn sync(&mut self) -> Result<(), StateError> {
        if self.unsynced.is_empty() {
            return Ok(());
        }
        self.flush()?;
        self.journal.sync_data().map_err(|source| StateError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.compact_if_large()
    }

    /// Writes every appended record without waiting for the disk: for records whose loss in a
    /// crash costs nothing but a repeat (forgotten UIDLs come back as forgotten at the next
    /// complete session; a held or oversize message is tried or reported once more; a lost
    /// fingerprint is written again). Records a DELE depends on go through [`Self::sync`].
    pub fn flush(&mut self) -> Result<(), StateError> {
        if self.unsynced.is_empty() {
            return Ok(());
        }
        let r = self.journal.write_all(&self.unsynced);
        self.file_len += self.unsynced.len();
        self.unsynced.clear();
        r.map_err(|source| StateError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Ends a poll: writes what is left (as [`Self::flush`]) and, when the journal holds
    /// more than an eighth (plus 16 KiB) beyond its live set, rewrites it as just that (see
    /// [`Self::compact`]). A kept mailbox's journal then stays near one line per message, as
    /// small as the live set allows, while a poll that adds nothing costs no write at all. A
    /// compaction that fails leaves the journal as it was appended, complete: it is logged and
    /// tried again at the next poll's end.
    pub fn finish(&mut self) -> Result<(), StateError> {
        self.flush()?;
        let over = |live: usize| self.file_len > live + live / 8 + (16 << 10);
        // The live set's size is known but for its `T` lines: at least one (when there is a
        // delivery), at most one a delivery. Only between the two are they counted.
        let few = self.delivered.len().min(1);
        if over(self.live_len(few))
            && over(self.live_len(self.delivered.times()))
            && let Err(e) = self.compact()
        {
            tracing::warn!(
                journal = %self.path.display(),
                error = %e,
                "cannot compact the state file: {e}"
            );
        }
        Ok(())
    }

    fn append(&mut self, rec: Record) {
        self.unsynced.extend_from_slice(rec.encode().as_bytes());
        self.unsynced.push(b'\n');
    }

    /// Rewrites the journal as just the live set when it has grown past twice that (plus
    /// slack): within a poll that delivers many messages, compactions then cost a bounded
    /// multiple of the journal's final size; [`Self::finish`] takes the rest.
    fn compact_if_large(&mut self) -> Result<(), StateError> {
        let live = self.live_len(self.delivered.len());
        if self.file_len <= 2 * live + (64 << 10) || !self.unsynced.is_empty() {
            return Ok(());
        }
        self.compact()
    }

    /// About the octets of the live set written out with `times` `T` lines (counted at ten
    /// digits each) among the deliveries.
    fn live_len(&self, times: usize) -> usize {
        let uidls = |s: &HashSet<Uidl>| s.iter().map(|u| u.as_str().len() + 3).sum::<usize>();
        header().len()
            // A UIDL and its newline each; `T `, ten digits and the newline a time.
            + self.delivered.uidl_bytes()
            + self.delivered.len()
            + times * 13
            + self
                .pending
                .iter()
                .map(|(u, k)| u.as_str().len() + k.len() + 4)
                .sum::<usize>()
            + uidls(&self.held)
            + uidls(&self.oversize)
            + self
                .message_ids
                .keys()
                .map(|(d, _)| d.len() + 35)
                .sum::<usize>()
            + self.fingerprint.as_ref().map_or(0, |f| f.len() + 3)
            + self
                .reached
                .iter()
                .map(|(u, set)| set.iter().map(|r| u.as_str().len() + r.len() + 4).sum::<usize>())
                .sum::<usize>()
    }

    /// Rewrites the journal as just the live set, dropping Message-IDs older than the window.
    fn compact(&mut self) -> Result<(), StateError> {
        let now = now_secs();
        self.message_ids
            .retain(|_, at| now.saturating_sub(*at) < DEDUPE_WINDOW.as_secs());
        let mut text = header();
        for rec in self.live_records() {
            text.extend_from_slice(rec.encode().as_bytes());
            text.push(b'\n');
        }
        write_atomic(&self.dir, &self.path, &text)?;
        self.journal = open_trusted(&self.path, OpenOptions::new().append(true))?;
        self.file_len = text.len();
        Ok(())
    }

    /// The live set as records, in a stable order: the deliveries by time (a `T` record, then
    /// its UIDLs bare), then the rest; the fingerprint comes before the held records it stands
    /// for.
    fn live_records(&self) -> Vec<Record> {
        let mut delivered: Vec<_> = self.delivered.iter().map(|(u, at)| (at, u)).collect();
        delivered.sort_unstable();
        let mut oversize: Vec<_> = self.oversize.iter().collect();
        oversize.sort();
        let mut ids: Vec<_> = self.message_ids.iter().collect();
        ids.sort();
        let mut held: Vec<_> = self.held.iter().collect();
        held.sort();
        let mut time = None;
        let delivered = delivered.into_iter().flat_map(|(at, u)| {
            let new = (time != Some(at)).then_some(Record::Time(at));
            time = Some(at);
            new.into_iter()
                .chain(Uidl::parse(u.as_bytes()).ok().map(Record::Kept))
        });
        let oversize = oversize.into_iter().cloned().map(Record::Oversize);
        let ids = ids
            .into_iter()
            .map(|((digest, size), &at)| Record::MessageId {
                at,
                size: *size,
                digest: digest.clone(),
            });
        let pending = self
            .pending()
            .into_iter()
            .map(|(uidl, key)| Record::Pending { uidl, key });
        let config = self.fingerprint.clone().map(Record::Config);
        let held = held.into_iter().cloned().map(Record::Held);
        let mut reached: Vec<_> = self.reached.iter().collect();
        reached.sort();
        let reached = reached.into_iter().flat_map(|(u, set)| {
            set.iter().map(|r| Record::Reached {
                uidl: u.clone(),
                rcpt: r.clone(),
            })
        });
        delivered
            .chain(oversize)
            .chain(ids)
            .chain(pending)
            .chain(config)
            .chain(held)
            .chain(reached)
            .collect()
    }
}

/// What a mailbox's journal says, read without writing anything: for `popfetch check
/// --connect`, which must leave the state as it found it. No directory or file is created, no
/// format is upgraded, no torn tail cut, no pointer written; the lock is taken only when its
/// file exists (opened read-only), so that a look never overlaps a poll of the same mailbox,
/// and held for as long as the snapshot lives. A journal an open would move or refuse is read,
/// or refused, as [`AccountState::open`] would.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The journal read, if there was one.
    pub path: Option<PathBuf>,
    delivered: Delivered,
    held: HashSet<Uidl>,
    _lock: Option<File>,
}

impl Snapshot {
    pub fn read(dir: &Path, mailbox: &Mailbox, account: &str) -> Result<Snapshot, StateError> {
        let meta = match std::fs::metadata(dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Snapshot::default()),
            Err(source) => {
                return Err(StateError::Dir {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        crate::trust::state_dir(dir, &meta)?;
        let stem = mailbox.file_stem();
        let lock = peek_lock(dir, &stem, &format!("mailbox {mailbox}"))?;
        let path = dir.join(format!("{stem}.uidls"));
        let named = dir.join(format!("{account}.uidls"));
        let found = if exists(&path)? {
            Some(path.clone())
        } else if exists(&named)? {
            Some(named)
        } else {
            let pointer = dir.join(format!("{account}.mailbox"));
            if let Some(old) = read_pointer(&pointer)?.filter(|old| *old != stem) {
                let old_path = dir.join(format!("{old}.uidls"));
                if exists(&old_path)? && holds_deliveries(&old_path)? {
                    return Err(StateError::MailboxChanged(Box::new(MailboxChanged {
                        account: account.to_string(),
                        mailbox: mailbox.to_string(),
                        old_path,
                        new_path: path,
                        pointer,
                    })));
                }
            }
            None
        };
        let Some(path) = found else {
            return Ok(Snapshot {
                _lock: lock,
                ..Snapshot::default()
            });
        };
        let mut bytes = Vec::new();
        open_trusted(&path, OpenOptions::new().read(true))?
            .read_to_end(&mut bytes)
            .map_err(|source| StateError::Io {
                path: path.clone(),
                source,
            })?;
        let (parsed, _) = parse(&path, &bytes)?;
        Ok(Snapshot {
            path: Some(path),
            delivered: parsed.delivered,
            held: parsed.held,
            _lock: lock,
        })
    }

    /// Whether `uidl` was delivered (a poll never fetches it again).
    pub fn is_delivered(&self, uidl: &Uidl) -> bool {
        self.delivered.contains(uidl.as_str().as_bytes())
    }

    /// Whether `uidl` is held on the server after a permanent delivery failure.
    pub fn is_held(&self, uidl: &Uidl) -> bool {
        self.held.contains(uidl)
    }
}

/// The lock `STEM.lock`, taken through a read-only descriptor when the file exists; `None`
/// when it does not (no poll has ever held it).
fn peek_lock(dir: &Path, stem: &str, what: &str) -> Result<Option<File>, StateError> {
    let lock_path = dir.join(format!("{stem}.lock"));
    let f = match open_trusted(&lock_path, OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StateError::Locked {
            what: what.to_string(),
            path: lock_path,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(StateError::Io {
            path: lock_path,
            source,
        }),
    }
}

/// Whether `fingerprint` is of the kind popfetch wrote before delivery fingerprints: 16 hex
/// digits of an FNV-1a hash of the account's whole `Debug` text.
fn is_legacy_fingerprint(fingerprint: &str) -> bool {
    fingerprint.len() == 16 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit())
}

fn header() -> Vec<u8> {
    record::header(FORMAT).into_bytes()
}

#[derive(Default)]
struct Parsed {
    version: u32,
    /// Time 0: undated (format 1).
    delivered: Delivered,
    pending: HashMap<Uidl, String>,
    held: HashSet<Uidl>,
    oversize: HashSet<Uidl>,
    message_ids: HashMap<(String, u64), u64>,
    fingerprint: Option<String>,
    reached: HashMap<Uidl, BTreeSet<String>>,
    /// The last `T` record's time, for the bare UIDLs after it.
    time: Option<u64>,
}

impl Parsed {
    /// Takes one record into the state it describes; the error says why it cannot be.
    fn apply(&mut self, rec: Record) -> Result<(), &'static str> {
        match rec {
            Record::Pending { uidl, key } => {
                self.pending.insert(uidl, key);
            }
            Record::Delivered { uidl, at } => {
                self.pending.remove(&uidl);
                self.reached.remove(&uidl);
                self.delivered
                    .insert(uidl.as_str().as_bytes(), at.unwrap_or(0));
            }
            Record::Reached { uidl, rcpt } => {
                self.reached.entry(uidl).or_default().insert(rcpt);
            }
            Record::Forget(uidl) => {
                self.pending.remove(&uidl);
                self.reached.remove(&uidl);
                self.delivered.remove(uidl.as_str().as_bytes());
                self.held.remove(&uidl);
                self.oversize.remove(&uidl);
            }
            Record::Held(uidl) => {
                self.held.insert(uidl);
            }
            Record::Config(fp) => self.fingerprint = Some(fp),
            Record::Oversize(uidl) => {
                self.oversize.insert(uidl);
            }
            Record::MessageId { at, size, digest } => {
                self.message_ids.insert((digest, size), at);
            }
            Record::Time(at) => self.time = Some(at),
            Record::Kept(uidl) => {
                let at = self.time.ok_or(NO_TIME)?;
                self.apply(Record::Delivered { uidl, at: Some(at) })?;
            }
        }
        Ok(())
    }
}

const NO_TIME: &str = "a delivered UIDL before any T line";

/// Reads a journal: its content, and the length of the valid prefix (everything but a torn last
/// record).
fn parse(path: &Path, bytes: &[u8]) -> Result<(Parsed, usize), StateError> {
    let corrupt = |line: usize, why: &str| StateError::Corrupt {
        path: path.to_path_buf(),
        line,
        why: why.to_string(),
    };
    // A crash may leave a partial last line, or zeros where the file system had extended the
    // file without the data: neither was ever acted on.
    let trimmed_len = bytes.len() - bytes.iter().rev().take_while(|&&b| b == 0).count();
    let bytes = &bytes[..trimmed_len];
    let valid_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut lines = bytes[..valid_len].split(|&b| b == b'\n');

    let head = lines.next().unwrap_or_default();
    if std::str::from_utf8(head).is_err() {
        return Err(corrupt(1, "bad header"));
    }
    let version = record::parse_header(head).ok_or_else(|| {
        if valid_len == 0 {
            corrupt(1, "empty or truncated before its header")
        } else {
            corrupt(1, "not a popfetch state file")
        }
    })?;
    if version > FORMAT {
        return Err(StateError::FutureFormat {
            path: path.to_path_buf(),
            found: version,
        });
    }

    // A line is a record: no table grows while the journal is read, nor the buffer of UIDLs,
    // which is shorter than the lines.
    let records = memchr::memchr_iter(b'\n', &bytes[..valid_len]).count();
    let mut p = Parsed {
        version,
        delivered: Delivered::with_capacity(records, valid_len.saturating_sub(2 * records)),
        ..Parsed::default()
    };
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue; // the split after the final newline
        }
        // A bare UIDL or a `D` line is taken without making a `Record` (and its `Uidl`): most
        // lines are one.
        let delivered = match record::parse_kept(line, version) {
            Some(uidl) => Some((uidl, p.time.ok_or_else(|| corrupt(i + 2, NO_TIME))?)),
            None => record::parse_delivered(line, version),
        };
        if let Some((uidl, at)) = delivered {
            if (!p.pending.is_empty() || !p.reached.is_empty())
                && let Ok(u) = Uidl::parse(uidl)
            {
                p.pending.remove(&u);
                p.reached.remove(&u);
            }
            p.delivered.insert(uidl, at);
            continue;
        }
        let rec = Record::parse(line, version).map_err(|why| corrupt(i + 2, &why))?;
        p.apply(rec).map_err(|why| corrupt(i + 2, why))?;
    }
    p.delivered.shrink();
    Ok((p, valid_len))
}

/// Replaces `path` with `contents` so that a crash leaves either the old or the new file. The
/// temporary file is created afresh (`O_EXCL`, `O_NOFOLLOW`): a symlink planted in its place is
/// never written through.
fn write_atomic(dir: &Path, path: &Path, contents: &[u8]) -> Result<(), StateError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io = |source| StateError::Io {
        path: tmp.clone(),
        source,
    };
    let f = create_new(&tmp)?;
    crate::durable::replace(
        f,
        &tmp,
        path,
        dir,
        &[contents],
        crate::durable::Sync::Durable,
    )
    .map_err(io)
}

/// Creates `path` as a new 0600 file, never through a symlink. A leftover of a run that died is
/// removed first, but only when it is a regular file of ours.
pub(crate) fn create_new(path: &Path) -> Result<File, StateError> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(path).map_err(|source| StateError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            crate::trust::state_file(path, &meta)?;
            std::fs::remove_file(path)
                .and_then(|()| open())
                .map_err(|source| StateError::Io {
                    path: path.to_path_buf(),
                    source,
                })
        }
        r => r.map_err(|source| StateError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Opens an existing state file with `options`, never through a symlink, and checks that it is
/// a regular file of ours that no one else may write.
fn open_trusted(path: &Path, options: &mut OpenOptions) -> Result<File, StateError> {
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = match options.custom_flags(libc::O_NOFOLLOW).open(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let meta = std::fs::symlink_metadata(path).map_err(io)?;
            crate::trust::state_file(path, &meta)?;
            return Err(io(e));
        }
        Err(e) => return Err(io(e)),
    };
    crate::trust::state_file(path, &f.metadata().map_err(io)?)?;
    Ok(f)
}

/// Creates the state directory (0700) if needed, and checks that it is ours and closed to
/// others.
pub fn prepare_dir(dir: &Path) -> Result<(), StateError> {
    // The journal lists which mail an account received: for the owner's eyes only.
    let dir_err = |source| StateError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    // A new state directory's name is made durable before a record in it can be relied on.
    crate::durable::create_dir_synced(dir, 0o700).map_err(dir_err)?;
    let meta = std::fs::metadata(dir).map_err(dir_err)?;
    crate::trust::state_dir(dir, &meta)?;
    Ok(())
}

/// Takes the exclusive lock `STEM.lock` in `dir`, held for as long as the returned file is open.
fn lock(dir: &Path, stem: &str, what: &str) -> Result<File, StateError> {
    let lock_path = dir.join(format!("{stem}.lock"));
    let lock = match OpenOptions::new()
        .mode(0o600)
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock_path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let meta = std::fs::symlink_metadata(&lock_path).map_err(|source| StateError::Io {
                path: lock_path.clone(),
                source,
            })?;
            crate::trust::state_file(&lock_path, &meta)?;
            return Err(StateError::Io {
                path: lock_path,
                source: e,
            });
        }
        Err(source) => {
            return Err(StateError::Dir {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let meta = lock.metadata().map_err(|source| StateError::Io {
        path: lock_path.clone(),
        source,
    })?;
    crate::trust::state_file(&lock_path, &meta)?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(StateError::Locked {
            what: what.to_string(),
            path: lock_path,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(StateError::Io {
            path: lock_path,
            source,
        }),
    }
}

/// Moves the journal of the name-keyed layout, `ACCOUNT.uidls`, to the mailbox's `path` when the
/// mailbox has none yet. The old name's lock is taken for the move, so a poll of an older
/// popfetch under that name cannot be writing it.
fn migrate_named(dir: &Path, path: &Path, account: &str) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let named = dir.join(format!("{account}.uidls"));
    if named == path || exists(path)? || !exists(&named)? {
        return Ok(());
    }
    let _old_lock = lock(dir, account, &format!("account {account}"))?;
    drop(open_trusted(&named, OpenOptions::new().read(true))?);
    std::fs::rename(&named, path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    tracing::info!(
        account,
        from = %named.display(),
        to = %path.display(),
        "state moved to the mailbox's journal"
    );
    Ok(())
}

/// Whether `path` exists (as anything, a dangling symlink included).
fn exists(path: &Path) -> Result<bool, StateError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(StateError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Whether the journal at `path` records anything a refetch would repeat (read without its
/// lock: appends only ever add). One that cannot be read as a journal counts as holding some.
fn holds_deliveries(path: &Path) -> Result<bool, StateError> {
    let mut bytes = Vec::new();
    open_trusted(path, OpenOptions::new().read(true))?
        .read_to_end(&mut bytes)
        .map_err(|source| StateError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(match parse(path, &bytes) {
        Ok((p, _)) => !(p.delivered.is_empty() && p.pending.is_empty() && p.held.is_empty()),
        Err(_) => true,
    })
}

/// The file stem of the mailbox an account polled last, from `ACCOUNT.mailbox`: a change of
/// host, port or user is then told apart from a new account.
fn read_pointer(pointer: &Path) -> Result<Option<String>, StateError> {
    let mut f = match open_trusted(pointer, OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    (&mut f)
        .take(1024)
        .read_to_string(&mut text)
        .map_err(|source| StateError::Io {
            path: pointer.to_path_buf(),
            source,
        })?;
    // Anything but a plain stem is ignored: it is a hint, never a reason to act.
    let stem = text.trim_end_matches('\n');
    let plain = !stem.is_empty()
        && !stem.starts_with('.')
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-%@:".contains(&b));
    Ok(plain.then(|| stem.to_string()))
}

pub use crate::mailbox::Mailbox;

impl Mailbox {
    pub fn of(account: &crate::config::Account) -> Mailbox {
        Mailbox::new(&account.host, account.port, &account.user)
    }
}

#[cfg(test)]
mod tests;
