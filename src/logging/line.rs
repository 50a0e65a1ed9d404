//! One log line, the same for every sink: the event's message, prefixed with the account it
//! concerns (from the event or an enclosing span), so that a line read alone in `journalctl`
//! or on a terminal says whom it is about; and its fields, for the journal's structured view.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Cap on one field's value and on the message: a log line never carries a whole message body
/// or a server's endless answer.
pub const MAX_VALUE: usize = 16 * 1024;

/// A field's name and its value as text.
pub type Pair = (&'static str, String);

/// What one event says, ready for a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub level: Level,
    /// `account NAME: message` when the event concerns an account, else the message.
    pub text: String,
    /// The event's fields after those of its spans, outermost first; `message` is not one.
    pub fields: Vec<Pair>,
    pub file: Option<&'static str>,
    pub line: Option<u32>,
}

impl Line {
    /// The line of `event`, with the fields of the spans it happened in.
    pub fn of<S>(event: &Event<'_>, ctx: &Context<'_, S>) -> Line
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let mut fields = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    fields.extend(f.0.iter().cloned());
                }
            }
        }
        let mut v = Collect {
            message: String::new(),
            fields,
        };
        event.record(&mut v);
        let meta = event.metadata();
        Line {
            level: *meta.level(),
            text: compose(&v.message, &v.fields),
            fields: v.fields,
            file: meta.file(),
            line: meta.line(),
        }
    }
}

/// `account NAME: message`, unless the message names its account already or no field does.
pub fn compose(message: &str, fields: &[Pair]) -> String {
    let account = fields.iter().rev().find(|(k, _)| *k == "account");
    match account {
        Some((_, name)) if !message.starts_with(&format!("account {name}:")) => {
            format!("account {name}: {message}")
        }
        _ => message.to_string(),
    }
}

/// The fields a span was opened with, kept in its extensions for the events inside it.
struct SpanFields(Vec<Pair>);

/// Keeps span fields; both sinks share it.
pub fn on_new_span<S>(attrs: &Attributes<'_>, id: &Id, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.span(id) else { return };
    let mut v = Collect {
        message: String::new(),
        fields: Vec::new(),
    };
    attrs.record(&mut v);
    span.extensions_mut().insert(SpanFields(v.fields));
}

/// Fields recorded on a span after it was opened.
pub fn on_record<S>(id: &Id, values: &Record<'_>, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.span(id) else { return };
    let mut ext = span.extensions_mut();
    if let Some(f) = ext.get_mut::<SpanFields>() {
        let mut v = Collect {
            message: String::new(),
            fields: std::mem::take(&mut f.0),
        };
        values.record(&mut v);
        f.0 = v.fields;
    }
}

struct Collect {
    message: String,
    fields: Vec<Pair>,
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format_args!("{value:?}"));
    }
}

impl Collect {
    fn put(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let mut s = String::new();
        let _ = s.write_fmt(value);
        cap(&mut s);
        if field.name() == "message" {
            self.message = s;
        } else {
            self.fields.retain(|(k, _)| *k != field.name());
            self.fields.push((field.name(), s));
        }
    }
}

/// Cuts `s` to [`MAX_VALUE`] bytes at a character boundary, saying so.
fn cap(s: &mut String) {
    if s.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(" [cut]");
    }
}
