//! The documentation that ships with the package stays true to the code.
//!
//! `contrib/man/popfetch.1` and the shell completions in `contrib/completions/` are generated
//! from the clap definitions (`popfetch::cli::Cli`) and committed, so packaging needs no build
//! step and a change of the command line that is not regenerated fails here:
//! `POPFETCH_BLESS=1 cargo test --test it docs` rewrites them. The config reference
//! (`contrib/man/popfetch.toml.5`) and the annotated example (`contrib/config.toml`) are
//! written by hand; they are checked against the keys the config parser itself accepts (read
//! from its "unknown key …; this table's keys are: …" errors) and the keys the README names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;
use popfetch::cli::Cli;

const BLESS_VAR: &str = "POPFETCH_BLESS";
const BLESS_HINT: &str = "run POPFETCH_BLESS=1 cargo test --test it docs to update";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The generated files, by path relative to the repository.
fn generated() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("contrib/man/popfetch.1", man_page()),
        ("contrib/completions/popfetch.bash", completion(Shell::Bash)),
        ("contrib/completions/_popfetch", completion(Shell::Zsh)),
        ("contrib/completions/popfetch.fish", completion(Shell::Fish)),
    ]
}

#[test]
fn man_page_and_completions_match_the_cli() {
    let bless = std::env::var_os(BLESS_VAR).is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (rel, want) in generated() {
        let path = repo().join(rel);
        let have = std::fs::read(&path).ok();
        if have.as_deref() == Some(want.as_slice()) {
            continue;
        }
        if bless {
            let dir = path.parent().expect("a file in a directory");
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            std::fs::write(&path, &want)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            eprintln!("docs: wrote {rel}");
        } else {
            stale.push(format!(
                "  {rel}: {}",
                first_difference(have.as_deref(), &want)
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "generated documentation differs from the clap definitions:\n{}\n{BLESS_HINT}",
        stale.join("\n")
    );
}

#[test]
fn every_status_field_is_documented_in_the_man_page() {
    let man = read("contrib/man/popfetch.1");
    let section = man_section(&man, "STATUS");
    let row = serde_json::to_value(popfetch::status::Status::default()).unwrap();
    let fields = row.as_object().unwrap().keys().map(String::as_str);
    let document = ["config", "config_error", "state_dir", "accounts", "health"];
    let missing: Vec<&str> = fields
        .chain(document)
        .filter(|f| !section.contains(&format!("\\fB{f}\\fR")))
        .collect();
    assert!(
        missing.is_empty(),
        "popfetch.1: STATUS does not describe {missing:?}"
    );
    assert!(section.contains(&format!("\\fBschema\\fR\n{},", popfetch::status::SCHEMA)));
}

#[test]
fn man_page_renders_without_warnings() {
    crate::peers::require_peers!("man");
    // man-db's own check, the one lintian runs: groff warnings (bad escapes, unknown macros,
    // lines that cannot be broken) for both pages.
    for rel in ["contrib/man/popfetch.1", "contrib/man/popfetch.toml.5"] {
        let out = std::process::Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l"])
            .arg(repo().join(rel))
            .env("MANWIDTH", "80")
            .output()
            .unwrap_or_else(|e| panic!("cannot run man (Debian: man-db): {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "man --warnings -l {rel}: {}\n{stderr}",
            out.status
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("NAME"),
            "man -l {rel} rendered no NAME section"
        );
    }
}

#[test]
fn every_config_key_is_documented_in_the_man_page_and_the_example() {
    let keys = parser_keys();
    let man = read("contrib/man/popfetch.toml.5");
    let example = read("contrib/config.toml");
    let example_keys = keys_in_toml_text(&example);

    let mut missing = Vec::new();
    let mut expect_in_man = |section: &str, key: &str| {
        let text = man_section(&man, section);
        if !text.lines().any(|l| is_man_item(l, key)) {
            missing.push(format!(
                "popfetch.toml.5: no `.TP` item for `{key}` in section {section}"
            ));
        }
    };
    for key in &keys.top {
        // [defaults] has a section of its own; the accounts live under ACCOUNTS.
        match key.as_str() {
            "defaults" => expect_in_man("DEFAULTS", "[defaults]"),
            "account" => expect_in_man("ACCOUNTS", "[[account]]"),
            k => expect_in_man("GLOBAL SETTINGS", k),
        }
    }
    for key in &keys.account {
        expect_in_man("ACCOUNTS", key);
    }
    for key in keys.deliver.iter().chain(&keys.smtp).chain(&keys.lmtp) {
        expect_in_man("DELIVERY", key);
    }
    for key in keys
        .top
        .iter()
        .chain(&keys.account)
        .chain(&keys.deliver)
        .chain(&keys.smtp)
        .chain(&keys.lmtp)
    {
        if !example_keys.contains(key) {
            missing.push(format!("contrib/config.toml: no `{key} = ...` line"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn every_key_the_readme_names_is_documented() {
    let readme = read("README.md");
    let mut named = BTreeSet::new();
    // The "## Configuration" block and the "## Delivery" block (the `deliver` forms).
    for heading in ["## Configuration", "## Delivery"] {
        let block = toml_block_after(&readme, heading);
        named.extend(keys_in_toml_text(&block));
    }
    for must in [
        "state_dir",
        "account",
        "defaults",
        "password_command",
        "smtp",
        "to",
    ] {
        assert!(
            named.contains(must),
            "reading the README's config blocks found no `{must}`: {named:?}"
        );
    }
    let parser = parser_keys();
    let all: BTreeSet<&String> = parser
        .top
        .iter()
        .chain(&parser.account)
        .chain(&parser.deliver)
        .chain(&parser.smtp)
        .chain(&parser.lmtp)
        .collect();
    let man = read("contrib/man/popfetch.toml.5");
    let example_keys = keys_in_toml_text(&read("contrib/config.toml"));
    let mut problems = Vec::new();
    for key in &named {
        if !all.contains(key) {
            problems.push(format!(
                "README names `{key}`, which the config parser does not accept"
            ));
        }
        let item = match key.as_str() {
            "defaults" => "[defaults]".to_string(),
            "account" => "[[account]]".to_string(),
            k => k.to_string(),
        };
        if !man.lines().any(|l| is_man_item(l, &item)) {
            problems.push(format!(
                "README names `{key}`; popfetch.toml.5 has no item for it"
            ));
        }
        if !example_keys.contains(key) {
            problems.push(format!(
                "README names `{key}`; contrib/config.toml does not"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn example_config_is_valid_as_shipped_and_with_every_setting_uncommented() {
    let path = repo().join("contrib/config.toml");
    let text = read("contrib/config.toml");
    let shipped = popfetch::config::parse(&path, &text)
        .unwrap_or_else(|e| panic!("contrib/config.toml as shipped: {e}"));
    assert!(
        shipped.accounts.is_empty(),
        "contrib/config.toml ships with an active account; the packaged daemon would poll it"
    );
    // `#key = value` (no space after '#') is a setting; `# text` is prose. A route needs a
    // target that names `{recipient}`, which the example's relay line does not: the route line
    // is tried apart, with the LMTP target its comment shows.
    let uncomment = |routed: bool| -> String {
        text.lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with("route =") && !routed => l,
                Some(rest) if rest.starts_with("deliver =") && routed => {
                    "deliver = { lmtp = { socket = \"/run/dovecot/lmtp\", to = [\"{recipient}\"] } }"
                }
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect()
    };
    for routed in [false, true] {
        let full = popfetch::config::parse(&path, &uncomment(routed)).unwrap_or_else(|e| {
            panic!("contrib/config.toml with every `#key = value` line uncommented: {e}")
        });
        assert_eq!(full.accounts.len(), 1, "the example has one account");
        assert_eq!(full.accounts[0].route.is_some(), routed);
    }
}

/// The keys the config parser accepts, from its own error messages.
struct ParserKeys {
    top: Vec<String>,
    account: Vec<String>,
    /// The keys of `deliver = { ... }`: the backends.
    deliver: Vec<String>,
    smtp: Vec<String>,
    lmtp: Vec<String>,
}

fn parser_keys() -> ParserKeys {
    let probe = |text: &str| -> Vec<String> {
        let err = match popfetch::config::parse(Path::new("probe.toml"), text) {
            Ok(_) => panic!("the config parser accepted an unknown key: {text:?}"),
            Err(e) => e.to_string(),
        };
        let list = err
            .split_once("keys are: ")
            .or_else(|| err.split_once("is one of: "))
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("no list of names in the parser's error: {err}"));
        // The error goes on with the offending line: " (in `...`)".
        let list = list.split(" (in `").next().unwrap_or(list);
        let names: Vec<String> = list
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        assert!(!names.is_empty(), "no key names in: {err}");
        names
    };
    ParserKeys {
        top: probe("popfetch_docs_probe = 1\n"),
        account: probe("[[account]]\npopfetch_docs_probe = 1\n"),
        deliver: probe("[[account]]\ndeliver = { popfetch_docs_probe = 1 }\n"),
        smtp: probe("[[account]]\ndeliver = { smtp = { popfetch_docs_probe = 1 } }\n"),
        lmtp: probe("[[account]]\ndeliver = { lmtp = { popfetch_docs_probe = 1 } }\n"),
    }
}

/// The text of the man page section `.SH name` (quoted or not), up to the next `.SH`.
fn man_section<'a>(man: &'a str, name: &str) -> &'a str {
    let mut start = None;
    let mut offset = 0;
    for line in man.split_inclusive('\n') {
        let l = line.trim_end();
        if let Some(title) = l.strip_prefix(".SH ") {
            if start.is_some() {
                return &man[start.unwrap_or(0)..offset];
            }
            if title.trim_matches('"') == name {
                start = Some(offset + line.len());
            }
        }
        offset += line.len();
    }
    match start {
        Some(s) => &man[s..],
        None => panic!("popfetch.toml.5 has no section .SH {name}"),
    }
}

/// A `.TP` item line that names `key`: `\fBkey\fR = ...`.
fn is_man_item(line: &str, key: &str) -> bool {
    line.starts_with(&format!("\\fB{key}\\fR"))
}

/// Every `name = ` and `[table]` / `[[table]]` in TOML text, comments included (they show the
/// alternatives), outside of quoted strings.
fn keys_in_toml_text(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let body = line.trim_start_matches(['#', ' ']);
        let table = match body.strip_prefix("[[") {
            Some(rest) => rest.split_once("]]"),
            None => body.strip_prefix('[').and_then(|r| r.split_once(']')),
        };
        if let Some((name, _)) = table {
            // `[account.deliver.smtp]` names three keys.
            keys.extend(name.split('.').map(str::to_string));
        }
        let mut in_string = false;
        let chars: Vec<char> = line.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            match c {
                '"' => in_string = !in_string,
                '=' if !in_string && chars.get(i + 1) != Some(&'=') => {
                    let before: String = chars[..i].iter().collect();
                    let before = before.trim_end();
                    let ident: String = before
                        .chars()
                        .rev()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    if ident.starts_with(|c: char| c.is_ascii_lowercase()) {
                        keys.insert(ident);
                    }
                }
                _ => {}
            }
        }
    }
    keys
}

/// The first ```toml block after the line `heading`.
fn toml_block_after(markdown: &str, heading: &str) -> String {
    let after = markdown
        .split_once(&format!("\n{heading}\n"))
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("README.md has no heading {heading:?}"));
    let start = after
        .split_once("```toml\n")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("README.md has no ```toml block after {heading:?}"));
    let end = start
        .find("\n```")
        .unwrap_or_else(|| panic!("unterminated ```toml block after {heading:?}"));
    start[..end].to_string()
}

/// The man page: clap_mangen's sections of the top-level command, then one subsection per
/// subcommand (its synopsis, description and own options), then what clap does not know.
fn man_page() -> Vec<u8> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone())
        .title("POPFETCH")
        .manual("User Commands");
    let mut out = Vec::new();
    let io = |r: std::io::Result<()>| r.expect("rendering into a Vec cannot fail");
    io(man.render_title(&mut out));
    io(man.render_name_section(&mut out));
    io(man.render_synopsis_section(&mut out));
    io(man.render_description_section(&mut out));
    out.extend_from_slice(DESCRIPTION.as_bytes());
    io(man.render_options_section(&mut out));

    out.extend_from_slice(b".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        command_section(&mut out, sub, sub.get_name());
    }
    out.extend_from_slice(TRAILER.as_bytes());
    io(man.render_version_section(&mut out));
    // Each rendered part starts with the same two-line string definition; once is enough.
    let text = String::from_utf8(out).expect("roff is UTF-8");
    let preamble = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    let mut parts = text.split(preamble);
    let mut page = parts.next().unwrap_or_default().to_string();
    if let Some(first) = parts.next() {
        page.push_str(preamble);
        page.push_str(first);
    }
    parts.for_each(|rest| page.push_str(rest));
    page.into_bytes()
}

/// The `.SS` section of subcommand `sub` (`name` is its path below `popfetch`, such as
/// `import fetchmail`), then one of each of its own subcommands.
fn command_section(out: &mut Vec<u8>, sub: &clap::Command, name: &str) {
    let io = |r: std::io::Result<()>| r.expect("rendering into a Vec cannot fail");
    // The global options and --help are described once, above.
    let sub = sub.clone().mut_args(|a| {
        if a.is_global_set() || a.get_id() == "help" {
            a.hide(true)
        } else {
            a
        }
    });
    // clap_mangen names the program after the command alone: give it the whole path.
    let page = clap_mangen::Man::new(sub.clone().bin_name(format!("popfetch {name}")));
    let mut part = Vec::new();
    io(page.render_synopsis_section(&mut part));
    io(page.render_description_section(&mut part));
    if sub.get_arguments().any(|a| !a.is_hide_set()) {
        io(page.render_options_section(&mut part));
    }
    out.extend_from_slice(format!(".SS \"{name}\"\n").as_bytes());
    // clap_mangen writes each part as a section; here they are paragraphs of one.
    for line in String::from_utf8(part).expect("roff is UTF-8").lines() {
        if line.starts_with(".SH ") {
            out.extend_from_slice(b".PP\n");
        } else {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }
    for child in sub
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
    {
        command_section(out, child, &format!("{name} {}", child.get_name()));
    }
}

/// Every visible subcommand below `cmd`, by its path (`import fetchmail`), with its options'
/// long names (or value names for positionals).
fn commands_and_options(cmd: &clap::Command, path: &str, out: &mut Vec<(String, Vec<String>)>) {
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = if path.is_empty() {
            sub.get_name().to_string()
        } else {
            format!("{path} {}", sub.get_name())
        };
        let args = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set() && a.get_id() != "help")
            .map(|a| match a.get_long() {
                // roff writes every hyphen as `\-`.
                Some(l) => format!("\\-\\-{}", l.replace('-', "\\-")),
                None => a
                    .get_value_names()
                    .and_then(|v| v.first())
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| a.get_id().to_string().to_uppercase()),
            })
            .collect();
        out.push((name.clone(), args));
        commands_and_options(sub, &name, out);
    }
}

#[test]
fn the_man_page_documents_every_subcommand_and_option() {
    let man = read("contrib/man/popfetch.1");
    let mut all = Vec::new();
    commands_and_options(&Cli::command(), "", &mut all);
    let mut missing = Vec::new();
    for (name, args) in &all {
        let Some(start) = man.find(&format!(".SS \"{name}\"\n")) else {
            missing.push(format!("no section for `popfetch {name}`"));
            continue;
        };
        let rest = &man[start + 1..];
        let section = &rest[..rest.find("\n.S").unwrap_or(rest.len())];
        for arg in args {
            if !section.contains(arg.as_str()) {
                missing.push(format!("`popfetch {name}`: {arg} is not described"));
            }
        }
    }
    assert!(
        all.iter().any(|(n, _)| n == "import fetchmail"),
        "the walk reaches nested subcommands: {all:?}"
    );
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

fn completion(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "popfetch", &mut out);
    out
}

/// Where the committed file `have` first differs from the generated `want`.
fn first_difference(have: Option<&[u8]>, want: &[u8]) -> String {
    let Some(have) = have else {
        return "missing".to_string();
    };
    let have = String::from_utf8_lossy(have);
    let want = String::from_utf8_lossy(want);
    for (i, (h, w)) in have.lines().zip(want.lines()).enumerate() {
        if h != w {
            return format!("line {}: committed {h:?}, generated {w:?}", i + 1);
        }
    }
    format!(
        "committed {} lines, generated {} lines",
        have.lines().count(),
        want.lines().count()
    )
}

/// Added to clap's description: what the tool promises.
const DESCRIPTION: &str = r#".PP
\fBpopfetch\fR fetches mail from POP3 accounts and delivers it into a Maildir, an mbox file, a
mail delivery agent or an SMTP relay, in the line of fetchmail, getmail and mpop.
A message is deleted from the server only after it is durably delivered and its UIDL durably
recorded, and counts as gone only once the server answered QUIT.
Certificates are verified, STLS is never silently skipped, and a password never crosses an
unencrypted connection unless the config allows it.
.PP
The configuration file is described in \fBpopfetch.toml\fR(5).
It is the one given with \fB\-c\fR, else \fB$POPFETCH_CONFIG\fR, else
\fI$XDG_CONFIG_HOME/popfetch/config.toml\fR (\fI~/.config/popfetch/config.toml\fR) when it
exists, else \fI/etc/popfetch/config.toml\fR.
"#;

/// Sections clap knows nothing about.
const TRAILER: &str = r#".SH STATUS
After every poll popfetch writes the account's status file, \fISTATE_DIR/ACCOUNT.status\fR;
the daemon adds when it polls the account next and why. \fBpopfetch status\fR shows these files
for the config's accounts. When the config is invalid or missing it says why on stderr and
shows every status file in the state directory the config names (or the default one): the
daemon keeps running on its last good config, and a health check must not go blind.
.PP
Each account has a \fIhealth\fR: \fBfailing\fR (its last poll failed, or left mail on the
server after a delivery failed for now; also while suspended), \fBholding\fR (messages are held
on the server after a permanent failure until \fBpopfetch retry\fR), \fBok\fR, or
\fBunknown\fR (never polled). A poll's \fIresult\fR is \fBok\fR, \fBheld\fR (it finished and
newly held messages), \fBpartial\fR (it finished, but a delivery failed for now: an MDA's exit
75, an SMTP 4xx; the daemon backs off as after any failure) or \fBfailed\fR (it ended in an
error). Times are Unix seconds. New fields may appear within a \fBschema\fR; a field that
changes meaning or goes away raises it.
.PP
\fBpopfetch status \-\-json\fR prints one object:
.TP
\fBschema\fR
2, the version of this layout and of the status file's fields.
.TP
\fBconfig\fR
The config file read, or null when none was found.
.TP
\fBconfig_error\fR
Why it was not used, or null.
.TP
\fBstate_dir\fR
The state directory read.
.TP
\fBaccounts\fR
One object per account, each the account's status file and its \fBhealth\fR:
.RS
.TP
\fBaccount\fR
The account's name.
.TP
\fBschema\fR
The status file's: 2, or 1 for a file an older popfetch wrote (the newer fields empty).
.TP
\fBhealth\fR
failing, holding, ok or unknown, as above.
.TP
\fBlast_poll\fR
When the last poll ended.
.TP
\fBlast_result\fR
ok, held, partial or failed, as above.
.TP
\fBlast_duration_ms\fR
How long it took.
.TP
\fBlast_success\fR
When the last poll that was not a failure ended.
.TP
\fBconsecutive_failures\fR
Polls in a row that failed or were partial.
.TP
\fBlast_error\fR, \fBlast_error_at\fR
The last failure's error and its time; a partial poll's names the delivery error. Cleared by
the next poll that is not a failure, which moves them to \fBprevious_error\fR,
\fBprevious_error_at\fR.
.TP
\fBdelivered\fR, \fBdelivered_total\fR, \fBbytes_total\fR
Messages delivered by the last poll, and messages and bytes by every poll so far; a poll that
failed after delivering counts too.
.TP
\fBfailed\fR, \fBheld\fR, \fBtoo_large\fR, \fBwaiting\fR
As the last poll that finished found them: messages whose delivery failed for now, held after
a permanent failure, over \fBmax_size\fR, and everything left on the server undelivered
(these, and messages left by a per\-poll limit or not reached). \fBwaiting\fR is null until a
poll finishes.
.TP
\fBheld_error\fR
Why the last message newly held was refused for good; kept while messages are held.
.TP
\fBheld_short\fR
Messages held because they arrived far short of their LIST size: \fBnum\fR, \fBuidl\fR,
\fBlisted\fR, \fBreceived\fR.
.TP
\fBnext_poll\fR, \fBnext_reason\fR
When the daemon polls next, and why: \fBinterval\fR, \fBlogin\-delay\fR (the server's
LOGIN\-DELAY), \fBbackoff\fR (failures in a row), \fBauth\fR (the hour's wait after
\fB[AUTH]\fR) or \fBsuspended\fR (after \fB[SYS/PERM]\fR, no poll until the account's config
changes; \fBnext_poll\fR is null). Both null after \fBpopfetch fetch\fR.
.TP
\fBtls_not_after\fR, \fBtls_expiry_warned\fR
When the server's TLS certificate ends, as last seen, and when a poll last warned that it ends
within \fBtls_expiry_warning\fR (at most once a day); Unix seconds, null without TLS.
.RE
.SH "EXIT STATUS"
.TP
0
Success: every account was polled (\fBfetch\fR), the config is valid (\fBcheck\fR), every
account is healthy (\fBstatus\fR), or the daemon stopped after SIGTERM or SIGINT.
.TP
1
An account failed: it could not be polled, a message failed or was newly held after a
permanent failure (\fBfetch\fR), its state could not be opened, or another run holds its lock;
for \fBstatus\fR, an account is failing or holding mail, also under an invalid config.
.TP
2
A usage or config error; nothing was polled (for \fBstatus\fR: nor any status file read).
.TP
130
A second SIGTERM or SIGINT ended \fBfetch\fR or the daemon at once. Nothing is lost: a message
is deleted only after it is delivered and recorded.
.SH SIGNALS
\fBpopfetch daemon\fR reloads its config on SIGHUP (it also notices when the file or one it
includes changes; only the accounts that changed restart),
polls every account at once on SIGUSR1, and on SIGTERM or SIGINT lets each poll finish the
message in flight, send the DELEs owed and QUIT, then exits within \fBshutdown_timeout\fR.
Under systemd (\fBType=notify\fR) it reports READY, RELOADING, STOPPING and a STATUS line, and
sends WATCHDOG pings when \fBWatchdogSec=\fR is set.
.SH LOGGING
Every log line says what happened and to which account, on its own:
\fBaccount home: poll failed: cannot connect to pop.example.org:995: Connection refused\fR.
A failure is logged when it begins or changes, reminded at most hourly while it lasts, and its
end is logged once (\fBrecovered after 3 failed polls\fR); a poll that finds nothing is a debug
line. \fB\-vvv\fR adds every command sent (\fBC:\fR) and every status and listing line received
(\fBS:\fR), with passwords and SASL data redacted. Lines go to stderr or the journal as
\fBlog_target\fR says (see \fBpopfetch.toml\fR(5)). In the journal, the line is \fBMESSAGE\fR,
\fBSYSLOG_IDENTIFIER\fR is \fBpopfetch\fR, \fBPRIORITY\fR follows the level (3 error, 4
warning, 6 info, 7 debug), \fBCODE_FILE\fR and \fBCODE_LINE\fR name the source, and each field
goes along as \fBPOPFETCH_\fR\fINAME\fR:
.TP
\fBPOPFETCH_ACCOUNT\fR
The account the line is about: \fBjournalctl \-u popfetch POPFETCH_ACCOUNT=home\fR shows one
account.
.TP
\fBPOPFETCH_ERROR\fR
The failure, as in the message.
.TP
\fBPOPFETCH_UIDL\fR, \fBPOPFETCH_NUM\fR
The message's unique-id and its number in the session.
.TP
\fBPOPFETCH_DELIVERED\fR, \fBPOPFETCH_BYTES\fR, \fBPOPFETCH_DELETED\fR, \fBPOPFETCH_FAILED\fR, \fBPOPFETCH_HELD\fR, \fBPOPFETCH_ELAPSED_MS\fR
The counts of a poll's \fBpoll done\fR line.
.TP
\fBPOPFETCH_POLLS\fR
How many polls in a row a failure has lasted (\fBstill failing\fR, \fBrecovered\fR).
.SH ENVIRONMENT
.TP
\fBPOPFETCH_CONFIG\fR
The config file, when \fB\-c\fR is not given.
.TP
\fBXDG_CONFIG_HOME\fR, \fBHOME\fR
Where the user's config file is looked for; \fB~/\fR in the config is \fB$HOME\fR.
.TP
\fBSTATE_DIRECTORY\fR
The default \fBstate_dir\fR (set by systemd's \fBStateDirectory=\fR).
.TP
\fBXDG_STATE_HOME\fR
The default \fBstate_dir\fR of a user other than root is \fI$XDG_STATE_HOME/popfetch\fR.
.TP
\fBPOPFETCH_LOG\fR, \fBRUST_LOG\fR
A tracing filter directive (such as \fBdebug\fR or \fBpopfetch=trace,warn\fR) that overrides
\fB\-v\fR and the config's \fBlog_level\fR.
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR, \fBJOURNAL_STREAM\fR
Set by systemd: readiness notification, the watchdog, and whether stderr is the journal.
.TP
\fBPOPFETCH_JOURNAL_SOCKET\fR
The journal's socket, instead of \fI/run/systemd/journal/socket\fR (a container that mounts it
elsewhere, or a test).
.SH FILES
.TP
\fI/etc/popfetch/config.toml\fR
The system config, read by \fBpopfetch.service\fR as the user popfetch.
.TP
\fI~/.config/popfetch/config.toml\fR
A user's config, read by the user unit (\fBsystemctl \-\-user start popfetch\fR).
.TP
\fI/var/lib/popfetch\fR
The state of the system service: per account a UIDL journal, a lock file and a status file.
.TP
\fI~/.local/state/popfetch\fR
The state of a user's runs.
.SH "SEE ALSO"
\fBpopfetch.toml\fR(5), \fBsystemd.exec\fR(5), \fBfetchmail\fR(1), \fBmpop\fR(1)
"#;

#[test]
fn the_example_config_names_every_login_method() {
    let example = read("contrib/config.toml");
    // The comment block just above `#auth = ...`.
    let at = example
        .find("\n#auth = ")
        .expect("the example shows `auth`");
    let start = example[..at].rfind("\n\n").map_or(0, |p| p + 2);
    let comment = &example[start..at];
    let missing: Vec<&str> = popfetch::pop3::login::CONFIG_NAMES
        .iter()
        .copied()
        .filter(|name| !comment.contains(&format!("\"{name}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "contrib/config.toml's `auth` comment leaves out {missing:?}:\n{comment}"
    );
}
