//! One SASL exchange (RFC 5034 §4) as a state machine without I/O: [`Sasl::first`] gives the
//! AUTH command, and [`Sasl::answer`] takes each status line the server sends and says what to
//! send next, or that the exchange is over. The session only writes and reads.

use std::fmt;

use super::auth;
use super::{Command, Status, StatusKind};
use crate::secret::Secret;

/// RFC 5034 §4: an AUTH command with its initial response must not exceed 255 octets; longer
/// initial responses are sent after the server's empty challenge.
pub const MAX_AUTH_LINE: usize = 255;

/// A SASL mechanism popfetch speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
    CramMd5,
    Xoauth2,
    Oauthbearer,
    External,
}

impl Mechanism {
    /// The name sent with AUTH.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
            Mechanism::Xoauth2 => "XOAUTH2",
            Mechanism::Oauthbearer => "OAUTHBEARER",
            Mechanism::External => "EXTERNAL",
        }
    }

    /// Most server challenges answered in one exchange: what the mechanism needs, plus one for
    /// an initial response sent after an empty challenge or for the cancelling `*`. A server
    /// that goes on past it is looping, not authenticating.
    pub fn max_challenges(self) -> usize {
        match self {
            // The initial response (maybe after an empty challenge), then an error challenge.
            Mechanism::Plain | Mechanism::Xoauth2 | Mechanism::Oauthbearer => 2,
            // "Username:", "Password:", and a cancel.
            Mechanism::Login => 3,
            // One challenge, answered once.
            Mechanism::CramMd5 => 1,
            // None past the initial response; one to cancel.
            Mechanism::External => 1,
        }
    }
}

/// The exchange went on and the status says what to send next, or it is over.
#[derive(Debug)]
pub enum Next {
    /// Send this line and read the next status.
    Send(Command),
    /// The server accepted the login.
    Done,
}

/// How an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslError {
    /// The server answered `-ERR`. `detail` describes the error challenge of a bearer-token
    /// mechanism (RFC 7628 §3.2.2) when there was one; it never holds the token.
    Refused { detail: Option<String> },
    /// More challenges than the mechanism needs.
    Looping { mechanism: Mechanism },
    /// A challenge could not be answered, the exchange was cancelled with `*`, and the server
    /// did not go on.
    Unanswerable { mechanism: Mechanism },
}

impl fmt::Display for SaslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SaslError::Refused { detail: None } => f.write_str("the server refused the login"),
            SaslError::Refused { detail: Some(d) } => write!(f, "token rejected: {d}"),
            SaslError::Looping { mechanism } => write!(
                f,
                "{}: the server kept the SASL exchange going (more than {} challenges); it is \
                 looping, not authenticating",
                mechanism.name(),
                mechanism.max_challenges()
            ),
            SaslError::Unanswerable { mechanism } => write!(
                f,
                "{}: the server's challenge could not be answered",
                mechanism.name()
            ),
        }
    }
}

/// One SASL exchange under way.
pub struct Sasl {
    mechanism: Mechanism,
    user: String,
    secret: Secret<String>,
    /// The initial response, until it is sent (with AUTH, or after an empty challenge).
    initial: Option<Secret<String>>,
    /// Challenges answered by the mechanism (not counting a delayed initial response).
    step: usize,
    /// Challenges seen.
    challenges: usize,
    /// The last answer sent was the cancelling `*`.
    cancelled: bool,
    /// What the error challenge of a bearer-token mechanism said.
    detail: Option<String>,
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("step", &self.step)
            .field("challenges", &self.challenges)
            .finish_non_exhaustive()
    }
}

