//! [`Secret`]: a value (a password) whose `Debug` and `Display` never show it, in every build.
//! Reading it takes an explicit [`Secret::expose`], so every use is easy to find and review.
//! Dropping it overwrites its bytes with zeros ([`Wipe`]), so a credential does not linger in
//! freed memory; [`wipe`] does the same for a buffer that is not a `Secret`.

use std::fmt;
use std::mem::MaybeUninit;
use std::sync::atomic::{Ordering, compiler_fence};

/// A secret value. Formatting prints `<redacted>`; the value is reachable only through
/// [`Secret::expose`]; dropping it zeroes its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T: Wipe>(T);

impl<T: Wipe> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret itself. Call it only where the value leaves for the server.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The secret, to be filled in place (a buffer read from a file or a program), so that it
    /// never exists outside a `Secret`.
    pub fn expose_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Wipe> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.wipe();
    }
}

impl<T: Wipe> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T: Wipe> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret<String> {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

/// A value whose bytes can be overwritten with zeros in place: what a [`Secret`] may hold.
pub trait Wipe {
    /// Zeroes every byte the value owns, including spare capacity, and leaves it empty.
    fn wipe(&mut self);
}

impl Wipe for Vec<u8> {
    fn wipe(&mut self) {
        wipe(self.as_mut_slice());
        // Bytes past the length (after a `clear` or `truncate`) may still hold a secret.
        for b in self.spare_capacity_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference; writing an initialised
            // `MaybeUninit` through it is always sound.
            unsafe { std::ptr::write_volatile(b, MaybeUninit::new(0)) };
        }
        compiler_fence(Ordering::SeqCst);
        self.clear();
    }
}

impl Wipe for String {
    fn wipe(&mut self) {
        // Taken as bytes without `unsafe`; the emptied allocation is wiped, then freed.
        std::mem::take(self).into_bytes().wipe();
    }
}

/// Overwrites `buf` with zeros. Volatile writes and a compiler fence keep the optimiser from
/// dropping them as dead stores just before the memory is freed.
pub fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to a `u8`.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    compiler_fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::{Secret, Wipe, wipe};

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(&s)), "Some(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn wipe_clears_a_buffer() {
        let mut buf = *b"hunter2";
        wipe(&mut buf);
        assert_eq!(buf, [0u8; 7]);
    }

    #[test]
    fn wiping_a_vec_zeroes_its_spare_capacity_too() {
        let mut v = b"hunter2 and more".to_vec();
        v.truncate(3);
        v.wipe();
        assert!(v.is_empty());
        // SAFETY: every byte of the capacity was written by `wipe`, so all are initialised.
        let all = unsafe { std::slice::from_raw_parts(v.as_ptr(), v.capacity()) };
        assert!(all.len() >= 16);
        assert!(all.iter().all(|&b| b == 0), "{all:?}");
    }

    #[test]
    fn wiping_a_string_leaves_it_empty() {
        let mut s = "hunter2".to_string();
        s.wipe();
        assert!(s.is_empty());
    }
}
