//! Shell command lines as argument lists: how a command written for `/bin/sh` (an old tool's
//! `mda`, a password command, or a string where the config wants a list) becomes the argv
//! popfetch runs without a shell, or, when it needs the shell, an explicit `/bin/sh -c`.

/// How an rc file's delivery or password command becomes an argv list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub argv: Vec<String>,
    /// Why it runs through `/bin/sh -c`, when it does.
    pub shell_reason: Option<String>,
    /// Placeholders popfetch has no value for.
    pub unknown_placeholders: Vec<String>,
}

/// Splits a command line the way `/bin/sh` would, if it needs nothing else of the shell:
/// words, single and double quotes, backslashes. `None` when it uses anything more (pipes,
/// redirections, variables, globs, command substitution, `~`, several commands).
pub fn shell_words(cmd: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return None,
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => cur.push(c),
                            Some('$' | '`') => return None,
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return None,
                        },
                        Some('$' | '`') => return None,
                        Some(c) => cur.push(c),
                        None => return None,
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => cur.push(c),
                    None => return None,
                }
            }
            '|' | '&' | ';' | '<' | '>' | '(' | ')' | '$' | '`' | '*' | '?' | '[' | '\n' | '\r' => {
                return None;
            }
            '#' if !in_word => return None,
            '~' if !in_word => return None,
            '=' if !in_word || (words.is_empty() && !cur.contains('/')) => return None,
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

/// Quotes `s` for `/bin/sh` (single quotes).
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Translates a command the old tool ran through `/bin/sh -c` into popfetch's argv list.
/// `placeholders` maps the tool's placeholders (`%F`, `%T`, `%(sender)` …) to what they
/// become: `Some("{from}")`-like popfetch placeholders (only whole arguments are replaced), or
/// a constant (the local user name of a single-drop account). A placeholder inside a larger
/// argument, or a command that needs the shell, becomes `["/bin/sh", "-c", SCRIPT, "sh",
/// "{from}"]`, the sender passed as `"$1"` so that the shell never reads it as code.
pub fn translate_command(cmd: &str, placeholders: &[(&str, Placeholder)]) -> Command {
    let unknown: Vec<String> = placeholders
        .iter()
        .filter(|(p, v)| matches!(v, Placeholder::Unknown) && cmd.contains(p))
        .map(|(p, _)| p.to_string())
        .collect();
    let words = shell_words(cmd);
    if let Some(words) = words.clone()
        && !words.is_empty()
    {
        let mut argv = Vec::new();
        let mut whole = true;
        for w in words {
            let mut arg = w.clone();
            for (p, v) in placeholders {
                if !arg.contains(p) {
                    continue;
                }
                match v {
                    Placeholder::Popfetch(name) if arg == *p => arg = name.to_string(),
                    Placeholder::Popfetch(_) => whole = false,
                    Placeholder::Constant(c) => arg = arg.replace(p, c),
                    Placeholder::Unknown => {}
                }
            }
            argv.push(arg);
        }
        if whole {
            return Command {
                argv,
                shell_reason: None,
                unknown_placeholders: unknown,
            };
        }
    }
    // Through the shell: popfetch placeholders become positional parameters.
    let mut extra: Vec<&'static str> = Vec::new();
    let script = shell_substitute(cmd, placeholders, &mut extra);
    let mut argv = vec!["/bin/sh".to_string(), "-c".to_string(), script];
    if !extra.is_empty() {
        argv.push("sh".into());
        argv.extend(extra.iter().map(|e| e.to_string()));
    }
    Command {
        argv,
        shell_reason: Some(match words {
            None => "it uses the shell (variables, pipes, redirections or the like)".to_string(),
            Some(_) => "a placeholder is part of a larger argument".to_string(),
        }),
        unknown_placeholders: unknown,
    }
}

/// `cmd` with each placeholder replaced for `/bin/sh`: a popfetch placeholder by a positional
/// parameter (`"$1"` …, the value then passed after the script), a constant by itself quoted.
/// Quotes are tracked so that the replacement works inside '…' and "…" as outside.
fn shell_substitute(
    cmd: &str,
    placeholders: &[(&str, Placeholder)],
    extra: &mut Vec<&'static str>,
) -> String {
    #[derive(PartialEq)]
    enum Q {
        None,
        Single,
        Double,
    }
    let mut out = String::new();
    let mut q = Q::None;
    let mut rest = cmd;
    'outer: while let Some(c) = rest.chars().next() {
        for (p, v) in placeholders {
            if !rest.starts_with(p) {
                continue;
            }
            let value = match v {
                Placeholder::Popfetch(name) => {
                    let n = match extra.iter().position(|e| e == name) {
                        Some(i) => i + 1,
                        None => {
                            extra.push(name);
                            extra.len()
                        }
                    };
                    let after = &rest[p.len()..];
                    if q == Q::Single && out.ends_with('\'') && after.starts_with('\'') {
                        // '%F' as a whole quoted word: just "$1".
                        out.pop();
                        out.push_str(&format!("\"${n}\""));
                        rest = &after[1..];
                        q = Q::None;
                        continue 'outer;
                    }
                    match q {
                        Q::None => format!("\"${n}\""),
                        Q::Single => format!("'\"${n}\"'"),
                        Q::Double => format!("${n}"),
                    }
                }
                Placeholder::Constant(c) => match q {
                    Q::None => sh_quote(c),
                    Q::Single => format!("'{}'", sh_quote(c)),
                    Q::Double => format!("\"{}\"", sh_quote(c)),
                },
                Placeholder::Unknown => continue,
            };
            out.push_str(&value);
            rest = &rest[p.len()..];
            continue 'outer;
        }
        match (c, &q) {
            ('\'', Q::None) => q = Q::Single,
            ('\'', Q::Single) => q = Q::None,
            ('"', Q::None) => q = Q::Double,
            ('"', Q::Double) => q = Q::None,
            ('\\', Q::None | Q::Double) => {
                out.push(c);
                rest = &rest[1..];
                if let Some(n) = rest.chars().next() {
                    out.push(n);
                    rest = &rest[n.len_utf8()..];
                }
                continue;
            }
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// What a tool's placeholder becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// A popfetch placeholder, replaced when it is a whole argument.
    Popfetch(&'static str),
    /// A fixed value.
    Constant(String),
    /// No equivalent.
    Unknown,
}

#[cfg(test)]
mod tests;
