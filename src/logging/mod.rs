//! The relay's logger: env_logger's filters and writer, with two things in
//! front of every line, whichever call site produced it.
//!
//! - **Rate limits.** Each call site (file and line) may log
//!   [`SITE_LINES_PER_SEC`] lines per second, and all sites together
//!   [`TOTAL_LINES_PER_SEC`]; what is over is counted, and when the window
//!   ends one summary line says how many similar lines were suppressed
//!   (`[src/front/reverse/deliver.rs:240] 41233 similar lines suppressed
//!   (over 100 lines/s)`). A child's stderr lines (target [`STDERR_TARGET`])
//!   are limited per process by `io::stderr` instead of per call site, so one
//!   noisy server does not silence another; they count toward the total.
//!   Summaries are written at the first log line or loop turn after their
//!   window ends (`tick`, from the loop), and at exit (`flush`).
//! - **Escaping.** Every message is escaped and cut (`escape`,
//!   `format::MAX_MESSAGE`): peer text cannot forge lines or reach the
//!   terminal raw. Call sites quoting raw peer bytes use [`Escaped`].
//!
//! `--log-format json` writes one JSON object per line (`format`).

pub mod escape;
pub mod format;
pub mod limit;
pub mod site;

use log::Log;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

pub use escape::Escaped;
pub use format::Format;
use limit::Window;

/// Lines per second one call site may log.
pub const SITE_LINES_PER_SEC: u32 = 100;
/// Lines per second all sources together may log (summaries aside).
pub const TOTAL_LINES_PER_SEC: u32 = 1000;
/// Call sites tracked one by one; more (never the case in this code base)
/// share one window.
const MAX_SITES: usize = 1024;
/// Target of a child's stderr lines, rate-limited per process by their
/// drain rather than per call site.
pub const STDERR_TARGET: &str = "mcp_relay::stderr";

type Site = (&'static str, u32);

struct SiteState {
    window: Window,
    level: log::Level,
    target: String,
}

struct Limits {
    sites: HashMap<Site, SiteState>,
    total: Window,
    /// The earliest instant a summary is owed.
    next_due: Option<Instant>,
}

pub struct RelayLogger {
    inner: env_logger::Logger,
    limits: Mutex<Limits>,
}

static LOGGER: OnceLock<&'static RelayLogger> = OnceLock::new();
/// Lines suppressed by any limit since start (`mcp_relay_log_lines_suppressed_total`).
/// An atomic because the logger is process-wide (the resolver thread logs too).
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Counts lines a source suppressed itself (a child's stderr drain).
pub fn count_suppressed(n: u64) {
    SUPPRESSED.fetch_add(n, Ordering::Relaxed);
}

/// The logger's Prometheus samples, appended to `/metrics`.
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "# HELP mcp_relay_log_lines_suppressed_total Log lines suppressed by the rate limits.\n\
         # TYPE mcp_relay_log_lines_suppressed_total counter\n\
         mcp_relay_log_lines_suppressed_total {}\n",
        SUPPRESSED.load(Ordering::Relaxed)
    );
}

/// Installs the logger. `level`: `--log-level` (else `RUST_LOG`, else `info`).
pub fn init(level: Option<&str>, format: Format) {
    let mut b = env_logger::Builder::new();
    b.target(env_logger::Target::Stderr);
    match level {
        Some(l) => {
            b.parse_filters(l);
        }
        None => match std::env::var("RUST_LOG") {
            Ok(v) => {
                b.parse_filters(&v);
            }
            Err(_) => {
                b.filter_level(log::LevelFilter::Info);
            }
        },
    }
    b.format(move |buf, record| format::write(buf, format, record));
    let inner = b.build();
    let max = inner.filter();
    let logger: &'static RelayLogger = Box::leak(Box::new(RelayLogger {
        inner,
        limits: Mutex::new(Limits {
            sites: HashMap::new(),
            total: Window::new(TOTAL_LINES_PER_SEC),
            next_due: None,
        }),
    }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(max);
        let _ = LOGGER.set(logger);
    }
}

