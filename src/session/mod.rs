//! The async POP3 session: one connection to one server, driven over tokio. It owns the socket
//! (plain TCP, implicit TLS, or TCP upgraded by STLS), puts a timeout on every network wait, and
//! turns [`crate::pop3`] events into typed results. It knows nothing of delivery or state.
//!
//! Everything a server sends is bounded, in size and in time:
//! - every listing has a byte budget (see [`crate::pop3::listing`]): CAPA a small fixed one, UIDL
//!   and LIST one in proportion to the message count STAT announced, and the UIDL and LIST
//!   listings are handed to the caller line by line, never collected: what a listing costs here
//!   is one bit per message number (`MAX_MESSAGES` at most), whatever it says;
//! - a SASL exchange answers a bounded number of server challenges per mechanism;
//! - every read has the account's `timeout`, and the data of an answer under way must keep
//!   coming at [`MIN_RATE`] on average over every [`stall_window`]: a server that trickles a
//!   byte now and then, each within `timeout`, cannot hold a poll (and in the daemon a
//!   `max_parallel` slot and the account's reload) for as long as it likes;
//! - the stop token given to [`Session::connect`] ends every wait until the transfer begins (the
//!   first [`Session::queue`]); from then on the caller finishes the message in flight and QUITs.

mod error;
mod stream;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use error::SessionError;
use stream::Stream;

use crate::config::{AuthMethod, TlsMode};
use crate::net::NetError;
use crate::pop3::listing::{self, Budget, CAPA_BUDGET, MAX_MESSAGES, NumSet, listing_budget};
use crate::pop3::login::{CredentialKind, Exchange, Link, Method, Offer};
use crate::pop3::sasl::{Next, Sasl, SaslError};
use crate::pop3::{self, Capabilities, Command, Event, Expect, MsgNum, Pipeline, Status, Uidl};
use crate::secret::Secret;

/// The least average rate at which the data of an answer under way must arrive, over every
/// [`stall_window`]. 1 KiB/s is below what a poor 2G (GPRS) or a satellite link delivers
/// averaged over a minute; a server below it is trickling.
pub const MIN_RATE: u64 = 1024;

/// The shortest span over which [`MIN_RATE`] is measured, so that a short dip of a slow link
/// never counts as a stall.
pub const MIN_STALL_WINDOW: Duration = Duration::from_secs(10);

/// The span over which [`MIN_RATE`] is measured for an account: its `timeout`, at least
/// [`MIN_STALL_WINDOW`]. Only time spent waiting for the rest of an answer already begun
/// counts; the wait for an answer's first byte (the server thinking) has `timeout` alone.
pub fn stall_window(timeout: Duration) -> Duration {
    timeout.max(MIN_STALL_WINDOW)
}

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 64 * 1024;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectParams<'a> {
    pub host: &'a str,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<&'a Path>,
    pub tls_verify: bool,
    /// `tls_fingerprint`: the server known by these instead of a CA (see [`crate::net::Peer`]).
    pub pins: &'a [crate::net::Fingerprint],
    /// `tls_min_version`.
    pub min_version: crate::net::TlsVersion,
    /// `tls_client_cert` and `tls_client_key`.
    pub client: Option<(&'a Path, &'a Path)>,
    /// Applies to the TCP connect, the TLS handshake and every single read and write.
    pub timeout: Duration,
    /// What the server's CAPA said at the last session (after TLS), when known: over an
    /// encrypted link to a server that offered PIPELINING, the login goes in the flight of the
    /// CAPA that is sent anyway (one round trip less). Only a hint: the fresh CAPA is read
    /// before anything else depends on it, and a login it misled is tried again by it.
    pub capa_hint: Option<&'a Capabilities>,
}

/// An open POP3 session, in AUTHORIZATION state until [`Session::login`] succeeds.
pub struct Session {
    stream: Stream,
    /// Commands sent and answers due, with the caller's tags; `None` for the session's own.
    pipe: Pipeline<Option<Tag>>,
    timeout: Duration,
    greeting: Status,
    caps: Option<Capabilities>,
    /// The server's name and port as configured (OAUTHBEARER sends them).
    host: String,
    port: u16,
    /// Ends every wait while `interruptible`.
    stop: CancellationToken,
    /// Until the transfer begins, a stop ends the session at once: nothing was fetched yet.
    interruptible: bool,
    /// What STAT said: the number of messages, which sets the listings' budgets.
    stat_count: Option<u64>,
    /// Progress of the data of answers under way, for the minimum transfer rate.
    flow: Flow,
    /// Round trips so far: the TCP connect, each TLS handshake, and each wait for the first
    /// answer to something sent since the last such wait (the greeting counts as one).
    round_trips: u32,
    /// Something was sent since the last wait for an answer began.
    sent: bool,
    /// TLS, when on, proves the server's identity: `tls_verify`, or a pinned fingerprint.
    verified: bool,
    /// When the flight now awaited was sent: the first write after the last wait.
    flight_at: Instant,
    /// The shortest time from a flight's write to the first byte of its answer: the round trip
    /// to the server, its thinking included.
    min_rtt: Option<Duration>,
    /// CAPA was sent and its answer is still to be read ([`ConnectParams::capa_hint`]); the
    /// hint it was sent on.
    capa_due: Option<Capabilities>,
    /// LIST went in the flight of STAT and UIDL ([`Session::queue_list`]); [`Session::list_each`]
    /// reads its answer.
    list_queued: bool,
    /// QUIT was queued behind the last DELEs ([`Session::queue_quit`]); [`Session::quit`]
    /// reads its answer.
    quit_queued: bool,
}

