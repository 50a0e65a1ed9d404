//! The delivered UIDLs and their dates, held compactly: a kept mailbox of tens of thousands of
//! messages is read from its journal at every poll and looked up once per listed message.
//!
//! A `HashMap<Uidl, u64>` costs about 100 octets per UIDL (the boxed string with the
//! allocator's overhead, the key and value, the table's slack) and one allocation each. Here
//! every UIDL's bytes sit back to back in one buffer, an [`Entry`] (16 octets) says where and
//! when, and a table of 4-octet entry numbers finds them: a UIDL costs its length plus about 24
//! octets, and loading a journal allocates a handful of times, not once per record.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

/// Where a UIDL's bytes are in [`Delivered::bytes`], and when it was delivered.
#[derive(Debug, Clone, Copy)]
struct Entry {
    off: u32,
    len: u32,
    /// Unix seconds; 0 for an undated delivery of a format 1 journal.
    at: u64,
}

/// A map from UIDL to the time of its delivery.
#[derive(Debug, Default)]
pub(super) struct Delivered {
    /// The UIDLs' bytes, back to back (with the bytes of removed ones until [`Self::repack`]).
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    /// Numbers of `entries`, hashed by their UIDL.
    index: HashTable<u32>,
    /// Keyed afresh by each process: a server cannot aim UIDLs at collisions.
    hasher: RandomState,
    /// Octets of `bytes` no entry points at any more.
    garbage: usize,
}

