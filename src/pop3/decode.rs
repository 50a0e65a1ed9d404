//! The response decoder: bytes from the server in, [`Event`]s out.
//!
//! The decoder reads one answer at a time: the caller starts each with [`Decoder::begin`] and its
//! shape, pushes received bytes with [`Decoder::buffer_mut`], and pulls events with
//! [`Decoder::next_event`] until the decoder is idle again. `Ok(None)` means "need more bytes",
//! never an error. Which answer comes next, for which command, is the business of
//! [`super::Pipeline`], the one queue of commands sent and answers due.
//!
//! A multi-line answer (RFC 1939 §3) comes out either as whole lines (`Expect::Lines`, for CAPA,
//! UIDL and LIST, each line capped at [`MAX_LINE`]) or as a stream of body chunks
//! (`Expect::Body`, for RETR and TOP) that is never held whole: a message line may be of any
//! length, only the decoder's buffer is bounded.
//!
//! Body chunks are dot-unstuffed and carry local line endings: each CRLF (or a bare LF from a
//! careless server) becomes one `\n`; every other byte, 8-bit included, passes through untouched.
//!
//! # The terminator
//!
//! RFC 1939 §3 ends a multi-line answer with CRLF "." CRLF, and that is the terminator. A line
//! holding only "." that ends in a bare LF ends the answer only when the answer is bare-LF
//! throughout: its status line and every line before it ended in a bare LF (a server that
//! writes LF everywhere still works). Once any line of the answer (its status line included)
//! ended in CRLF, a "." LF line is content, and its "." is kept: it cannot be a stuffed dot
//! (stuffing makes it ".."), and a "." lost from the content is the lesser harm than a message
//! cut short at a bare LF, whose rest a careless parser would take for the next answers. The
//! rule is decided per answer, never per line, so no byte of a message can end it early.

use super::types::Status;

/// Cap on a status line or a line of a listing, CRLF included. RFC 2449 §4 limits responses to
/// 512 octets; SASL challenges and chatty servers get some slack, but a server cannot make us
/// buffer without end.
pub const MAX_LINE: usize = 8 * 1024;

/// The shape of the answer to one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// One status line.
    Single,
    /// A status line; after `+OK`, lines up to the terminating `.` (CAPA, UIDL, LIST).
    Lines,
    /// A status line; after `+OK`, a message body streamed as chunks (RETR, TOP).
    Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The status line of an answer.
    Status(Status),
    /// One line of a multi-line listing, unstuffed, without its line ending.
    Line(Vec<u8>),
    /// A piece of a message body: unstuffed, line endings as `\n`.
    Data(Vec<u8>),
    /// The end of a multi-line answer.
    End,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("server sent a line longer than {MAX_LINE} octets")]
    LineTooLong,
    #[error("server sent an invalid status line: {0:?}")]
    BadStatus(String),
    #[error("server sent data nobody asked for: {0:?}")]
    Unexpected(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No answer expected now.
    Idle,
    /// Waiting for the status line of an answer of this shape.
    Status(Expect),
    /// Inside a multi-line listing; `crlf` is whether a line of this answer ended in CRLF.
    Lines { crlf: bool },
    /// Inside a message body; `at_line_start` decides whether a leading '.' is special, `crlf`
    /// whether a line of this answer (its status line included) ended in CRLF.
    Body { at_line_start: bool, crlf: bool },
    /// The body's terminating line has been consumed; `End` is next.
    BodyEnded,
}