/// Time spent waiting for the rest of answers under way, and what arrived meanwhile.
#[derive(Debug)]
struct Flow {
    window: Duration,
    waited: Duration,
    bytes: u64,
}

impl Flow {
    /// Counts one read; an error when the window is full and its data came slower than
    /// [`MIN_RATE`].
    fn count(&mut self, waited: Option<Duration>, bytes: u64) -> Result<(), SessionError> {
        self.bytes = self.bytes.saturating_add(bytes);
        if let Some(w) = waited {
            self.waited += w;
        }
        if self.waited < self.window {
            return Ok(());
        }
        let floor = MIN_RATE.saturating_mul(self.waited.as_secs().max(1));
        let (got, over) = (self.bytes, self.waited);
        self.waited = Duration::ZERO;
        self.bytes = 0;
        if got < floor {
            return Err(SessionError::Stalled {
                bytes: got,
                after: over,
            });
        }
        Ok(())
    }
}

/// What a pipelined command was for, handed back with its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// A RETR for the caller's item at this index.
    Retr(usize),
    Dele(MsgNum),
}

impl Session {
    /// Connects, protects the connection as `params.tls` says, reads the greeting and the
    /// capabilities. With `TlsMode::Starttls` the session is encrypted when this returns, or it
    /// fails: it never goes on in clear text.
    ///
    /// `stop` ends every wait at once until the transfer begins (see the module doc).
    pub async fn connect(
        params: &ConnectParams<'_>,
        stop: &CancellationToken,
    ) -> Result<Session, SessionError> {
        if !params.tls_verify && params.tls != TlsMode::None {
            tracing::warn!(
                host = params.host,
                "tls_verify = false: the certificate of {} is not checked, anyone on the path \
                 can read the password and the mail",
                params.host
            );
        }
        let stream = tokio::select! {
            r = Stream::connect(params) => r?,
            () = stop.cancelled() => return Err(SessionError::Cancelled),
        };
        let mut s = Session {
            stream,
            pipe: Pipeline::new(),
            timeout: params.timeout,
            greeting: Status::parse(b"+OK").expect("literal status"),
            caps: None,
            host: params.host.to_string(),
            port: params.port,
            stop: stop.clone(),
            interruptible: true,
            stat_count: None,
            // The TCP connect, the implicit TLS handshake; the greeting is waited for as if
            // asked for.
            round_trips: 1 + u32::from(params.tls == TlsMode::Implicit),
            sent: true,
            verified: params.tls != TlsMode::None && (params.tls_verify || !params.pins.is_empty()),
            flight_at: Instant::now(),
            min_rtt: None,
            capa_due: None,
            list_queued: false,
            quit_queued: false,
            flow: Flow {
                window: stall_window(params.timeout),
                waited: Duration::ZERO,
                bytes: 0,
            },
        };
        tokio::select! {
            r = s.stream.await_greeting(params) => r?,
            () = stop.cancelled() => return Err(SessionError::Cancelled),
        }
        s.pipe.expect("greeting", Expect::Single, None);
        let greeting = s.read_status().await?;
        if !greeting.is_ok() {
            return Err(SessionError::refused("greeting", &greeting));
        }
        s.greeting = greeting;
        if params.tls == TlsMode::Starttls {
            s.caps = s.capa().await?;
            s.starttls(params).await?;
        } else {
            s.capa_or_defer(params).await?;
        }
        Ok(s)
    }

    /// CAPA over an encrypted link to a server that offered PIPELINING last time: sent, its
    /// answer left for [`Session::login`] to read behind the login's own commands. Otherwise
    /// sent and read at once.
    async fn capa_or_defer(&mut self, params: &ConnectParams<'_>) -> Result<(), SessionError> {
        match params.capa_hint {
            Some(hint) if hint.pipelining && self.is_encrypted() => {
                tracing::trace!("C: CAPA (its answer read behind the login)");
                self.pipe.queue(&Command::Capa, None);
                self.flush().await?;
                self.capa_due = Some(hint.clone());
                Ok(())
            }
            _ => {
                self.caps = self.capa().await?;
                Ok(())
            }
        }
    }

