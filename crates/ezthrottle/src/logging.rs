//! Logging that can never block, panic or wedge the server.
//!
//! Log lines go through a bounded queue to one writer thread. When stderr is slow or blocked
//! (a full pipe) lines are dropped and counted instead of stalling a dispatch task; when it is
//! gone (`serve 2>&1 | head`, a restarted journald) write errors are ignored instead of
//! panicking inside the task that logged. Rust ignores SIGPIPE in its binaries, so a closed
//! pipe is an `EPIPE` error here, not a signal that kills the process.
//!
//! Lines written while a request is handled end with its id (`request_id=…`; in JSON a top-level
//! `"request_id"`), taken from the HTTP edge's task-local rather than from a per-request span.
//!
//! `--log-json` lines carry real JSON types: integers and booleans as such, and optional values
//! logged with `?` (`None`, `Some(503)`) as `null` and their inner value.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Lines that may wait for the writer thread before new ones are dropped.
const QUEUE_LINES: usize = 8192;

enum Msg {
    Line(Vec<u8>),
    /// Everything sent before has been written (or failed); answer on the channel.
    Flush(SyncSender<()>),
}

/// The `MakeWriter` handed to `tracing_subscriber`: each line is queued, never written inline.
#[derive(Clone)]
pub(crate) struct QueuedStderr {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl Write for QueuedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.tx.try_send(Msg::Line(buf.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueuedStderr {
    type Writer = QueuedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Writes what is still queued when dropped (bounded: a blocked stderr cannot hold the exit).
pub(crate) struct LogGuard {
    tx: SyncSender<Msg>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let (ack, done) = sync_channel(1);
        let mut msg = Msg::Flush(ack);
        let until = Instant::now() + Duration::from_secs(1);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < until => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = done.recv_timeout(Duration::from_secs(2));
    }
}

/// Installs the global subscriber: `EZTHROTTLE_LOG` filter (default `info,tower_http=warn`),
/// text or JSON lines on stderr, colour only when stderr is a terminal and `NO_COLOR` is unset.
pub(crate) fn init(json: bool) -> LogGuard {
    let (tx, rx) = sync_channel(QUEUE_LINES);
    let dropped = Arc::new(AtomicU64::new(0));
    let d = dropped.clone();
    let spawned = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(rx, d, json));
    let writer = QueuedStderr {
        tx: tx.clone(),
        dropped,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("EZTHROTTLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    let ansi = !json && std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .log_internal_errors(false);
    let installed = if json {
        install(
            b.json().map_event_format(WithRequestId),
            spawned.is_ok(),
            writer,
        )
    } else {
        install(b.map_event_format(WithRequestId), spawned.is_ok(), writer)
    };
    let _ = installed; // already installed (tests): keep the first
    LogGuard { tx }
}

/// Installs `b` writing to the queue, or (without the writer thread: it could not be spawned)
/// straight to stderr, ignoring errors.
fn install<N, E>(
    b: tracing_subscriber::fmt::SubscriberBuilder<N, E, tracing_subscriber::EnvFilter>,
    queued: bool,
    writer: QueuedStderr,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    E: FormatEvent<tracing_subscriber::Registry, N> + Send + Sync + 'static,
{
    if queued {
        b.with_writer(writer).try_init()
    } else {
        b.with_writer(|| IgnoreErrors).try_init()
    }
}

/// Adds the id of the request being handled to each line the inner format writes.
struct WithRequestId<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        ezt_http::with_current_request_id(|id| {
            let Some(id) = id else {
                return self.0.format_event(ctx, writer.by_ref(), event);
            };
            // The inner format sets its own ANSI choice, so a plain `Writer` loses nothing.
            let mut line = String::with_capacity(256);
            self.0.format_event(ctx, Writer::new(&mut line), event)?;
            writer.write_str(&with_request_id(&line, id))
        })
    }
}

/// `line` (one formatted event, newline-terminated) with `id` added: a leading
/// `"request_id"` member for a JSON object, a trailing ` request_id=…` for text.
fn with_request_id(line: &str, id: &str) -> String {
    let body = line.strip_suffix('\n').unwrap_or(line);
    match body.strip_prefix('{') {
        Some(rest) => {
            let quoted = Value::String(id.to_string()).to_string();
            let sep = if rest.starts_with('}') { "" } else { "," };
            format!("{{\"request_id\":{quoted}{sep}{rest}\n")
        }
        None => format!("{body} request_id={id}\n"),
    }
}

/// Stderr, ignoring write errors.
struct IgnoreErrors;

impl Write for IgnoreErrors {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The writer thread: stderr errors are ignored, drops are reported once stderr keeps up.
fn write_lines(rx: Receiver<Msg>, dropped: Arc<AtomicU64>, json: bool) {
    let mut err = std::io::stderr();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Line(line) => {
                let line = if json { typed_json_line(&line) } else { line };
                let _ = err.write_all(&line);
            }
            Msg::Flush(ack) => {
                let _ = err.flush();
                let _ = ack.try_send(());
            }
        }
        let n = dropped.swap(0, Ordering::Relaxed);
        if n > 0 {
            let note = format!("{n} log lines dropped: stderr was not keeping up");
            let line = if json {
                serde_json::json!({"level": "WARN", "fields": {"message": note, "dropped": n}, "target": "ezthrottle::logging"}).to_string() + "\n"
            } else {
                format!("WARN ezthrottle::logging: {note}\n")
            };
            let _ = err.write_all(line.as_bytes());
        }
    }
}

/// Re-types the values `tracing` could only record as text: `None` → `null`, `Some(x)` → `x`
/// (a number, boolean or string when `x` is one). Lines that are not JSON pass unchanged.
fn typed_json_line(line: &[u8]) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(line) else {
        return line.to_vec();
    };
    if let Some(o) = v.as_object_mut() {
        for key in ["fields", "span"] {
            if let Some(Value::Object(f)) = o.get_mut(key) {
                retype_object(f);
            }
        }
        if let Some(Value::Array(spans)) = o.get_mut("spans") {
            for s in spans {
                if let Value::Object(f) = s {
                    retype_object(f);
                }
            }
        }
    }
    let mut out = v.to_string().into_bytes();
    out.push(b'\n');
    out
}

fn retype_object(o: &mut serde_json::Map<String, Value>) {
    for (k, v) in o.iter_mut() {
        if k == "message" {
            continue;
        }
        if let Value::String(s) = v {
            if let Some(t) = retype(s) {
                *v = t;
            }
        }
    }
}

/// The typed value of a `Debug`-printed `Option`, or `None` to keep the string.
fn retype(s: &str) -> Option<Value> {
    if s == "None" {
        return Some(Value::Null);
    }
    let inner = s.strip_prefix("Some(")?.strip_suffix(')')?;
    Some(match serde_json::from_str::<Value>(inner) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::String(_))) => v,
        _ => Value::String(inner.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_printed_options_become_json_types() {
        let line = br#"{"level":"INFO","fields":{"message":"None","status":"Some(503)","error":"None","decision":"Retry","wait_ms":"Some(250)","name":"Some(\"x\")","attempt":2},"span":{"id":"Some(abc def)"},"spans":[{"n":"None"}]}"#;
        let v: Value = serde_json::from_slice(&typed_json_line(line)).unwrap();
        let f = &v["fields"];
        assert_eq!(f["message"], "None", "messages are text");
        assert_eq!(f["status"], 503);
        assert_eq!(f["error"], Value::Null);
        assert_eq!(f["decision"], "Retry");
        assert_eq!(f["wait_ms"], 250);
        assert_eq!(f["name"], "x");
        assert_eq!(f["attempt"], 2);
        assert_eq!(v["span"]["id"], "abc def");
        assert_eq!(v["spans"][0]["n"], Value::Null);
        assert_eq!(typed_json_line(b"not json\n"), b"not json\n");
    }

    #[test]
    fn request_ids_join_text_and_json_lines() {
        assert_eq!(
            with_request_id("INFO x: job cancelled job_id=j1\n", "trace-me"),
            "INFO x: job cancelled job_id=j1 request_id=trace-me\n"
        );
        let json = with_request_id("{\"level\":\"INFO\",\"fields\":{}}\n", "a\"b\\c");
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["request_id"], "a\"b\\c");
        assert_eq!(v["level"], "INFO");
        assert_eq!(with_request_id("{}\n", "r"), "{\"request_id\":\"r\"}\n");
    }

    #[test]
    fn a_full_queue_drops_lines_instead_of_blocking() {
        let (tx, _rx) = sync_channel(1);
        let mut w = QueuedStderr {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        for _ in 0..3 {
            assert_eq!(w.write(b"line\n").unwrap(), 5);
        }
        assert_eq!(w.dropped.load(Ordering::Relaxed), 2);
    }
}
