//! The small TOML writer the importers share: the generated config is written by hand, with
//! comments where they help, but every value goes through [`string`] or [`array`], so no rc file
//! content can break out of its quotes.

use std::fmt::Write;

/// `s` as a TOML basic string, quotes included. Control characters, `"` and `\` are escaped
/// (TOML 1.0 §String); everything else is carried as it is.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An inline array of strings.
pub fn array(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| string(s)).collect();
    format!("[{}]", inner.join(", "))
}

/// Text made safe for a `#` comment line: one line, no control characters.
pub fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Appends `key = value` to `out`.
pub fn line(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "{key} = {value}");
}

/// Appends `# text`, one comment line per line of `text`.
pub fn comment(out: &mut String, text: &str) {
    for l in text.lines() {
        let l = comment_text(l);
        if l.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {l}");
        }
    }
}