    /// RFC 2595 §4: STLS, the TLS handshake, then CAPA again, since what the server said in
    /// clear text cannot be trusted.
    async fn starttls(&mut self, params: &ConnectParams<'_>) -> Result<(), SessionError> {
        if !self.caps.as_ref().is_some_and(|c| c.stls) {
            return Err(SessionError::NoStls);
        }
        let st = self.command(Command::Stls).await?;
        if !st.is_ok() {
            return Err(SessionError::refused("STLS", &st));
        }
        // Anything sent after the +OK but before the handshake was injected by someone on the
        // path (the STARTTLS command-injection attack): refuse it.
        if !self.pipe.take_unread().is_empty() {
            return Err(SessionError::protocol(
                "server sent data after its STLS answer, before the TLS handshake",
            ));
        }
        tokio::select! {
            r = self.stream.upgrade(params) => r?,
            () = self.stop.cancelled() => return Err(SessionError::Cancelled),
        }
        self.round_trips += 1;
        self.capa_or_defer(params).await
    }

    /// `None` when the server does not know CAPA (an RFC 1939-only server).
    async fn capa(&mut self) -> Result<Option<Capabilities>, SessionError> {
        let st = self.command(Command::Capa).await?;
        self.capa_answer(st).await
    }

    /// The rest of CAPA's answer, whose status line is `st`.
    async fn capa_answer(&mut self, st: Status) -> Result<Option<Capabilities>, SessionError> {
        if !st.is_ok() {
            return Ok(None);
        }
        let mut lines = Vec::new();
        self.read_listing("CAPA", (CAPA_BUDGET, CAPA_BUDGET), |line| {
            lines.push(line);
            Ok(())
        })
        .await
        .map_err(|e| match e {
            SessionError::OverBudget { what, octets, .. } => SessionError::Protocol(format!(
                "the {what} answer is longer than {octets} octets; a real server's is far \
                 shorter"
            )),
            e => e,
        })?;
        Ok(Some(Capabilities::from_lines(
            lines.iter().map(Vec::as_slice),
        )))
    }

    /// RFC 2449 §6.5: a server whose LOGIN-DELAY varies per user announces the largest before
    /// login (tagged `USER`) and the user's own after it. So when one was announced, CAPA is
    /// read again after login and its LOGIN-DELAY (only that) replaces the first; one round
    /// trip, and only for servers that announce it.
    pub async fn reread_login_delay(&mut self) -> Result<(), SessionError> {
        if self.caps.as_ref().is_none_or(|c| c.login_delay.is_none()) {
            return Ok(());
        }
        if let Some(after) = self.capa().await?
            && let (Some(d), Some(caps)) = (after.login_delay, self.caps.as_mut())
        {
            caps.login_delay = Some(d);
        }
        Ok(())
    }