impl Sasl {
    /// An exchange for `user` with `secret` (a password, or for XOAUTH2 and OAUTHBEARER an
    /// access token; EXTERNAL uses neither). `server` is the configured host and port, which
    /// OAUTHBEARER sends.
    pub fn new(
        mechanism: Mechanism,
        user: &str,
        secret: &Secret<String>,
        server: (&str, u16),
    ) -> Sasl {
        let initial = match mechanism {
            Mechanism::Plain => Some(auth::plain_response(user, secret)),
            Mechanism::Xoauth2 => Some(auth::xoauth2_response(user, secret)),
            Mechanism::Oauthbearer => {
                Some(auth::oauthbearer_response(user, server.0, server.1, secret))
            }
            // RFC 4422 appendix A: an empty authorization identity asks the server to derive
            // it from the certificate, so a server whose user names differ from `user` (which
            // names the mailbox for popfetch's state) still lets the certificate in. Sent as
            // "=" (RFC 5034 §4).
            Mechanism::External => Some(Secret::new(String::new())),
            Mechanism::Login | Mechanism::CramMd5 => None,
        };
        Sasl {
            mechanism,
            user: user.to_string(),
            secret: secret.clone(),
            initial,
            step: 0,
            challenges: 0,
            cancelled: false,
            detail: None,
        }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The AUTH command, with the initial response when the line stays within
    /// [`MAX_AUTH_LINE`]; otherwise the initial response waits for the server's empty
    /// challenge.
    pub fn first(&mut self) -> Command {
        let mechanism = self.mechanism.name();
        if let Some(ir) = &self.initial {
            let with_ir = Command::Auth {
                mechanism,
                initial: Some(ir.clone()),
            };
            if with_ir.encoded_len() <= MAX_AUTH_LINE {
                self.initial = None;
                return with_ir;
            }
        }
        Command::Auth {
            mechanism,
            initial: None,
        }
    }

    /// Takes the server's status line to the last thing sent and says what comes next.
    pub fn answer(&mut self, st: &Status) -> Result<Next, SaslError> {
        let cancelled = std::mem::take(&mut self.cancelled);
        if cancelled && st.kind != StatusKind::Continue {
            return Err(SaslError::Unanswerable {
                mechanism: self.mechanism,
            });
        }
        match st.kind {
            StatusKind::Ok => return Ok(Next::Done),
            StatusKind::Err => {
                return Err(SaslError::Refused {
                    detail: self.detail.take(),
                });
            }
            StatusKind::Continue => {}
        }
        self.challenges += 1;
        if self.challenges > self.mechanism.max_challenges() {
            return Err(SaslError::Looping {
                mechanism: self.mechanism,
            });
        }
        let line = match self.initial.take() {
            Some(ir) => ir,
            None => {
                let a = self.respond(&st.text);
                self.step += 1;
                a.unwrap_or_else(|| {
                    self.cancelled = true;
                    Secret::new("*".to_string())
                })
            }
        };
        Ok(Next::Send(Command::SaslResponse(line)))
    }

    /// The mechanism's answer to its n-th challenge (base64 text as sent); `None` cancels.
    fn respond(&mut self, challenge: &[u8]) -> Option<Secret<String>> {
        match (self.mechanism, self.step) {
            (Mechanism::Login, 0) => Some(auth::login_response(&self.user)),
            (Mechanism::Login, 1) => Some(auth::login_response(self.secret.expose())),
            (Mechanism::CramMd5, 0) => auth::cram_md5_response(challenge, &self.user, &self.secret),
            (Mechanism::Xoauth2 | Mechanism::Oauthbearer, _) => {
                // A challenge after the initial response is an error (RFC 7628 §3.2.2): note
                // what it says, and answer as the mechanism requires so the server ends with
                // -ERR.
                self.detail = Some(
                    auth::describe_oauth_error(challenge)
                        .unwrap_or_else(|| "no details".to_string()),
                );
                let abort = if self.mechanism == Mechanism::Xoauth2 {
                    auth::XOAUTH2_ABORT
                } else {
                    auth::OAUTHBEARER_ABORT
                };
                Some(Secret::new(abort.to_string()))
            }
            _ => None,
        }
    }
}