/// Writes the summaries whose window is over. Called once per loop turn.
pub fn tick(now: Instant) {
    if let Some(l) = LOGGER.get() {
        let mut limits = l.limits.lock().unwrap_or_else(PoisonError::into_inner);
        if limits.next_due.is_some_and(|at| now >= at) {
            limits.summarize(&l.inner, Some(now));
        }
    }
}

/// When the next summary is owed, for the loop's poll timeout.
pub fn next_due() -> Option<Instant> {
    let l = LOGGER.get()?;
    l.limits
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .next_due
}

/// Writes every pending summary (at exit).
pub fn flush() {
    if let Some(l) = LOGGER.get() {
        let mut limits = l.limits.lock().unwrap_or_else(PoisonError::into_inner);
        limits.summarize(&l.inner, None);
    }
}

fn emit(
    inner: &env_logger::Logger,
    level: log::Level,
    target: &str,
    args: std::fmt::Arguments<'_>,
) {
    inner.log(
        &log::Record::builder()
            .args(args)
            .level(level)
            .target(target)
            .build(),
    );
}

fn summary_site(inner: &env_logger::Logger, site: Site, s: &SiteState, n: u64) {
    emit(
        inner,
        s.level,
        &s.target,
        format_args!(
            "[{}:{}] {n} similar lines suppressed (over {} lines/s)",
            site.0,
            site.1,
            s.window.per_sec()
        ),
    );
}

fn summary_total(inner: &env_logger::Logger, n: u64) {
    emit(
        inner,
        log::Level::Warn,
        "mcp_relay",
        format_args!("{n} log lines suppressed (over {TOTAL_LINES_PER_SEC} lines/s in total)"),
    );
}

impl Limits {
    /// Reports what windows that are over (all of them if `now` is None)
    /// suppressed, and recomputes `next_due`.
    fn summarize(&mut self, inner: &env_logger::Logger, now: Option<Instant>) {
        let mut next: Option<Instant> = None;
        for (site, s) in self.sites.iter_mut() {
            let n = match now {
                Some(now) => s.window.take_due(now),
                None => s.window.take_all(),
            };
            if n > 0 {
                summary_site(inner, *site, s, n);
            }
            next = min_opt(next, s.window.due());
        }
        let n = match now {
            Some(now) => self.total.take_due(now),
            None => self.total.take_all(),
        };
        if n > 0 {
            summary_total(inner, n);
        }
        self.next_due = min_opt(next, self.total.due());
    }