    /// What the server advertised, after STLS when that was used.
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.caps.as_ref()
    }

    pub fn is_encrypted(&self) -> bool {
        self.stream.is_encrypted()
    }

    /// The server's certificate, when the session is encrypted.
    pub fn certificate(&self) -> Option<crate::net::CertInfo> {
        self.stream.certificate()
    }

    /// Logs in with `method`; `AuthMethod::Auto` picks the strongest method offered (see
    /// [`pop3::login::choose`], which also refuses methods that would send the secret in clear
    /// text over an unencrypted connection unless `allow_plaintext` is set). Returns the method
    /// used.
    pub async fn login(
        &mut self,
        user: &str,
        credential: &Credential,
        method: AuthMethod,
        allow_plaintext: bool,
    ) -> Result<Method, SessionError> {
        let timestamp = pop3::auth::apop_timestamp(&self.greeting.text);
        let link = Link {
            secure: self.is_encrypted(),
            allow_plaintext,
            verified: self.is_encrypted() && self.verified,
        };
        let none = Secret::new(String::new());
        let (kind, password) = match credential {
            Credential::Password(p) => (CredentialKind::Password, p),
            Credential::Token(t) => (CredentialKind::Token, t),
            // The certificate went with the TLS handshake; EXTERNAL sends no secret.
            Credential::Certificate => (CredentialKind::Certificate, &none),
        };
        if let Some(hint) = self.capa_due.take() {
            // CAPA is on its way: the login goes behind it when the hint picks a method of one
            // flight, else CAPA's answer is read first.
            let hinted = Offer {
                caps: Some(&hint),
                apop_timestamp: timestamp.is_some(),
            };
            // Only to a server that proved who it is: a hint never sends a password where the
            // fresh CAPA would have chosen a challenge-response method instead.
            let early = pop3::login::choose(hinted, method.only(), link, kind)
                .ok()
                .filter(|m| link.verified && matches!(m, Method::Plain | Method::User));
            match early {
                None => {
                    let st = self.read_status().await?;
                    self.caps = self.capa_answer(st).await?;
                }
                Some(early) => {
                    tracing::debug!(
                        method = early.name(),
                        "logging in, in the flight of CAPA (the server offered it last time)"
                    );
                    let refused = match self.login_early(early, user, password).await? {
                        Ok(()) => return Ok(early),
                        Err(refused) => refused,
                    };
                    // The fresh CAPA decides: another method it picks is tried; the same one
                    // refused is the answer.
                    let offer = Offer {
                        caps: self.caps.as_ref(),
                        apop_timestamp: timestamp.is_some(),
                    };
                    match pop3::login::choose(offer, method.only(), link, kind) {
                        Ok(m) if m != early => {}
                        _ => return Err(refused),
                    }
                }
            }
        }
        let offer = Offer {
            caps: self.caps.as_ref(),
            apop_timestamp: timestamp.is_some(),
        };
        let method = pop3::login::choose(offer, method.only(), link, kind)
            .map_err(|r| SessionError::Auth(r.to_string()))?;
        tracing::debug!(method = method.name(), "logging in");
        match method.exchange() {
            Exchange::User => {
                // With PIPELINING (RFC 2449 §6.6), USER and PASS go in one flight: one round
                // trip, not two. PASS after a refused USER is refused too, and harmless.
                let pipelining = self.caps.as_ref().is_some_and(|c| c.pipelining);
                let user_cmd = Command::User(user.to_string());
                let pass_cmd = Command::Pass(password.clone());
                let (st_user, st_pass) = if pipelining {
                    tracing::trace!("C: {user_cmd:?}");
                    tracing::trace!("C: {pass_cmd:?}");
                    self.pipe.queue(&user_cmd, None);
                    self.pipe.queue(&pass_cmd, None);
                    self.flush().await?;
                    (self.read_status().await?, Some(self.read_status().await?))
                } else {
                    (self.command(user_cmd).await?, None)
                };
                if !st_user.is_ok() {
                    return Err(SessionError::refused("USER", &st_user));
                }
                let st = match st_pass {
                    Some(st) => st,
                    None => self.command(pass_cmd).await?,
                };
                if !st.is_ok() {
                    return Err(SessionError::refused("PASS", &st));
                }
            }
            Exchange::Apop => {
                let ts = timestamp.ok_or_else(|| {
                    SessionError::Auth(pop3::login::Refusal::NoApopTimestamp.to_string())
                })?;
                let digest = pop3::auth::apop_digest(&ts, password);
                let cmd = Command::Apop {
                    user: user.to_string(),
                    digest,
                };
                let st = self.command(cmd).await?;
                if !st.is_ok() {
                    return Err(SessionError::refused("APOP", &st));
                }
            }
            Exchange::Sasl(mechanism) => {
                let sasl = Sasl::new(mechanism, user, password, (&self.host, self.port));
                self.sasl(sasl).await?;
            }
        }
        Ok(method)
    }

    /// PLAIN or USER/PASS queued behind the CAPA sent by [`Session::capa_or_defer`], in one
    /// flight; CAPA's answer is read into the capabilities first. The outer error ends the
    /// session; the inner one is the server's refusal of the login.
    async fn login_early(
        &mut self,
        method: Method,
        user: &str,
        password: &Secret<String>,
    ) -> Result<Result<(), SessionError>, SessionError> {
        let mut sasl = None;
        match method.exchange() {
            Exchange::Sasl(mechanism) => {
                let mut s = Sasl::new(mechanism, user, password, (&self.host, self.port));
                let first = s.first();
                tracing::trace!("C: {first:?}");
                self.pipe.queue(&first, None);
                sasl = Some(s);
            }
            _ => {
                for cmd in [
                    Command::User(user.to_string()),
                    Command::Pass(password.clone()),
                ] {
                    tracing::trace!("C: {cmd:?}");
                    self.pipe.queue(&cmd, None);
                }
            }
        }
        self.flush().await?;
        let st = self.read_status().await?;
        self.caps = self.capa_answer(st).await?;
        let st = self.read_status().await?;
        match sasl {
            Some(s) => match self.sasl_from(s, st).await {
                Err(e @ SessionError::Refused { .. }) => Ok(Err(e)),
                r => r.map(Ok),
            },
            None => {
                let st_pass = self.read_status().await?;
                if !st.is_ok() {
                    return Ok(Err(SessionError::refused("USER", &st)));
                }
                if !st_pass.is_ok() {
                    return Ok(Err(SessionError::refused("PASS", &st_pass)));
                }
                Ok(Ok(()))
            }
        }
    }

    /// One SASL exchange (RFC 5034 §4), driven by [`Sasl`]: this writes and reads. A
    /// bearer-token failure comes as a challenge carrying a JSON error (status, scope), which
    /// goes into the error, never the token.
    async fn sasl(&mut self, mut sasl: Sasl) -> Result<(), SessionError> {
        let st = self.command(sasl.first()).await?;
        self.sasl_from(sasl, st).await
    }

    /// A SASL exchange from the answer `st` to its first command on.
    async fn sasl_from(&mut self, mut sasl: Sasl, mut st: Status) -> Result<(), SessionError> {
        loop {
            match sasl.answer(&st) {
                Ok(Next::Done) => return Ok(()),
                // The answer continues the same exchange: no new answer is expected of the
                // decoder.
                Ok(Next::Send(line)) => {
                    tracing::trace!("C: {line:?}");
                    self.pipe.continue_with(&line);
                    self.flush().await?;
                }
                Err(SaslError::Refused { detail }) => {
                    let mut e = SessionError::refused("AUTH", &st);
                    if let (Some(d), SessionError::Refused { text, .. }) = (detail, &mut e) {
                        let mechanism = sasl.mechanism().name();
                        tracing::warn!(mechanism, error = %d, "the server rejected the OAuth2 token");
                        text.push_str(&format!(" (token rejected: {d})"));
                    }
                    return Err(e);
                }
                Err(e) => return Err(SessionError::Auth(e.to_string())),
            }
            st = self.read_status().await?;
        }
    }

    /// The unique-id listing, handed to `f` line by line as it arrives: a mailbox may list
    /// millions, and nothing here holds them. `false` when the server does not support UIDL.
    /// A malformed unique-id, or a message number listed twice or beyond STAT's count, is a
    /// protocol error: fetching by it would be unsafe. A unique-id listed twice is for the
    /// caller to notice among the messages it acts on (only it can do that in bounded memory).
    pub async fn uidl_each(
        &mut self,
        mut f: impl FnMut(MsgNum, &Uidl) -> Result<(), SessionError>,
    ) -> Result<bool, SessionError> {
        let (st, count) = self.stat_and(Command::Uidl(None)).await?;
        if !st.is_ok() {
            return Ok(false);
        }
        // Two unique-ids for one message would record one message's delivery under the other's
        // name, and delete the other unread.
        let mut nums = NumSet::new(count);
        self.read_listing("UIDL", listing_budget(count), |line| {
            let (n, uidl) = listing::uidl_line(&line)
                .map_err(|e| SessionError::bad_listing("UIDL", &line, &e.to_string()))?;
            nums.insert(n)
                .map_err(|why| SessionError::bad_listing("UIDL", &line, &why))?;
            f(n, &uidl)
        })
        .await?;
        Ok(true)
    }

    /// The scan listing, message numbers and sizes in octets, handed to `f` line by line as it
    /// arrives.
    pub async fn list_each(
        &mut self,
        mut f: impl FnMut(MsgNum, u64) -> Result<(), SessionError>,
    ) -> Result<(), SessionError> {
        let (st, count) = match (self.list_queued, self.stat_count) {
            (true, Some(count)) => {
                self.list_queued = false;
                (self.read_status().await?, count)
            }
            _ => self.stat_and(Command::List(None)).await?,
        };
        if !st.is_ok() {
            return Err(SessionError::refused("LIST", &st));
        }
        let mut nums = NumSet::new(count);
        self.read_listing("LIST", listing_budget(count), |line| {
            let (n, size) = listing::list_line(&line)
                .map_err(|e| SessionError::bad_listing("LIST", &line, &e.to_string()))?;
            nums.insert(n)
                .map_err(|why| SessionError::bad_listing("LIST", &line, &why))?;
            f(n, size)
        })
        .await
    }

    /// The next piece of the message being retrieved (unstuffed, `\n` line endings), or `None`
    /// at its end.
    pub async fn body_chunk(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        match self.next_event().await? {
            Event::Data(d) => Ok(Some(d)),
            Event::End => Ok(None),
            other => Err(SessionError::protocol(&format!(
                "unexpected {other:?} in a message"
            ))),
        }
    }

    /// Reads and drops the rest of a message being retrieved (at most `limit` more bytes), so that
    /// the session can go on after its delivery failed. Does nothing when no answer is under way.
    pub async fn skip_body(&mut self, limit: u64) -> Result<(), SessionError> {
        let mut seen = 0u64;
        while self.pipe.in_body() {
            match self.body_chunk().await? {
                Some(d) => {
                    seen += d.len() as u64;
                    if seen > limit {
                        return Err(SessionError::protocol("message larger than announced"));
                    }
                }
                None => break,
            }
        }
        Ok(())
    }

    /// The header of each message in `nums` by `TOP n 0` (RFC 1939 §7), in one flight when the
    /// server offers PIPELINING (`nums` is the caller's bounded list), else one at a time. `f`
    /// gets each message's number and at most `cap` bytes of what TOP answered (unstuffed, `\n`
    /// line endings), or `None` where the server refused that TOP; the rest of an answer is read
    /// and dropped, and an answer longer than `cap` plus the message's listed size (the second
    /// of each pair) ends the session as a protocol error. Nothing is retrieved, but a server may
    /// count TOP as a retrieval: under `EXPIRE 0` the caller must not use it.
    pub async fn heads_each(
        &mut self,
        nums: &[(MsgNum, u64)],
        cap: usize,
        mut f: impl FnMut(MsgNum, Option<&[u8]>),
    ) -> Result<(), SessionError> {
        let pipelining = self.caps.as_ref().is_some_and(|c| c.pipelining);
        let mut sent = 0;
        for (i, &(num, listed)) in nums.iter().enumerate() {
            while sent < nums.len() && (sent == i || pipelining) {
                let cmd = Command::Top(nums[sent].0, 0);
                tracing::trace!("C: {cmd:?}");
                self.pipe.queue(&cmd, None);
                sent += 1;
            }
            self.flush().await?;
            let st = self.read_status().await?;
            if !st.is_ok() {
                f(num, None);
                continue;
            }
            let limit = (cap as u64).saturating_add(listed);
            let mut head = Vec::new();
            let mut seen = 0u64;
            while let Some(chunk) = self.body_chunk().await? {
                seen = seen.saturating_add(chunk.len() as u64);
                if seen > limit {
                    return Err(SessionError::protocol(
                        "TOP answered more than the message's listed size",
                    ));
                }
                let room = cap.saturating_sub(head.len());
                head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            f(num, Some(&head));
        }
        Ok(())
    }

    /// Asks for LIST in the flight of the STAT and UIDL that [`Session::uidl_each`] sends, when
    /// the server offers PIPELINING: a poll that fetches then learns the sizes without a round
    /// trip of its own. The caller must then read the listing with [`Session::list_each`], or
    /// drop it with [`Session::skip_list`], before anything else. Call before `uidl_each`.
    pub fn queue_list(&mut self) {
        if self.stat_count.is_none() && self.caps.as_ref().is_some_and(|c| c.pipelining) {
            self.list_queued = true;
        }
    }

    /// Whether a LIST sent ahead is still to be read.
    pub fn list_queued(&self) -> bool {
        self.list_queued
    }

    /// Reads and drops the answer of a LIST sent ahead that turned out not to be needed.
    pub async fn skip_list(&mut self) -> Result<(), SessionError> {
        if self.list_queued {
            self.list_each(|_, _| Ok(())).await?;
        }
        Ok(())
    }

    /// The shortest round trip seen so far (a flight's write to its answer's first byte), once
    /// one was.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// Round trips so far (see the field's doc); [`Session::quit`] adds one.
    pub fn round_trips(&self) -> u32 {
        self.round_trips
    }

    /// Ends a session in which no DELE was sent: QUIT is sent and its answer not waited for,
    /// since nothing depends on it (nothing was marked for deletion). Saves a round trip per
    /// poll that finds nothing.
    pub async fn quit_unanswered(mut self) {
        self.interruptible = false;
        if !self.quit_queued {
            tracing::trace!("C: QUIT (its answer is not waited for)");
            self.pipe.queue(&Command::Quit, None);
        }
        let _ = self.flush().await;
        self.stream.shutdown().await;
    }

    /// Ends the session. `Ok` means the server answered +OK, so messages marked with DELE are gone
    /// (RFC 1939 §6); on any error they are still on the server.
    pub async fn quit(mut self) -> Result<(), SessionError> {
        // QUIT is what makes DELEs count: it is read out even when a stop was asked for.
        self.interruptible = false;
        let st = if self.quit_queued {
            debug_assert_eq!(self.pipe.in_flight(), 1, "QUIT's answer is the one due");
            self.flush().await?;
            self.read_status().await?
        } else {
            self.command(Command::Quit).await?
        };
        self.stream.shutdown().await;
        if st.is_ok() {
            Ok(())
        } else {
            Err(SessionError::refused("QUIT", &st))
        }
    }

    /// Queues a command without sending it (RFC 2449 §6.6 pipelining): [`Session::flush`] sends
    /// everything queued in one write, and [`Session::next_answer`] reads the answers in order,
    /// each with its `tag`. Only use with a server that advertises PIPELINING, or one command at
    /// a time.
    pub fn queue(&mut self, cmd: Command, tag: Tag) {
        tracing::trace!("C: {cmd:?}");
        // The transfer begins: from here the caller decides what a stop ends.
        self.interruptible = false;
        self.pipe.queue(&cmd, Some(tag));
    }

    /// Queues QUIT behind the DELEs queued last (with PIPELINING), so that they and the QUIT
    /// that commits them cost one round trip, not two; its answer is read by
    /// [`Session::quit`], after the DELEs' by [`Session::next_answer`]. Only when nothing else
    /// is to be sent. Should a DELE then be refused, the QUIT still commits the DELEs answered
    /// `+OK`: each was sent only for a message already durably delivered and recorded, so the
    /// next poll finds them gone and nothing is lost.
    pub fn queue_quit(&mut self) {
        debug_assert!(!self.quit_queued);
        tracing::trace!("C: QUIT");
        self.pipe.queue(&Command::Quit, None);
        self.quit_queued = true;
    }

    /// Whether [`Session::queue_quit`] was called.
    pub fn quit_queued(&self) -> bool {
        self.quit_queued
    }

    /// Whether the next answer's bytes are here already (decoded-but-unread bytes, or a read
    /// that would not wait): when they are not, the caller may do other work first.
    pub fn answer_ready(&self) -> bool {
        self.pipe.buffered() > 0 || self.stream.ready_now()
    }

    /// Commands sent or queued whose answers have not been read, QUIT's not counted.
    pub fn in_flight(&self) -> usize {
        self.pipe
            .in_flight()
            .saturating_sub(usize::from(self.quit_queued))
    }

    /// Sends the queued commands. A write never waits on the server's answers, and the queue is
    /// bounded by the caller, so reads and writes cannot deadlock on full socket buffers.
    pub async fn flush(&mut self) -> Result<(), SessionError> {
        if self.pipe.output().is_empty() {
            return Ok(());
        }
        if !self.sent {
            self.flight_at = Instant::now();
        }
        self.sent = true;
        let r = tokio::time::timeout(self.timeout, self.stream.write_all(self.pipe.output())).await;
        // Do not keep a credential in the buffer longer than needed.
        self.pipe.written();
        match r {
            Ok(r) => r.map_err(|e| NetError::Io(e).into()),
            Err(_) => Err(NetError::Timeout {
                what: "the server to accept a command",
                after: self.timeout,
            }
            .into()),
        }
    }

    /// Sends what is queued and reads the status line of the oldest unanswered command. After
    /// `+OK` to a RETR, read its body with [`Session::body_chunk`] before the next answer.
    pub async fn next_answer(&mut self) -> Result<(Tag, Status), SessionError> {
        self.flush().await?;
        let st = self.read_status().await?;
        match self.pipe.current() {
            Some((Some(tag), _)) => Ok((tag, st)),
            _ => Err(SessionError::protocol("internal: no answer is due")),
        }
    }

    /// Sends one command and reads its status line.
    async fn command(&mut self, cmd: Command) -> Result<Status, SessionError> {
        debug_assert_eq!(
            self.pipe.in_flight(),
            0,
            "command() while answers are pending"
        );
        tracing::trace!("C: {cmd:?}");
        self.pipe.queue(&cmd, None);
        self.flush().await?;
        self.read_status().await
    }

    /// The status line of the answer due.
    async fn read_status(&mut self) -> Result<Status, SessionError> {
        match self.next_event().await? {
            Event::Status(s) => Ok(s),
            other => Err(SessionError::protocol(&format!(
                "expected a status line for {}, got {other:?}",
                self.pipe.current().map_or("?", |(_, what)| what)
            ))),
        }
    }

    /// STAT, then `cmd` (UIDL or LIST), pipelined when the server allows it, so STAT costs no
    /// round trip; STAT is sent once per session. Returns `cmd`'s status and STAT's count.
    async fn stat_and(&mut self, cmd: Command) -> Result<(Status, u64), SessionError> {
        if let Some(count) = self.stat_count {
            let st = self.command(cmd).await?;
            return Ok((st, count));
        }
        let pipelining = self.caps.as_ref().is_some_and(|c| c.pipelining);
        tracing::trace!("C: STAT");
        self.pipe.queue(&Command::Stat, None);
        if pipelining {
            tracing::trace!("C: {cmd:?}");
            self.pipe.queue(&cmd, None);
            if self.list_queued {
                tracing::trace!("C: {:?}", Command::List(None));
                self.pipe.queue(&Command::List(None), None);
            }
        } else {
            self.list_queued = false;
        }
        self.flush().await?;
        let stat = self.read_status().await?;
        if !stat.is_ok() {
            return Err(SessionError::refused("STAT", &stat));
        }
        let count = listing::stat_count(&stat.text)
            .map_err(|e| SessionError::bad_listing("STAT", &stat.text, &e.to_string()))?;
        if count > MAX_MESSAGES {
            return Err(SessionError::bad_listing(
                "STAT",
                &stat.text,
                &format!("more than the {MAX_MESSAGES} messages popfetch can poll in a mailbox"),
            ));
        }
        self.stat_count = Some(count);
        let st = if pipelining {
            self.read_status().await?
        } else {
            self.command(cmd).await?
        };
        Ok((st, count))
    }

    /// Reads the lines of a listing into `f`, one at a time, within `(octets, lines)`: a line
    /// past either ends the session with [`SessionError::OverBudget`].
    async fn read_listing(
        &mut self,
        what: &'static str,
        limits: (u64, u64),
        mut f: impl FnMut(Vec<u8>) -> Result<(), SessionError>,
    ) -> Result<(), SessionError> {
        let mut budget = Budget::new(limits);
        loop {
            match self.next_event().await? {
                Event::Line(l) => {
                    if !budget.take(&l) {
                        return Err(SessionError::OverBudget {
                            what,
                            octets: budget.octets,
                            lines: budget.lines,
                            count: self.stat_count,
                        });
                    }
                    f(l)?;
                }
                Event::End => return Ok(()),
                other => {
                    return Err(SessionError::protocol(&format!(
                        "unexpected {other:?} in the {what} listing"
                    )));
                }
            }
        }
    }

    async fn next_event(&mut self) -> Result<Event, SessionError> {
        loop {
            if let Some(ev) = self.pipe.next_event().map_err(SessionError::Decode)? {
                trace_received(&ev);
                return Ok(ev);
            }
            // Waiting for the rest of an answer under way counts towards the minimum rate;
            // waiting for an answer's first byte has the timeout alone.
            let mid = self.pipe.mid_answer();
            let first = !mid && self.sent;
            if first {
                self.round_trips += 1;
                self.sent = false;
            }
            let what = self.pipe.waiting_for();
            let started = Instant::now();
            let buf = self.pipe.buffer_mut();
            buf.reserve(READ_SIZE);
            let read = tokio::time::timeout(self.timeout, self.stream.read_buf(buf));
            let r = if self.interruptible {
                tokio::select! {
                    r = read => r,
                    () = self.stop.cancelled() => return Err(SessionError::Cancelled),
                }
            } else {
                read.await
            };
            let n = match r {
                Ok(r) => r.map_err(NetError::Io)?,
                Err(_) => {
                    return Err(NetError::Timeout {
                        what: wait_name(what),
                        after: self.timeout,
                    }
                    .into());
                }
            };
            if n == 0 {
                return Err(SessionError::Closed);
            }
            // Every command of what is awaited was sent: no reply will carry the ACK.
            self.stream.quick_ack();
            if first {
                let rtt = self.flight_at.elapsed();
                self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
            }
            self.flow.count(mid.then(|| started.elapsed()), n as u64)?;
        }
    }
}

