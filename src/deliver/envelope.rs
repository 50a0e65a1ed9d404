//! The envelope sender of a message, read from its header section: `Return-Path` (the null
//! sender `<>` stays null), else the first address of `From`. Only a conservative address
//! survives: anything with spaces, control characters, quotes, shell metacharacters beyond those
//! RFC 5322 allows in an atom, or a leading `-` (an option to the program that receives it) is
//! dropped, so a message can never smuggle an argument into an MDA's command line.

/// Where the header section ends: the index just past the empty line, if it is in `buf`.
pub fn header_end(buf: &[u8]) -> Option<usize> {
    if buf.first() == Some(&b'\n') {
        return Some(1);
    }
    memchr::memmem::find(buf, b"\n\n").map(|i| i + 2)
}

/// The envelope sender. `Some("")` is the null sender; `None` when the headers name no usable
/// address.
pub fn sender(headers: &[u8]) -> Option<String> {
    if let Some(rp) = header_value(headers, "return-path") {
        let rp = rp.trim();
        if rp == "<>" {
            return Some(String::new());
        }
        if let Some(a) = first_address(rp) {
            return Some(a);
        }
    }
    header_value(headers, "from").and_then(|f| first_address(&f))
}

/// The unfolded value of the first header field called `name` (case-insensitive), lossy UTF-8.
fn header_value(headers: &[u8], name: &str) -> Option<String> {
    header_value_bytes(headers, name).map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// The unfolded value of the first header field called `name` (case-insensitive), as it is.
pub fn header_value_bytes(headers: &[u8], name: &str) -> Option<Vec<u8>> {
    let end = header_end(headers).unwrap_or(headers.len());
    let mut lines = headers[..end].split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        if !line[..colon]
            .trim_ascii_end()
            .eq_ignore_ascii_case(name.as_bytes())
        {
            continue;
        }
        let mut value = line[colon + 1..].to_vec();
        // RFC 5322 §2.2.3: a line starting with white space continues the field.
        while let Some(next) = lines.peek() {
            if next.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                value.push(b' ');
                value.extend_from_slice(next.strip_suffix(b"\r").unwrap_or(next));
                lines.next();
            } else {
                break;
            }
        }
        return Some(value);
    }
    None
}

/// The first address in a field value: inside `<...>` if there is one, else the first token
/// holding an `@`. Comments in parentheses are skipped.
fn first_address(value: &str) -> Option<String> {
    let candidate = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].trim().to_string(),
        _ => {
            let no_comments = strip_comments(value);
            no_comments
                .split(|c: char| c.is_whitespace() || c == ',')
                .find(|t| t.contains('@'))?
                .to_string()
        }
    };
    is_safe_address(&candidate).then_some(candidate)
}

fn strip_comments(s: &str) -> String {
    let mut depth = 0usize;
    s.chars()
        .filter(|&c| match c {
            '(' => {
                depth += 1;
                false
            }
            ')' => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => depth == 0,
        })
        .collect()
}

/// `local@domain` made of RFC 5322 atom characters and dots, not starting with `-`, at most 254
/// characters.
pub fn is_safe_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    let atom = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-.".contains(c);
    !local.is_empty()
        && !domain.is_empty()
        && a.len() <= 254
        && !a.starts_with('-')
        && local.chars().all(atom)
        && domain.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '[' || c == ']' || c == ':'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_path_then_from() {
        let h = b"Return-Path: <bounce@example.org>\nFrom: Alice <alice@example.org>\n\nbody";
        assert_eq!(sender(h).as_deref(), Some("bounce@example.org"));
        let h = b"Return-Path: <>\nFrom: alice@example.org\n\n";
        assert_eq!(sender(h).as_deref(), Some(""));
        let h = b"Subject: x\nFROM: \"Doe, John\" (work)\n <john@example.org>\n\n";
        assert_eq!(sender(h).as_deref(), Some("john@example.org"));
        let h = b"From: bob@example.net (Bob)\n\n";
        assert_eq!(sender(h).as_deref(), Some("bob@example.net"));
        assert_eq!(sender(b"Subject: none\n\nFrom: body@example.org\n"), None);
        assert_eq!(header_end(b"A: b\n\nbody"), Some(6));
        assert_eq!(header_end(b"\nbody"), Some(1));
        assert_eq!(header_end(b"A: b\n"), None);
    }

    #[test]
    fn hostile_addresses_are_dropped() {
        for from in [
            "From: <$(touch /tmp/pwned)@example.org>\n\n",
            "From: <-oQ/tmp/x@example.org>\n\n",
            "From: \"a\\\"b\" <a b@example.org>\n\n",
            "From: <`id`;rm -rf /@example.org>\n\n",
            "From: <x@exa mple.org>\n\n",
            "From: <>\n\n",
        ] {
            assert_eq!(sender(from.as_bytes()), None, "{from}");
        }
    }
}
