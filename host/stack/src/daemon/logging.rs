//! The daemon's log: [`tracing`] events on stderr, filtered by `RUST_LOG` or the config's
//! `log_level`, written as text or as one JSON object per line (`log_format`), with a bridge
//! for the raft crate's slog logger ([`SlogBridge`], target `clusterd::raft`) and a rate
//! limiter for lines a remote peer could cause at will ([`RateLimiter`]).
//!
//! Targets: `clusterd::node` (the node's life: start, epochs, leave, stop), `clusterd::sync`
//! (the replication transport and its peers), `clusterd::raft` (consensus, and the raft
//! crate's own log), `clusterd::card` (the card and its ports), `clusterd::esp` (SAs),
//! `clusterd::control` (the control socket), `clusterd::metrics` (the metrics listener).
//! Every event carries the field `node`.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

use crate::daemon::config::LogFormat;

/// The filter when neither `RUST_LOG` nor `log_level` gives one.
pub const DEFAULT_FILTER: &str = "info";

/// Installs the process's log subscriber: the filter from `RUST_LOG` when it is set (and not
/// empty), else from `log_level`, else [`DEFAULT_FILTER`]; text or JSON lines on stderr.
/// A second call (a subscriber is already installed) changes nothing.
///
/// # Errors
/// A `RUST_LOG` that is not a filter, named with the fix.
pub fn init(log_level: Option<&str>, format: LogFormat) -> Result<(), String> {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = match &env {
        Some(v) => EnvFilter::try_new(v).map_err(|e| {
            format!(
                "RUST_LOG={v:?} is not a log filter ({e}); fix: set it to a level (error, warn, \
                 info, debug, trace) or e.g. \"info,clusterd::raft=debug\", or unset it to use \
                 the config's log_level"
            )
        })?,
        None => EnvFilter::try_new(log_level.unwrap_or(DEFAULT_FILTER))
            .map_err(|e| format!("log_level: {e}; fix: write e.g. log_level = \"info\""))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    Ok(())
}

/// At most `per_second` lines of one kind each second; the lines past that are counted, and
/// the next line let through after them is preceded by one "suppressed K lines" line (also
/// written by [`RateLimiter::flush`] once the second is over, when no line of the kind
/// follows).
#[derive(Debug)]
pub struct RateLimiter {
    per_second: u32,
    window: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

/// What [`RateLimiter::check`] says about one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; first write that `n` lines before it were suppressed (when `n > 0`).
    Log {
        /// Lines suppressed since the last one written.
        suppressed: u64,
    },
    /// Drop it (counted).
    Suppress,
}

impl RateLimiter {
    /// A limiter of `per_second` lines a second (at least 1).
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second: per_second.max(1),
            window: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Whether a line at `now` goes out.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let fresh = self
            .window
            .is_none_or(|w| now.saturating_duration_since(w) >= Duration::from_secs(1));
        if fresh {
            self.window = Some(now);
            self.in_window = 0;
        }
        if self.in_window >= self.per_second {
            self.suppressed += 1;
            return Verdict::Suppress;
        }
        self.in_window += 1;
        Verdict::Log {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }

    /// Lines suppressed in a second that is over, once (0 when none, or while the second
    /// lasts).
    pub fn flush(&mut self, now: Instant) -> u64 {
        match self.window {
            Some(w) if now.saturating_duration_since(w) >= Duration::from_secs(1) => {
                std::mem::take(&mut self.suppressed)
            }
            _ => 0,
        }
    }
}

/// A [`slog::Drain`] that hands the raft crate's records to [`tracing`] at target
/// `clusterd::raft`: its errors and warnings at error and warn, its info chatter (elections,
/// votes, term changes) at debug, its debug and trace (every message sent) at trace. Warnings and errors are
/// rate-limited (a peer can provoke them).
pub struct SlogBridge {
    node: u16,
    limiter: std::sync::Mutex<RateLimiter>,
}

impl SlogBridge {
    /// The bridge for node `node`.
    pub fn new(node: u16) -> Self {
        Self {
            node,
            limiter: std::sync::Mutex::new(RateLimiter::new(20)),
        }
    }

    /// A slog logger that writes through this bridge.
    pub fn logger(node: u16) -> slog::Logger {
        slog::Logger::root(Self::new(node), slog::o!())
    }
}

/// Collects a record's key-value pairs as ` key=value`.
struct Kv(String);

impl slog::Serializer for Kv {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl slog::Drain for SlogBridge {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        use slog::KV as _;
        use tracing::Level;
        let level = match record.level() {
            slog::Level::Critical | slog::Level::Error => Level::ERROR,
            slog::Level::Warning => Level::WARN,
            slog::Level::Info => Level::DEBUG,
            slog::Level::Debug | slog::Level::Trace => Level::TRACE,
        };
        let enabled = match level {
            Level::ERROR => tracing::enabled!(target: "clusterd::raft", Level::ERROR),
            Level::WARN => tracing::enabled!(target: "clusterd::raft", Level::WARN),
            Level::DEBUG => tracing::enabled!(target: "clusterd::raft", Level::DEBUG),
            _ => tracing::enabled!(target: "clusterd::raft", Level::TRACE),
        };
        if !enabled {
            return Ok(());
        }
        if level <= Level::WARN {
            let verdict = match self.limiter.lock() {
                Ok(mut l) => l.check(Instant::now()),
                Err(_) => Verdict::Log { suppressed: 0 },
            };
            match verdict {
                Verdict::Suppress => return Ok(()),
                Verdict::Log { suppressed } if suppressed > 0 => {
                    tracing::warn!(target: "clusterd::raft", node = self.node,
                        "raft: suppressed {suppressed} lines (more than 20 a second)");
                }
                Verdict::Log { .. } => {}
            }
        }
        let mut kv = Kv(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let msg = record.msg();
        let node = self.node;
        let kv = kv.0;
        match level {
            Level::ERROR => tracing::error!(target: "clusterd::raft", node, "raft: {msg}{kv}"),
            Level::WARN => tracing::warn!(target: "clusterd::raft", node, "raft: {msg}{kv}"),
            Level::DEBUG => tracing::debug!(target: "clusterd::raft", node, "raft: {msg}{kv}"),
            _ => tracing::trace!(target: "clusterd::raft", node, "raft: {msg}{kv}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_lets_n_a_second_through_then_counts() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(3);
        for _ in 0..3 {
            assert_eq!(l.check(t0), Verdict::Log { suppressed: 0 });
        }
        for i in 1..=5 {
            assert_eq!(
                l.check(t0 + Duration::from_millis(i * 100)),
                Verdict::Suppress
            );
        }
        // nothing to flush while the second lasts
        assert_eq!(l.flush(t0 + Duration::from_millis(900)), 0);
        // the next second: the first line says how many went before it
        let t1 = t0 + Duration::from_millis(1000);
        assert_eq!(l.check(t1), Verdict::Log { suppressed: 5 });
        assert_eq!(l.check(t1), Verdict::Log { suppressed: 0 });
        assert_eq!(l.check(t1), Verdict::Log { suppressed: 0 });
        assert_eq!(l.check(t1), Verdict::Suppress);
        // no line follows: flush reports it once the second is over, once
        let t2 = t1 + Duration::from_millis(1500);
        assert_eq!(l.flush(t2), 1);
        assert_eq!(l.flush(t2), 0);
        assert_eq!(l.check(t2), Verdict::Log { suppressed: 0 });
        // at least one a second
        let mut z = RateLimiter::new(0);
        assert_eq!(z.check(t0), Verdict::Log { suppressed: 0 });
        assert_eq!(z.check(t0), Verdict::Suppress);
    }

    #[test]
    fn slog_bridge_takes_every_level_without_a_subscriber() {
        let log = SlogBridge::logger(7);
        slog::error!(log, "an error"; "term" => 3);
        slog::warn!(log, "a warning");
        slog::info!(log, "became follower at term {}", 2);
        slog::debug!(log, "chatter");
        slog::trace!(log, "more chatter");
    }
}
