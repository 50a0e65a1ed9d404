//! The spool of a relayed message (SMTP relay and LMTP): an unlinked temp file the message is
//! written to as it arrives, every line end made CRLF ([`LineEnds`]), counted, and noted when it
//! holds 8-bit bytes; finished once, then read back to be sent.

use std::fs::File;
use std::io::BufWriter;

use super::DeliverError;
use crate::smtp_codec::LineEnds;

/// Bytes buffered before a write to the spool file.
pub(super) const CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub(super) struct Spool {
    /// `None` once finished.
    file: Option<BufWriter<File>>,
    bytes: u64,
    eight_bit: bool,
    line_ends: LineEnds,
}

impl Spool {
    pub(super) fn new() -> Result<Spool, DeliverError> {
        let file =
            tempfile::tempfile().map_err(|e| DeliverError::io("cannot create a spool file", e))?;
        Ok(Spool {
            file: Some(BufWriter::with_capacity(CHUNK, file)),
            bytes: 0,
            eight_bit: false,
            line_ends: LineEnds::default(),
        })
    }

    /// Appends `data`; nothing once finished.
    pub(super) fn write(&mut self, data: &[u8]) -> Result<(), DeliverError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        self.bytes += data.len() as u64;
        self.eight_bit |= !data.is_ascii();
        self.line_ends
            .write(data, file)
            .map_err(|e| DeliverError::io("cannot write the spool file", e))
    }

    /// The message's size as it arrived.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether a byte of the message has its high bit set.
    pub(super) fn eight_bit(&self) -> bool {
        self.eight_bit
    }

    /// Whether the message ends with its own line end (written as CRLF).
    pub(super) fn ends_with_line_end(&self) -> bool {
        self.line_ends.ends_with_line_end()
    }

    /// The whole spooled message, flushed; `None` when it was finished before.
    pub(super) fn finish(&mut self) -> Result<Option<File>, DeliverError> {
        let Some(mut file) = self.file.take() else {
            return Ok(None);
        };
        self.line_ends
            .finish(&mut file)
            .map_err(|e| DeliverError::io("cannot write the spool file", e))?;
        file.into_inner()
            .map(Some)
            .map_err(|e| DeliverError::io("cannot write the spool file", e.into_error()))
    }
}