    /// Whether `record` may be written now (writing owed summaries first).
    fn admit(
        &mut self,
        inner: &env_logger::Logger,
        record: &log::Record<'_>,
        now: Instant,
    ) -> bool {
        if self.next_due.is_some_and(|at| now >= at) {
            self.summarize(inner, Some(now));
        }
        if record.target() != STDERR_TARGET {
            let key = match record.file_static() {
                Some(f)
                    if self.sites.len() < MAX_SITES
                        || self.sites.contains_key(&(f, record.line().unwrap_or(0))) =>
                {
                    (f, record.line().unwrap_or(0))
                }
                _ => ("(other)", 0),
            };
            let s = self.sites.entry(key).or_insert_with(|| SiteState {
                window: Window::new(SITE_LINES_PER_SEC),
                level: record.level(),
                target: record.target().to_string(),
            });
            let a = s.window.admit(now);
            if a.ended > 0 {
                summary_site(inner, key, s, a.ended);
            }
            let due = s.window.due();
            if !a.log {
                count_suppressed(1);
                self.next_due = min_opt(self.next_due, due);
                return false;
            }
        }
        let a = self.total.admit(now);
        if a.ended > 0 {
            summary_total(inner, a.ended);
        }
        if !a.log {
            count_suppressed(1);
            self.next_due = min_opt(self.next_due, self.total.due());
        }
        a.log
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl log::Log for RelayLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.inner.matches(record) {
            return;
        }
        let now = Instant::now();
        let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        if limits.admit(&self.inner, record, now) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Arc;
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logger(sink: &Sink) -> env_logger::Logger {
        env_logger::Builder::new()
            .filter_level(log::LevelFilter::Trace)
            .target(env_logger::Target::Pipe(Box::new(sink.clone())))
            .format(|buf, r| format::write(buf, Format::Text, r))
            .build()
    }

    fn limits() -> Limits {
        Limits {
            sites: HashMap::new(),
            total: Window::new(TOTAL_LINES_PER_SEC),
            next_due: None,
        }
    }

    /// Logs one line from call site `line` (file `f.rs`) through `limits`.
    fn log_at(l: &mut Limits, inner: &env_logger::Logger, line: u32, target: &str, now: Instant) {
        let args = format_args!("line from {line}");
        let rec = log::Record::builder()
            .args(args)
            .level(log::Level::Warn)
            .target(target)
            .file_static(Some("f.rs"))
            .line(Some(line))
            .build();
        if l.admit(inner, &rec, now) {
            inner.log(&rec);
        }
    }

    fn text(sink: &Sink) -> String {
        String::from_utf8(std::mem::take(&mut *sink.0.lock().unwrap())).unwrap()
    }

    #[test]
    fn one_site_is_limited_and_summarized_when_its_window_ends() {
        let (sink, t0) = (Sink::default(), Instant::now());
        let inner = logger(&sink);
        let mut l = limits();
        for _ in 0..SITE_LINES_PER_SEC + 40 {
            log_at(&mut l, &inner, 1, "t", t0);
        }
        // Another site is not silenced by the first.
        log_at(&mut l, &inner, 2, "t", t0);
        let out = text(&sink);
        assert_eq!(
            out.matches("line from 1").count(),
            SITE_LINES_PER_SEC as usize
        );
        assert_eq!(out.matches("line from 2").count(), 1);
        assert!(!out.contains("suppressed"));
        assert_eq!(l.next_due, Some(t0 + limit::WINDOW));
        // Not yet over: nothing. Over: the summary, once.
        l.summarize(&inner, Some(t0 + Duration::from_millis(999)));
        assert_eq!(text(&sink), "");
        l.summarize(&inner, Some(t0 + limit::WINDOW));
        assert_eq!(
            text(&sink),
            "[WARN ] [f.rs:1] 40 similar lines suppressed (over 100 lines/s)\n"
        );
        assert_eq!(l.next_due, None);
        l.summarize(&inner, Some(t0 + limit::WINDOW * 2));
        assert_eq!(text(&sink), "");
    }

    #[test]
    fn the_next_line_after_the_window_reports_first() {
        let (sink, t0) = (Sink::default(), Instant::now());
        let inner = logger(&sink);
        let mut l = limits();
        for _ in 0..SITE_LINES_PER_SEC + 1 {
            log_at(&mut l, &inner, 1, "t", t0);
        }
        text(&sink);
        log_at(&mut l, &inner, 1, "t", t0 + limit::WINDOW);
        assert_eq!(
            text(&sink),
            "[WARN ] [f.rs:1] 1 similar lines suppressed (over 100 lines/s)\n\
             [WARN ] line from 1\n"
        );
    }

    #[test]
    fn stderr_lines_skip_the_site_limit_but_not_the_total() {
        let (sink, t0) = (Sink::default(), Instant::now());
        let inner = logger(&sink);
        let mut l = limits();
        for _ in 0..TOTAL_LINES_PER_SEC + 5 {
            log_at(&mut l, &inner, 1, STDERR_TARGET, t0);
        }
        let out = text(&sink);
        assert_eq!(out.lines().count(), TOTAL_LINES_PER_SEC as usize);
        l.summarize(&inner, None);
        assert_eq!(
            text(&sink),
            "[WARN ] 5 log lines suppressed (over 1000 lines/s in total)\n"
        );
    }
}
