//! `[account.route]`: one catch-all mailbox on Dovecot routed to local recipients by the
//! envelope header the provider wrote, never by To/Cc: through Dovecot's LMTP to several users,
//! and into per-user Maildirs; Bcc and list messages, several recipients (one copy each), no
//! header (the default, or held), an unknown local part (held), a message that loops back
//! (held), and a retry after one recipient failed for now that delivers only to that one.

use std::fs;
use std::path::Path;

use crate::dovecot::{Dovecot, Options};
use crate::harness::Env;
use crate::support::config::Account;

/// The subjects of the messages in the Maildir at `dir` (`new/` and `cur/`), sorted.
fn subjects(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            let text = String::from_utf8_lossy(&fs::read(e.path()).unwrap()).into_owned();
            let subject = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or("(none)")
                .to_string();
            out.push(subject);
        }
    }
    out.sort();
    out
}

/// The texts of the messages in the Maildir at `dir`.
fn texts(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for e in fs::read_dir(dir.join(sub)).unwrap().flatten() {
            out.push(String::from_utf8_lossy(&fs::read(e.path()).unwrap()).into_owned());
        }
    }
    out
}

fn msg(headers: &str, subject: &str) -> Vec<u8> {
    format!("{headers}From: sender@elsewhere.example\nSubject: {subject}\n\nHello.\n").into_bytes()
}

/// The mailbox the provider fills: one message of each kind the route must handle.
fn fill(d: &Dovecot) {
    d.deliver_many(
        "catchall",
        [
            msg(
                "Delivered-To: alice@example.org\nTo: team@example.org\n",
                "one header",
            ),
            msg(
                "Delivered-To: alice@example.org\nDelivered-To: bob@example.org\n\
                 To: alice@example.org, bob@example.org\n",
                "two headers",
            ),
            // Bcc: To and Cc name others; only the envelope says bob.
            msg(
                "Delivered-To: bob@example.org\nTo: carol@elsewhere.example\n\
                 Cc: alice@example.org\n",
                "bcc",
            ),
            // A list message: the provider's header on top, the list server's own further down.
            msg(
                "Delivered-To: alice+lists@example.org\nReceived: by lists.example\n\
                 Delivered-To: list-owner@lists.example\nTo: list@lists.example\n\
                 List-Id: <list.lists.example>\n",
                "list",
            ),
            // No envelope header: To names alice, which must not be trusted.
            msg("To: alice@example.org\n", "no header"),
        ],
    );
}

fn start() -> Dovecot {
    let d = Dovecot::start_with(Options {
        lmtp: true,
        ..Options::default()
    });
    for u in ["catchall", "alice", "bob", "postmaster"] {
        d.add_user(u, "pw");
    }
    d
}

const ROUTE: &str = "[account.route]\nenvelope_header = \"Delivered-To\"\n\
                     local_domains = [\"example.org\"]\nrecipient_delimiter = \"+\"\n";

fn catchall(d: &Dovecot) -> Account {
    Account::dovecot(d).name("family").user("catchall")
}

#[test]
fn route_delivers_by_envelope_header_through_lmtp_to_several_dovecot_users() {
    crate::peers::require_peers!("dovecot", "dovecot-lmtp");
    let d = start();
    fill(&d);
    let env = Env::new();
    let socket = d.lmtp_socket().display().to_string();
    let account = catchall(&d)
        .set(
            "deliver",
            format_args!("{{ lmtp = {{ socket = {socket:?}, to = [\"{{recipient}}\"] }} }}"),
        )
        .extra(&format!(
            "{ROUTE}map = {{ \"alice@example.org\" = \"alice\", \"bob@example.org\" = \"bob\", \
             \"*\" = \"postmaster\" }}\n"
        ));
    env.write_config(&account.to_toml());
    env.popfetch(&["check"]).assert_code(0);

    // The preview: where each waiting message would go, from its header alone (TOP n 0), with
    // nothing fetched, delivered or deleted.
    let look = env.popfetch(&["check", "--connect"]);
    look.assert_code(0);
    let text = &look.stdout;
    assert!(
        text.contains("routing:      5 new messages told by header (TOP 0): 5 routed, 0 held"),
        "{text}"
    );
    let routed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(") -> ").map(|(_, to)| to))
        .collect();
    assert_eq!(
        routed,
        ["alice", "alice, bob", "bob", "alice", "postmaster"],
        "{text}"
    );
    assert_eq!(d.message_count("catchall"), 5, "the look deleted mail");
    assert!(
        subjects(&d.maildir("alice")).is_empty(),
        "the look delivered"
    );
    let json = env.popfetch(&["check", "--connect", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        v[0]["routing"]["messages"][1]["to"],
        serde_json::json!(["alice", "bob"])
    );

    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert_eq!(
        subjects(&d.maildir("alice")),
        ["list", "one header", "two headers"],
        "{}",
        run.stdout
    );
    assert_eq!(subjects(&d.maildir("bob")), ["bcc", "two headers"]);
    assert_eq!(subjects(&d.maildir("postmaster")), ["no header"]);
    assert_eq!(d.message_count("catchall"), 0, "all delivered, all deleted");
    // Every copy says which mailbox it came from: the loop guard's mark.
    for t in texts(&d.maildir("alice")) {
        assert!(
            t.contains("\nX-Popfetch-Delivered-To: catchall@localhost\n"),
            "{t}"
        );
    }

    // One of alice's copies comes back to the catch-all mailbox (a forward to the provider's
    // address): it is held, not delivered to alice a second time.
    let copy = fs::read_dir(d.maildir("alice").join("new"))
        .unwrap()
        .flatten()
        .map(|e| fs::read(e.path()).unwrap())
        .find(|m| String::from_utf8_lossy(m).contains("Subject: one header"))
        .unwrap();
    d.deliver("catchall", &copy);
    let run = env.popfetch(&["fetch"]);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "{out}");
    assert!(out.contains("mail loop"), "{out}");
    assert_eq!(
        subjects(&d.maildir("alice")).len(),
        3,
        "not delivered again"
    );
    assert_eq!(d.message_count("catchall"), 1, "held on the server");
    let again = env.popfetch(&["fetch"]);
    assert!(!again.stderr.contains("mail loop"), "held: not tried again");
    assert_eq!(subjects(&d.maildir("alice")).len(), 3);
}

