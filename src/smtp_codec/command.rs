//! Client commands, each encoded as one CRLF-terminated line.

/// A command. Addresses are written between angle brackets as given; the caller has checked
/// them (no CR, LF or `>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    Lhlo(&'a str),
    Ehlo(&'a str),
    Starttls,
    /// `MAIL FROM:<sender>`; `None` is the null sender `<>`. `body_8bit` adds
    /// `BODY=8BITMIME` (RFC 6152), `smtputf8` adds `SMTPUTF8` (RFC 6531 §3.4).
    Mail {
        from: Option<&'a str>,
        body_8bit: bool,
        smtputf8: bool,
    },
    Rcpt(&'a str),
    Data,
    Rset,
    Quit,
}

impl Command<'_> {
    /// Appends the command line to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let line = match self {
            Command::Lhlo(name) => format!("LHLO {name}"),
            Command::Ehlo(name) => format!("EHLO {name}"),
            Command::Starttls => "STARTTLS".to_string(),
            Command::Mail {
                from,
                body_8bit,
                smtputf8,
            } => {
                let mut s = format!("MAIL FROM:<{}>", from.unwrap_or(""));
                if *body_8bit {
                    s.push_str(" BODY=8BITMIME");
                }
                if *smtputf8 {
                    s.push_str(" SMTPUTF8");
                }
                s
            }
            Command::Rcpt(to) => format!("RCPT TO:<{to}>"),
            Command::Data => "DATA".to_string(),
            Command::Rset => "RSET".to_string(),
            Command::Quit => "QUIT".to_string(),
        };
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Whether `s` may stand inside `<…>` or after LHLO: no line breaks, brackets or spaces that
    /// would change the command.
    pub fn safe_argument(s: &str) -> bool {
        !s.bytes()
            .any(|b| matches!(b, b'\r' | b'\n' | b'<' | b'>' | b' ' | 0))
    }
}