/// What the server sent, for `-vvv` (`C:` lines are what was sent): status lines and listing
/// lines as they came (made printable), message data by its size.
fn trace_received(ev: &Event) {
    if !tracing::enabled!(tracing::Level::TRACE) {
        return;
    }
    match ev {
        Event::Status(s) => {
            let kind = match s.kind {
                pop3::StatusKind::Ok => "+OK",
                pop3::StatusKind::Err => "-ERR",
                pop3::StatusKind::Continue => "+",
            };
            let code = s.code.map(|c| format!(" [{c}]")).unwrap_or_default();
            tracing::trace!("S: {kind}{code} {}", s.text_lossy());
        }
        Event::Line(l) => tracing::trace!("S: {}", pop3::printable(l, 200)),
        Event::Data(d) => tracing::trace!("S: ({} bytes of the message)", d.len()),
        Event::End => tracing::trace!("S: ."),
    }
}

fn wait_name(what: Option<&'static str>) -> &'static str {
    match what.unwrap_or_default() {
        "greeting" => "the server's greeting",
        "RETR" => "message data",
        _ => "the server's answer",
    }
}

/// What proves the user's identity: a password, an OAuth2 access token, or the TLS client
/// certificate the connection was made with.
#[derive(Debug, Clone)]
pub enum Credential {
    Password(Secret<String>),
    Token(Secret<String>),
    Certificate,
}
