//! The message as DATA carries it (RFC 5321 §4.5.2, §2.3.8): every line end CRLF, a line that
//! begins with "." given one more, and the end marked by "." alone on a line.

use std::io::Write;

/// Makes every line ending CRLF as bytes pass: LF, CRLF and a bare CR each become one CRLF.
/// (The local form has LF line ends; a CR before one came from a CR CR LF on the wire.) A bare
/// CR left alone could reach the server as `\r.\r\n`, which some read as the end of the data
/// (SMTP smuggling). A CR at the end of one write waits for the next to see whether an LF
/// follows.
#[derive(Debug, Default)]
pub struct LineEnds {
    /// The last byte seen was a CR, not yet written.
    cr: bool,
    /// The last bytes written were a line end.
    at_line_end: bool,
}

impl LineEnds {
    pub fn write(&mut self, data: &[u8], out: &mut impl Write) -> std::io::Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            if self.cr {
                self.cr = false;
                out.write_all(b"\r\n")?;
                self.at_line_end = true;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match memchr::memchr2(b'\r', b'\n', rest) {
                None => {
                    out.write_all(rest)?;
                    self.at_line_end = false;
                    return Ok(());
                }
                Some(i) => {
                    if i > 0 {
                        out.write_all(&rest[..i])?;
                        self.at_line_end = false;
                    }
                    if rest[i] == b'\n' {
                        out.write_all(b"\r\n")?;
                        self.at_line_end = true;
                    } else {
                        self.cr = true;
                    }
                    rest = &rest[i + 1..];
                }
            }
        }
        Ok(())
    }

    /// Writes the line end a CR at the very end stands for.
    pub fn finish(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if std::mem::take(&mut self.cr) {
            out.write_all(b"\r\n")?;
            self.at_line_end = true;
        }
        Ok(())
    }

    /// Whether the output ends with CRLF (after [`LineEnds::finish`]).
    pub fn ends_with_line_end(&self) -> bool {
        self.at_line_end
    }
}

/// Dot-stuffing over text whose line ends are all CRLF already ([`LineEnds`]' output), in
/// pieces split anywhere: a "." that begins a line goes out as "..".
#[derive(Debug)]
pub struct DotStuff {
    /// The next byte begins a line.
    at_line_start: bool,
    /// The last byte was a CR.
    cr: bool,
    /// Any byte at all was written.
    any: bool,
}

impl Default for DotStuff {
    fn default() -> DotStuff {
        DotStuff {
            at_line_start: true,
            cr: false,
            any: false,
        }
    }
}

impl DotStuff {
    pub fn new() -> DotStuff {
        DotStuff::default()
    }

    /// Appends `data`, stuffed, to `out`.
    pub fn write(&mut self, data: &[u8], out: &mut Vec<u8>) {
        out.reserve(data.len() + 8);
        let mut rest = data;
        while !rest.is_empty() {
            if self.at_line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            // Up to and including the next LF: the rest of this line.
            let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            let (line, tail) = rest.split_at(end);
            out.extend_from_slice(line);
            self.any = true;
            let ends = line.last() == Some(&b'\n')
                && (line.len() > 1 && line[line.len() - 2] == b'\r' || line.len() == 1 && self.cr);
            self.at_line_start = ends;
            self.cr = line.last() == Some(&b'\r');
            rest = tail;
        }
    }

    /// The end of the data: a CRLF if the text did not end with one, then ".\r\n".
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.any && !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = DotStuff::default();
    }
}