impl Delivered {
    /// An empty map with room for `n` UIDLs of `bytes` octets in all without growing.
    pub(super) fn with_capacity(n: usize, bytes: usize) -> Delivered {
        Delivered {
            bytes: Vec::with_capacity(bytes),
            entries: Vec::with_capacity(n),
            index: HashTable::with_capacity(n),
            ..Delivered::default()
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn key(&self, e: &Entry) -> &[u8] {
        &self.bytes[e.off as usize..(e.off + e.len) as usize]
    }

    fn slot(&self, uidl: &[u8]) -> (u64, Option<usize>) {
        let h = self.hasher.hash_one(uidl);
        let found = self
            .index
            .find(h, |&i| self.key(&self.entries[i as usize]) == uidl)
            .map(|&i| i as usize);
        (h, found)
    }

    /// When `uidl` was delivered, if it was.
    pub(super) fn get(&self, uidl: &[u8]) -> Option<u64> {
        self.slot(uidl).1.map(|i| self.entries[i].at)
    }

    pub(super) fn contains(&self, uidl: &[u8]) -> bool {
        self.slot(uidl).1.is_some()
    }

    /// Records `uidl` (checked by the caller: at most `MAX_UIDL_LEN` octets) as delivered at
    /// `at`; a later delivery of the same UIDL replaces the date.
    pub(super) fn insert(&mut self, uidl: &[u8], at: u64) {
        match self.slot(uidl) {
            (_, Some(i)) => self.entries[i].at = at,
            (h, None) => {
                let off = u32::try_from(self.bytes.len()).expect("UIDL buffer under 4 GiB");
                self.bytes.extend_from_slice(uidl);
                let n = u32::try_from(self.entries.len()).expect("under 2^32 UIDLs");
                self.entries.push(Entry {
                    off,
                    len: uidl.len() as u32,
                    at,
                });
                let (bytes, entries, hasher) = (&self.bytes, &self.entries, &self.hasher);
                self.index.insert_unique(h, n, |&i| {
                    let e = &entries[i as usize];
                    hasher.hash_one(&bytes[e.off as usize..(e.off + e.len) as usize])
                });
            }
        }
    }

    /// Forgets `uidl`; returns its date if it was there.
    pub(super) fn remove(&mut self, uidl: &[u8]) -> Option<u64> {
        let (h, found) = self.slot(uidl);
        let i = found?;
        if let Ok(slot) = self.index.find_entry(h, |&j| j as usize == i) {
            slot.remove();
        }
        let gone = self.entries.swap_remove(i);
        self.garbage += gone.len as usize;
        if let Some(moved) = self.entries.get(i).copied() {
            // The last entry took the removed one's place: its index slot follows.
            let last = self.entries.len() as u32;
            let h = self.hasher.hash_one(self.key(&moved));
            if let Some(slot) = self.index.find_mut(h, |&j| j == last) {
                *slot = i as u32;
            }
        }
        if self.garbage > 4096 && self.garbage > self.bytes.len() / 2 {
            self.repack();
        }
        Some(gone.at)
    }

    /// Copies the live UIDLs' bytes into a buffer of their own, dropping the removed ones'.
    fn repack(&mut self) {
        let mut bytes = Vec::with_capacity(self.bytes.len() - self.garbage);
        for e in &mut self.entries {
            let off = bytes.len() as u32;
            bytes.extend_from_slice(&self.bytes[e.off as usize..(e.off + e.len) as usize]);
            e.off = off;
        }
        self.bytes = bytes;
        self.garbage = 0;
    }

    /// Every UIDL and its date, in no particular order. UIDLs are printable ASCII (checked
    /// before [`Self::insert`]), so each is a `str`.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries.iter().map(|e| {
            let s = std::str::from_utf8(self.key(e)).unwrap_or_default();
            (s, e.at)
        })
    }

    /// Sets every date of 0 (undated) to `at`.
    pub(super) fn date_undated(&mut self, at: u64) {
        for e in self.entries.iter_mut().filter(|e| e.at == 0) {
            e.at = at;
        }
    }

    /// Gives back what loading reserved and left unused, where that is over an eighth.
    pub(super) fn shrink(&mut self) {
        let loose = |cap: usize, len: usize| cap - len > len / 8;
        if loose(self.bytes.capacity(), self.bytes.len()) {
            self.bytes.shrink_to_fit();
        }
        if loose(self.entries.capacity(), self.entries.len()) {
            self.entries.shrink_to_fit();
            let (bytes, entries, hasher) = (&self.bytes, &self.entries, &self.hasher);
            self.index.shrink_to_fit(|&i| {
                let e = &entries[i as usize];
                hasher.hash_one(&bytes[e.off as usize..(e.off + e.len) as usize])
            });
        }
    }

    /// How many different times of delivery there are (the `T` lines of a compaction).
    pub(super) fn times(&self) -> usize {
        let mut at: Vec<u64> = self.entries.iter().map(|e| e.at).collect();
        at.sort_unstable();
        at.dedup();
        at.len()
    }

    /// The octets this map holds on the heap.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.index.allocation_size()
    }

    /// Sum of the UIDLs' lengths, for the size of the journal they make.
    pub(super) fn uidl_bytes(&self) -> usize {
        self.bytes.len() - self.garbage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn inserts_finds_and_removes() {
        let mut d = Delivered::default();
        assert!(d.is_empty() && d.get(b"a").is_none());
        d.insert(b"a", 1);
        d.insert(b"bb", 2);
        d.insert(b"a", 3);
        assert_eq!((d.len(), d.get(b"a"), d.get(b"bb")), (2, Some(3), Some(2)));
        assert_eq!(d.remove(b"a"), Some(3));
        assert_eq!(d.remove(b"a"), None);
        assert_eq!(
            (d.len(), d.get(b"bb"), d.contains(b"a")),
            (1, Some(2), false)
        );
        assert_eq!(d.iter().collect::<Vec<_>>(), vec![("bb", 2)]);
    }

    /// 50,000 UIDLs of Dovecot's usual 16 octets: a few dozen octets each on the heap.
    #[test]
    fn a_kept_uidl_costs_a_few_dozen_octets() {
        let n = 50_000;
        let mut d = Delivered::with_capacity(n, n * 16);
        for i in 0..n {
            d.insert(
                format!("{i:08X}5f3c2a10").as_bytes(),
                1_700_000_000 + i as u64,
            );
        }
        d.shrink();
        let per = d.heap_bytes() / n;
        assert!(per <= 48, "{per} octets per UIDL");
        assert_eq!(d.get(b"0000002A5f3c2a10"), Some(1_700_000_042));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u64),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), any::<u64>()).prop_map(|(k, at)| Op::Insert(k, at)),
            any::<u8>().prop_map(Op::Remove),
        ]
    }

    /// A UIDL from a small key, of varied length, so that removals and repacks mix sizes.
    fn uidl(k: u8) -> Vec<u8> {
        format!(
            "{k:03}{}",
            "x".repeat(usize::from(k % 70).saturating_sub(3))
        )
        .into_bytes()
    }

    proptest! {
        /// Any sequence of inserts and removals leaves the same map as a `HashMap` would.
        #[test]
        fn behaves_as_a_hash_map(ops in proptest::collection::vec(op(), 0..2000)) {
            let mut d = Delivered::default();
            let mut model: HashMap<Vec<u8>, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, at) => {
                        d.insert(&uidl(k), at);
                        model.insert(uidl(k), at);
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(d.remove(&uidl(k)), model.remove(&uidl(k)));
                    }
                }
                prop_assert_eq!(d.len(), model.len());
            }
            for k in 0..=255u8 {
                prop_assert_eq!(d.get(&uidl(k)), model.get(&uidl(k)).copied());
            }
            let got: HashMap<Vec<u8>, u64> =
                d.iter().map(|(u, at)| (u.as_bytes().to_vec(), at)).collect();
            prop_assert_eq!(got, model);
            prop_assert!(d.garbage <= d.bytes.len());
        }
    }
}