/// The sans-IO response decoder. Its buffer is bounded by [`MAX_LINE`] plus one read.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            buf: Vec::with_capacity(64 * 1024),
            pos: 0,
            state: State::Idle,
        }
    }

    /// Starts reading an answer of shape `e`. The previous answer must have ended
    /// ([`Decoder::is_idle`]); bytes already buffered belong to this answer.
    pub fn begin(&mut self, e: Expect) {
        debug_assert!(self.is_idle(), "begin() while an answer is under way");
        self.state = State::Status(e);
    }

    /// Whether no answer is under way: the last one ended, or none began.
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    /// Whether a message body is being decoded (its `End` has not come out yet).
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Body { .. } | State::BodyEnded)
    }

    /// Whether an answer has begun and not ended: part of a line is buffered, or a multi-line
    /// answer is under way. Waiting then is waiting for the rest of something the server started
    /// to send, not for the server to think.
    pub fn mid_answer(&self) -> bool {
        self.buffered() > 0
            || matches!(
                self.state,
                State::Lines { .. } | State::Body { .. } | State::BodyEnded
            )
    }

    /// Received bytes not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The buffer to append received bytes to. Consumed bytes are dropped first, so the buffer
    /// never grows past one line plus what the caller reads in one go.
    pub fn buffer_mut(&mut self) -> &mut Vec<u8> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        &mut self.buf
    }

    /// Convenience for tests and simple callers: append `bytes`.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buffer_mut().extend_from_slice(bytes);
    }

    /// Hands out bytes left in the buffer and resets the decoder; used at the STLS upgrade, where
    /// anything the server sent after `+OK` in clear text must not be trusted (RFC 2595 §4 and the
    /// STARTTLS command-injection attacks).
    pub fn take_unread(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.pos);
        self.buf.clear();
        self.pos = 0;
        rest
    }

    /// The next event, `Ok(None)` when more bytes are needed. After an error the connection
    /// cannot be trusted and must be closed.
    pub fn next_event(&mut self) -> Result<Option<Event>, DecodeError> {
        match self.state {
            State::Idle => {
                if self.buffered() > 0 {
                    let junk = super::types::printable(&self.buf[self.pos..], 80);
                    return Err(DecodeError::Unexpected(junk));
                }
                Ok(None)
            }
            State::Status(expect) => {
                let Some((line, crlf)) = self.take_line()? else {
                    return Ok(None);
                };
                let status = Status::parse(&line)
                    .ok_or_else(|| DecodeError::BadStatus(super::types::printable(&line, 80)))?;
                self.state = match (status.kind, expect) {
                    (super::StatusKind::Ok, Expect::Lines) => State::Lines { crlf },
                    (super::StatusKind::Ok, Expect::Body) => State::Body {
                        at_line_start: true,
                        crlf,
                    },
                    // A SASL continuation keeps the exchange going: the next line the server
                    // sends is again a status line of the same answer.
                    (super::StatusKind::Continue, e) => State::Status(e),
                    _ => State::Idle,
                };
                Ok(Some(Event::Status(status)))
            }
            State::Lines { crlf: seen_crlf } => {
                let Some((line, crlf)) = self.take_line()? else {
                    return Ok(None);
                };
                if line == b"." && (crlf || !seen_crlf) {
                    self.state = State::Idle;
                    return Ok(Some(Event::End));
                }
                self.state = State::Lines {
                    crlf: seen_crlf || crlf,
                };
                if line == b"." {
                    // A bare-LF "." in an answer that used CRLF: content (see the module doc).
                    return Ok(Some(Event::Line(line)));
                }
                // RFC 1939 §3: a line beginning with '.' has had one more '.' prepended.
                let line = match line.strip_prefix(b".") {
                    Some(rest) => rest.to_vec(),
                    None => line,
                };
                Ok(Some(Event::Line(line)))
            }
            State::Body { .. } => self.body_chunk(),
            State::BodyEnded => {
                self.state = State::Idle;
                Ok(Some(Event::End))
            }
        }
    }

    /// One line without its line ending, and whether that ending was CRLF (else a bare LF), or
    /// `None` when incomplete.
    fn take_line(&mut self) -> Result<Option<(Vec<u8>, bool)>, DecodeError> {
        let avail = &self.buf[self.pos..];
        match memchr::memchr(b'\n', avail) {
            Some(i) if i + 1 > MAX_LINE => Err(DecodeError::LineTooLong),
            Some(i) => {
                let (line, crlf) = match avail[..i].strip_suffix(b"\r") {
                    Some(l) => (l.to_vec(), true),
                    None => (avail[..i].to_vec(), false),
                };
                self.pos += i + 1;
                Ok(Some((line, crlf)))
            }
            None if avail.len() >= MAX_LINE => Err(DecodeError::LineTooLong),
            None => Ok(None),
        }
    }

    /// Decodes as much body as is buffered into one chunk. Stops before the terminating line so
    /// that it comes out as its own `End` event.
    fn body_chunk(&mut self) -> Result<Option<Event>, DecodeError> {
        let State::Body {
            mut at_line_start,
            mut crlf,
        } = self.state
        else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(self.buffered());
        let mut ended = false;
        loop {
            let avail = &self.buf[self.pos..];
            if avail.is_empty() {
                break;
            }
            if at_line_start && avail[0] == b'.' {
                match avail.get(1) {
                    None => break,
                    Some(b'\n') if !crlf => {
                        // The answer is bare-LF throughout: a careless server's terminator.
                        self.pos += 2;
                        ended = true;
                        break;
                    }
                    // A bare-LF "." in an answer that used CRLF is content, its dot kept (see
                    // the module doc): the line is taken below as it stands.
                    Some(b'\n') => {}
                    Some(b'\r') => match avail.get(2) {
                        None => break,
                        Some(b'\n') => {
                            self.pos += 3;
                            ended = true;
                            break;
                        }
                        Some(_) => self.pos += 1,
                    },
                    // A stuffed dot: drop it, the rest of the line is content.
                    Some(_) => self.pos += 1,
                }
                if avail.get(1) != Some(&b'\n') {
                    at_line_start = false;
                    continue;
                }
            }
            let avail = &self.buf[self.pos..];
            match memchr::memchr(b'\n', avail) {
                Some(i) => {
                    let content = match avail[..i].strip_suffix(b"\r") {
                        Some(c) => {
                            crlf = true;
                            c
                        }
                        None => &avail[..i],
                    };
                    out.extend_from_slice(content);
                    out.push(b'\n');
                    self.pos += i + 1;
                    at_line_start = true;
                }
                None => {
                    // Mid-line: pass everything on except a final CR, which may be half a CRLF.
                    let take = if avail.last() == Some(&b'\r') {
                        avail.len() - 1
                    } else {
                        avail.len()
                    };
                    out.extend_from_slice(&avail[..take]);
                    self.pos += take;
                    at_line_start = false;
                    break;
                }
            }
        }
        if !out.is_empty() {
            // The terminator is consumed already; its End event is owed to the next call.
            self.state = if ended {
                State::BodyEnded
            } else {
                State::Body {
                    at_line_start,
                    crlf,
                }
            };
            return Ok(Some(Event::Data(out)));
        }
        if ended {
            self.state = State::Idle;
            return Ok(Some(Event::End));
        }
        self.state = State::Body {
            at_line_start,
            crlf,
        };
        Ok(None)
    }
}