#[test]
fn route_without_a_default_holds_unknown_and_headerless_mail_until_the_map_changes() {
    crate::peers::require_peers!("dovecot", "dovecot-lmtp");
    let d = start();
    d.deliver_many(
        "catchall",
        [
            msg("Delivered-To: alice@example.org\n", "known"),
            msg("Delivered-To: mallory@example.org\n", "unknown local part"),
            msg(
                "Delivered-To: alice@example.org\nDelivered-To: mallory@example.org\n",
                "known and unknown",
            ),
            msg("To: alice@example.org\n", "no header"),
        ],
    );
    let env = Env::new();
    let mail = env.path().join("mail");
    let routed = |map: &str| {
        catchall(&d)
            .set(
                "deliver",
                format_args!(
                    "{{ maildir = \"{}/{{recipient}}/Maildir\" }}",
                    mail.display()
                ),
            )
            .extra(&format!("{ROUTE}map = {{ {map} }}\n"))
            .to_toml()
    };
    env.write_config(&routed("\"alice@example.org\" = \"alice\""));
    let look = env.popfetch(&["check", "--connect"]);
    look.assert_code(0);
    assert!(
        look.stdout
            .contains("4 new messages told by header (TOP 0): 1 routed, 3 held"),
        "{}",
        look.stdout
    );
    assert!(
        look.stdout
            .contains(": held: mallory@example.org: no entry in the route's map"),
        "{}",
        look.stdout
    );
    let run = env.popfetch(&["fetch"]);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "{out}");
    assert!(out.contains("3 held"), "{out}");
    assert!(
        out.contains("mallory@example.org: no entry in the route's map"),
        "{out}"
    );
    assert!(out.contains("no delivered-to header"), "{out}");
    assert_eq!(subjects(&mail.join("alice/Maildir")), ["known"]);
    assert_eq!(
        d.message_count("catchall"),
        3,
        "held on the server, not dropped"
    );
    // Held: the next poll leaves them alone.
    let again = env.popfetch(&["fetch"]);
    assert!(!again.stderr.contains("no entry"), "{}", again.stderr);
    // A route that knows mallory and has a default releases them.
    env.write_config(&routed(
        "\"alice@example.org\" = \"alice\", \"*@example.org\" = \"{local}\", \"*\" = \"postmaster\"",
    ));
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(
        subjects(&mail.join("alice/Maildir")),
        ["known", "known and unknown"]
    );
    assert_eq!(
        subjects(&mail.join("mallory/Maildir")),
        ["known and unknown", "unknown local part"]
    );
    assert_eq!(subjects(&mail.join("postmaster/Maildir")), ["no header"]);
    assert_eq!(d.message_count("catchall"), 0);
}

