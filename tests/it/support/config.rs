//! One builder for the `[[account]]` tables the tests write: an account on the private Dovecot
//! ([`Account::dovecot`]) or on the scripted server ([`Account::scripted`]), then keys set,
//! replaced or removed, and free `extra` lines. A key that `extra` sets (before any table header
//! in it) replaces the builder's, so a test can override a default without a duplicate key.

use std::fmt::Display;
use std::path::Path;

use crate::dovecot::Dovecot;
use crate::pop3_server::{PASSWORD, Server, USER};

/// An `[[account]]` table being built; [`Account::to_toml`] writes it.
#[derive(Clone, Debug)]
pub struct Account {
    /// Keys and their TOML values, in the order they are written.
    keys: Vec<(String, String)>,
    extra: String,
}

impl Account {
    /// Account `alice` on `host`:`port`, with no other key.
    pub fn new(host: &str, port: u16) -> Account {
        Account {
            keys: Vec::new(),
            extra: String::new(),
        }
        .name("alice")
        .text("host", host)
        .set("port", port)
    }

    /// Account `alice` on `d`'s implicit-TLS port, trusting its CA, as `alice` with password
    /// `pw` (change them with [`Account::user`] and [`Account::password`]).
    pub fn dovecot(d: &Dovecot) -> Account {
        Account::new("localhost", d.pop3s_port())
            .text("ca_file", d.ca_file().display())
            .user("alice")
            .password("pw")
    }

    /// Account `alice` on the scripted `server`: clear text, `USER`/`PASS` with its
    /// [`USER`] and [`PASSWORD`].
    pub fn scripted(server: &Server) -> Account {
        Account::new("127.0.0.1", server.port())
            .text("tls", "none")
            .user(USER)
            .password(PASSWORD)
            .text("auth", "user")
            .set("allow_plaintext_auth", true)
    }

    pub fn name(self, name: &str) -> Account {
        self.text("name", name)
    }

    pub fn user(self, user: &str) -> Account {
        self.text("user", user)
    }

    pub fn password(self, password: &str) -> Account {
        self.text("password", password)
    }

    /// Delivery into the Maildir at `path`.
    pub fn maildir(self, path: &Path) -> Account {
        self.set(
            "deliver",
            format_args!("{{ maildir = \"{}\" }}", path.display()),
        )
    }

    /// Sets `key` to the TOML `value` (written as is), in place if it is set already.
    pub fn set(mut self, key: &str, value: impl Display) -> Account {
        let value = value.to_string();
        match self.keys.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.keys.push((key.to_string(), value)),
        }
        self
    }

    /// Sets `key` to the TOML string `"value"` (not escaped: paths and names of the tests).
    pub fn text(self, key: &str, value: impl Display) -> Account {
        self.set(key, format_args!("\"{value}\""))
    }

    /// Removes `key` (a scripted account logging in with a token has no password).
    pub fn without(mut self, key: &str) -> Account {
        self.keys.retain(|(k, _)| k != key);
        self
    }

    /// Lines written after the keys; a key they set replaces the builder's.
    pub fn extra(mut self, extra: &str) -> Account {
        self.extra.push_str(extra);
        if !self.extra.is_empty() && !self.extra.ends_with('\n') {
            self.extra.push('\n');
        }
        self
    }

    /// The table, ending with a newline so that tables can be concatenated.
    pub fn to_toml(&self) -> String {
        let overridden = keys_set_by(&self.extra);
        let mut out = String::from("[[account]]\n");
        for (k, v) in &self.keys {
            if !overridden.contains(&k.as_str()) {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out.push_str(&self.extra);
        out
    }
}

/// The keys `extra` sets in the account's own table: up to its first table header.
fn keys_set_by(extra: &str) -> Vec<&str> {
    extra
        .lines()
        .map(str::trim_start)
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .collect()
}

#[test]
fn extra_keys_replace_the_builders_and_a_second_table_is_left_alone() {
    let toml = Account::new("127.0.0.1", 1)
        .text("tls", "none")
        .extra("tls = \"implicit\"\n[[account]]\nname = \"b\"")
        .to_toml();
    assert_eq!(
        toml,
        "[[account]]\nname = \"alice\"\nhost = \"127.0.0.1\"\nport = 1\n\
         tls = \"implicit\"\n[[account]]\nname = \"b\"\n"
    );
}
