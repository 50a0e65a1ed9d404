//! Routing a shared mailbox (`[account.route]`): who a message is for, read from the envelope
//! header the provider wrote when it put the message in the mailbox, never guessed from
//! `To`/`Cc` (a Bcc or list message names no local recipient there). Sans-IO: a message's
//! header section in, a [`Decision`] out.
//!
//! The rules, in order:
//! 1. A message carrying `X-Popfetch-Delivered-To: USER@HOST` for this very mailbox was
//!    delivered from it by popfetch before and has come back (a forward to the provider's
//!    address, an auto-reply): it is held, never delivered again ([`LOOP_HEADER`]).
//! 2. The trusted addresses: every occurrence of `envelope_header`, or only the one
//!    `envelope_header_index` counts from the top. Addresses outside `local_domains` are not
//!    ours and are left out (a list server's own `Delivered-To`, say).
//! 3. Each local address is looked up as itself, then without its `recipient_delimiter` tag,
//!    then as `*@domain`, then as `*`. An address that maps nowhere, or to `hold`, holds the
//!    whole message: delivering it to the others would lose that one's copy.
//! 4. A message with no local address goes where `*` says; without `*`, it is held.
//! 5. Each distinct recipient gets one copy.
//!
//! Held messages stay on the server and are reported; a changed route or `popfetch retry`
//! releases them.

use crate::config::{Route, RouteTo};

/// The header popfetch adds to each copy of a routed message, naming the mailbox it came from.
pub const LOOP_HEADER: &str = "X-Popfetch-Delivered-To";

/// Most distinct recipients of one message; more is held (a bounded fan-out).
pub const MAX_RECIPIENTS: usize = 64;

/// What becomes of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Deliver one copy to each, in the order their addresses came.
    To(Vec<String>),
    /// Leave it on the server, held, for this reason.
    Hold(String),
}

/// Routes the message whose header section (or its start) is `head`, taken from the mailbox
/// `mailbox` (`USER@HOST`, as [`LOOP_HEADER`] names it).
pub fn decide(route: &Route, head: &[u8], mailbox: &str) -> Decision {
    let fields = fields(head);
    if fields.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case(LOOP_HEADER) && value.trim().eq_ignore_ascii_case(mailbox)
    }) {
        return Decision::Hold(format!(
            "mail loop: it carries `{LOOP_HEADER}: {mailbox}`, so popfetch delivered it from this \
             mailbox before"
        ));
    }
    let mut trusted: Vec<&str> = fields
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(&route.envelope_header))
        .map(|(_, value)| value.as_str())
        .collect();
    if let Some(i) = route.envelope_header_index {
        trusted = trusted.get(i - 1).copied().into_iter().collect();
    }
    let mut recipients: Vec<String> = Vec::new();
    let mut local_seen = false;
    for address in trusted.iter().flat_map(|v| addresses(v)) {
        let Some((local, domain)) = address.rsplit_once('@') else {
            continue;
        };
        if !route.local_domains.iter().any(|d| d == domain) {
            continue;
        }
        local_seen = true;
        let recipient = match lookup(route, local, domain) {
            Some(RouteTo::Recipient(r)) => {
                let base = base_local(route, local);
                let r = r.replace("{local}", base);
                if !Route::usable_recipient(&r) {
                    return Decision::Hold(format!(
                        "{address}: {r:?} cannot name a recipient (letters, digits and `._+-=@` \
                         only)"
                    ));
                }
                r
            }
            Some(RouteTo::Hold) => {
                return Decision::Hold(format!("{address}: the route says to hold it"));
            }
            None => {
                return Decision::Hold(format!(
                    "{address}: no entry in the route's map (and no \"*\")"
                ));
            }
        };
        if !recipients.contains(&recipient) {
            if recipients.len() == MAX_RECIPIENTS {
                return Decision::Hold(format!("more than {MAX_RECIPIENTS} recipients"));
            }
            recipients.push(recipient);
        }
    }
    if local_seen {
        return Decision::To(recipients);
    }
    let what = match trusted.is_empty() {
        true => format!("no {} header", route.envelope_header),
        false => format!("no address in {}", route.local_domains.join(", ")),
    };
    match &route.any {
        Some(RouteTo::Recipient(r)) if !r.contains("{local}") => Decision::To(vec![r.clone()]),
        Some(RouteTo::Recipient(_)) => Decision::Hold(format!(
            "{what}, and \"*\" maps to a local part there is none of"
        )),
        Some(RouteTo::Hold) => Decision::Hold(format!("{what}; the route says to hold it")),
        None => Decision::Hold(format!("{what}, and the route has no \"*\"")),
    }
}

/// The map's entry for `local@domain` (both lower case).
fn lookup<'a>(route: &'a Route, local: &str, domain: &str) -> Option<&'a RouteTo> {
    let exact = route.addresses.get(&format!("{local}@{domain}"));
    let base = base_local(route, local);
    let untagged = (base != local)
        .then(|| route.addresses.get(&format!("{base}@{domain}")))
        .flatten();
    exact
        .or(untagged)
        .or_else(|| route.domains.get(domain))
        .or(route.any.as_ref())
}

/// The local part without its `recipient_delimiter` tag.
fn base_local<'a>(route: &Route, local: &'a str) -> &'a str {
    match route.recipient_delimiter {
        Some(d) => local.split(d).next().unwrap_or(local),
        None => local,
    }
}

/// Most header fields looked at; a header section is at most what was read before delivery.
const MAX_FIELDS: usize = 4096;

/// The header fields of `head` (up to its blank line), unfolded, names as written.
pub fn fields(head: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(text.trim());
            }
            continue;
        }
        if out.len() == MAX_FIELDS {
            break;
        }
        if let Some((name, value)) = text.split_once(':') {
            out.push((name.trim_end().to_string(), value.trim().to_string()));
        }
    }
    out
}

/// The addresses in an envelope header's value, lower case: `a@b`, `<a@b>`, `"A" <a@b>`, with
/// comments and several separated by commas.
pub fn addresses(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter_map(|part| {
            let part = match (part.find('<'), part.rfind('>')) {
                (Some(a), Some(b)) if a < b => &part[a + 1..b],
                _ => part.split('(').next().unwrap_or(part),
            };
            let a = part.trim().to_ascii_lowercase();
            let (local, domain) = a.rsplit_once('@')?;
            let ok = !local.is_empty()
                && !domain.is_empty()
                && !a.contains(|c: char| c.is_whitespace() || c.is_control() || c == '"');
            ok.then(|| a.trim_end_matches('.').to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests;