#[test]
fn route_retry_after_one_recipient_failed_for_now_delivers_only_to_that_one() {
    crate::peers::require_peers!("dovecot", "dovecot-lmtp");
    // Every mailbox may hold 10 KB; bob's is nearly full, so LMTP answers 452 for him alone.
    let d = Dovecot::start_with_extra(
        Options {
            lmtp: true,
            ..Options::default()
        },
        "mail_plugins = $mail_plugins quota\nquota_full_tempfail = yes\n\
         plugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=10K\n}\n",
    );
    for u in ["catchall", "alice", "bob"] {
        d.add_user(u, "pw");
    }
    d.deliver("bob", &crate::harness::message(900, 8000));
    let big = {
        let mut m = msg(
            "Delivered-To: alice@example.org\nDelivered-To: bob@example.org\n",
            "for both",
        );
        m.extend(std::iter::repeat_n(b'x', 4000));
        m.push(b'\n');
        m
    };
    d.deliver("catchall", &big);
    let env = Env::new();
    let socket = d.lmtp_socket().display().to_string();
    let account = catchall(&d)
        .set(
            "deliver",
            format_args!("{{ lmtp = {{ socket = {socket:?}, to = [\"{{recipient}}\"] }} }}"),
        )
        .extra(&format!(
            "{ROUTE}map = {{ \"*@example.org\" = \"{{local}}\" }}\n"
        ));
    env.write_config(&account.to_toml());
    let run = env.popfetch(&["fetch"]);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "{out}");
    assert!(out.contains("452"), "{out}");
    assert_eq!(subjects(&d.maildir("alice")), ["for both"]);
    assert_eq!(d.message_count("bob"), 1, "only what was there");
    assert_eq!(d.message_count("catchall"), 1, "kept for bob");
    // bob makes room; the retry reaches him, and alice does not get a second copy.
    for sub in ["new", "cur"] {
        for e in fs::read_dir(d.maildir("bob").join(sub)).unwrap().flatten() {
            fs::remove_file(e.path()).unwrap();
        }
    }
    let _ = fs::remove_file(d.maildir("bob").join("maildirsize"));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert_eq!(subjects(&d.maildir("bob")), ["for both"], "{}", run.stdout);
    assert_eq!(subjects(&d.maildir("alice")), ["for both"], "one copy");
    assert_eq!(d.message_count("catchall"), 0);
}

#[test]
fn route_into_per_user_maildirs_gives_each_recipient_one_copy() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("catchall", "pw");
    fill(&d);
    let env = Env::new();
    let mail = env.path().join("mail");
    let account = catchall(&d)
        .set(
            "deliver",
            format_args!("{{ maildir = \"{}/{{recipient}}\" }}", mail.display()),
        )
        .extra(&format!(
            "{ROUTE}map = {{ \"*@example.org\" = \"{{local}}\", \"*\" = \"postmaster\" }}\n"
        ));
    env.write_config(&account.to_toml());
    let check = env.popfetch(&["check"]);
    check.assert_code(0);
    assert!(
        check.stdout.contains(
            "route = { envelope_header = \"delivered-to\", local_domains = [\"example.org\"], \
             recipient_delimiter = \"+\", map = { \"*@example.org\" = \"{local}\", \"*\" = \"postmaster\" } }"
        ),
        "{}",
        check.stdout
    );
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(
        subjects(&mail.join("alice")),
        ["list", "one header", "two headers"]
    );
    assert_eq!(subjects(&mail.join("bob")), ["bcc", "two headers"]);
    assert_eq!(subjects(&mail.join("postmaster")), ["no header"]);
    assert_eq!(d.message_count("catchall"), 0);
}

#[test]
fn route_config_errors_say_what_to_write() {
    let env = Env::new();
    let base = Account::new("localhost", 995).user("u").password("p");
    for (deliver, extra, want) in [
        (
            "{ maildir = \"/tmp/x\" }",
            format!("{ROUTE}map = {{ \"*\" = \"postmaster\" }}\n"),
            "say where each recipient's copy goes with `{recipient}`",
        ),
        (
            "{ maildir = \"/tmp/{recipient}\" }",
            String::new(),
            "this account has no route",
        ),
        (
            "{ maildir = \"/tmp/{recipient}\" }",
            format!("{ROUTE}map = {{ \"bob@example.net\" = \"bob\" }}\n"),
            "\"bob@example.net\" can never match",
        ),
        (
            "{ maildir = \"/tmp/{recipient}\" }",
            format!("{ROUTE}map = {{ \"bob@example.org\" = \"../bob\" }}\n"),
            "a recipient is letters, digits",
        ),
        (
            "{ mda = [\"/usr/bin/procmail\", \"-d\", \"x{recipient}\"] }",
            format!("{ROUTE}map = {{ \"*\" = \"postmaster\" }}\n"),
            "must be a whole argument",
        ),
        (
            "{ maildir = \"/tmp/{recipient}\" }",
            "[account.route]\nlocal_domains = [\"example.org\"]\nmap = { \"*\" = \"x\" }\n".into(),
            "route.envelope_header",
        ),
    ] {
        let account = base.clone().set("deliver", deliver).extra(&extra);
        env.write_config(&account.to_toml());
        let run = env.popfetch(&["check"]);
        let out = format!("{}{}", run.stdout, run.stderr);
        assert_ne!(run.code, 0, "{deliver} {extra}: {out}");
        assert!(out.contains(want), "want {want:?}:\n{out}");
    }
}
