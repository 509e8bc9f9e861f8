//! Counters, gauges and a latency histogram, rendered as Prometheus text
//! (exposition format 0.0.4).
//!
//! Single-threaded: the owner updates the registry directly, no atomics.
//! Counters live here; gauges that mirror live state (pool states, waiters,
//! sessions, client connections) are not kept twice, the owner passes them to
//! [`Metrics::render`] from its own `Stats`.
//!
//! Labels are cheap: an upstream is registered once and then named by an
//! [`UpstreamId`] index; the other label values (`outcome`, `kind`, `reason`)
//! are short strings kept in small sorted vectors, allocated once per distinct
//! value. Label values must come from the relay's own vocabulary, never from
//! client input; as a backstop each family keeps at most
//! [`MAX_LABEL_VALUES`] values and counts the rest under `"other"`.

use std::cmp::Ordering;
use std::fmt::Write;

mod tools;

/// Bucket upper bounds of `mcp_relay_request_duration_seconds`, in seconds:
/// 0.5 ms (a cached answer) to 2 minutes (the default response timeout).
pub const DURATION_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// Distinct values one labelled family keeps before counting under `"other"`.
pub const MAX_LABEL_VALUES: usize = 64;
/// Where values beyond [`MAX_LABEL_VALUES`] are counted.
pub const OVERFLOW_LABEL: &str = "other";

/// A Prometheus histogram over fixed bounds.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Upper bounds (inclusive, `le`), ascending.
    bounds: &'static [f64],
    /// Observations per bucket, not cumulative; one more than `bounds`, the
    /// last for values above every bound (`+Inf`).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// `bounds` must be ascending and finite.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "ascending bounds");
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation. NaN is ignored (it would poison `_sum`).
    pub fn observe(&mut self, seconds: f64) {
        if seconds.is_nan() {
            return;
        }
        // First bucket whose bound is ≥ the value: `le` is inclusive.
        let i = self.bounds.partition_point(|&b| b < seconds);
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(1);
        }
        self.sum += seconds;
        self.count = self.count.saturating_add(1);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// `(upper bound, cumulative count)` per bucket, ending with `+Inf`
    /// (whose count equals `count()`).
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let bounds = self.bounds.iter().copied().chain([f64::INFINITY]);
        bounds.zip(&self.counts).scan(0u64, |acc, (bound, &c)| {
            *acc = acc.saturating_add(c);
            Some((bound, *acc))
        })
    }
}

/// Index of an upstream registered with [`Metrics::upstream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamId(usize);

/// One upstream's live numbers, passed to [`Metrics::render`].
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamGauges<'a> {
    pub upstream: &'a str,
    /// Processes spawned and not yet initialized.
    pub starting: u64,
    /// Ready processes nobody holds.
    pub idle: u64,
    /// Processes leased to a session.
    pub leased: u64,
    /// Processes being shut down and not yet reaped.
    pub closing: u64,
    /// Sessions waiting for a process.
    pub waiting: u64,
    /// Client sessions on this upstream.
    pub sessions: u64,
}

/// A counter family with one label, kept sorted by label value.
#[derive(Debug, Clone)]
struct Family<K> {
    entries: Vec<(K, u64)>,
}

impl<K> Default for Family<K> {
    fn default() -> Self {
        Family {
            entries: Vec::new(),
        }
    }
}

impl<K> Family<K> {
    /// Adds `n` to the value `cmp` finds, creating it with `make` unless the
    /// family already holds `cap` values; false if it was full.
    fn add(
        &mut self,
        cmp: impl Fn(&K) -> Ordering,
        make: impl FnOnce() -> K,
        n: u64,
        cap: usize,
    ) -> bool {
        match self.entries.binary_search_by(|(k, _)| cmp(k)) {
            Ok(i) => {
                if let Some((_, c)) = self.entries.get_mut(i) {
                    *c = c.saturating_add(n);
                }
                true
            }
            Err(_) if self.entries.len() >= cap => false,
            Err(i) => {
                self.entries.insert(i, (make(), n));
                true
            }
        }
    }

    fn get(&self, cmp: impl Fn(&K) -> Ordering) -> u64 {
        match self.entries.binary_search_by(|(k, _)| cmp(k)) {
            Ok(i) => self.entries.get(i).map_or(0, |(_, c)| *c),
            Err(_) => 0,
        }
    }
}

impl Family<String> {
    fn inc(&mut self, value: &str) {
        if !self.add(
            |k| k.as_str().cmp(value),
            || value.to_owned(),
            1,
            MAX_LABEL_VALUES,
        ) {
            // One slot past the cap, for the overflow bucket itself.
            self.add(
                |k| k.as_str().cmp(OVERFLOW_LABEL),
                || OVERFLOW_LABEL.to_owned(),
                1,
                usize::MAX,
            );
        }
    }

    fn count(&self, value: &str) -> u64 {
        self.get(|k| k.as_str().cmp(value))
    }
}

#[derive(Debug, Clone)]
struct UpstreamCounters {
    name: Box<str>,
    spawned: u64,
    exited: Family<String>,
    /// Idle sessions ended to give their process to a waiting one.
    reclaimed: u64,
    /// Client messages refused because a process's stdin queue was full.
    queue_full: u64,
    /// An HTTP upstream's limits hit, by limit (`read_budget`,
    /// `read_paused`, `get_hold_cap`, `get_refused`, `reinit_delayed`,
    /// `invalid_utf8`).
    http_limits: Family<String>,
    /// `tools/call`s refused by the tool filter (`metrics/tools.rs`).
    tools_denied: u64,
}

/// The relay's metrics registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    upstreams: Vec<UpstreamCounters>,
    requests: Family<String>,
    timeouts: Family<String>,
    /// Keyed by status code; u16 bounds it, so no cap.
    http_responses: Family<u16>,
    request_duration: Histogram,
    /// Times a client connection stopped being read at its input cap.
    client_input_paused: u64,
    /// Messages the relay refused to pass on, by reason (issue 11).
    messages_dropped: Family<String>,
    /// TLS listener: handshakes that failed, by reason (`error`, `eof`,
    /// `timeout`), and certificate reloads by result (`ok`, `error`).
    tls_handshake_failures: Family<String>,
    tls_reloads: Family<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::with_duration_bounds(DURATION_BOUNDS)
    }

    /// A registry whose request-duration histogram uses other bounds.
    pub fn with_duration_bounds(bounds: &'static [f64]) -> Metrics {
        Metrics {
            upstreams: Vec::new(),
            requests: Family::default(),
            timeouts: Family::default(),
            http_responses: Family::default(),
            request_duration: Histogram::new(bounds),
            client_input_paused: 0,
            messages_dropped: Family::default(),
            tls_handshake_failures: Family::default(),
            tls_reloads: Family::default(),
        }
    }

    /// Registers an upstream by name (or finds it), once at startup. Its
    /// counters render from then on, starting at zero.
    pub fn upstream(&mut self, name: &str) -> UpstreamId {
        if let Some(i) = self.upstreams.iter().position(|u| &*u.name == name) {
            return UpstreamId(i);
        }
        self.upstreams.push(UpstreamCounters {
            name: name.into(),
            spawned: 0,
            exited: Family::default(),
            reclaimed: 0,
            queue_full: 0,
            http_limits: Family::default(),
            tools_denied: 0,
        });
        UpstreamId(self.upstreams.len() - 1)
    }

    /// A process was spawned for upstream `u`.
    pub fn upstream_spawned(&mut self, u: UpstreamId) {
        if let Some(c) = self.upstreams.get_mut(u.0) {
            c.spawned = c.spawned.saturating_add(1);
        }
    }

    /// A process of upstream `u` is gone; `reason` is e.g. `"exit_0"`,
    /// `"exit_nonzero"`, `"signal"` (see [`exit_reason`]), `"closed"`,
    /// `"spawn_failed"`.
    pub fn upstream_exited(&mut self, u: UpstreamId, reason: &str) {
        if let Some(c) = self.upstreams.get_mut(u.0) {
            c.exited.inc(reason);
        }
    }

    /// An idle session of upstream `u` was ended so that its process could
    /// go to a session waiting for one (`--session-reclaim-age`).
    pub fn session_reclaimed(&mut self, u: UpstreamId) {
        if let Some(c) = self.upstreams.get_mut(u.0) {
            c.reclaimed = c.reclaimed.saturating_add(1);
        }
    }

    /// A client message for upstream `u` was refused (503, or
    /// `upstream_busy` for a request): the stdin queue of its process was
    /// full (the process is not reading).
    pub fn upstream_queue_full(&mut self, u: UpstreamId) {
        if let Some(c) = self.upstreams.get_mut(u.0) {
            c.queue_full = c.queue_full.saturating_add(1);
        }
    }

    /// A client connection reached its input cap and is not read until
    /// its buffered requests are taken (backpressure).
    pub fn client_input_paused(&mut self) {
        self.client_input_paused = self.client_input_paused.saturating_add(1);
    }

    pub fn queue_full(&self, u: UpstreamId) -> u64 {
        self.upstreams.get(u.0).map_or(0, |c| c.queue_full)
    }

    pub fn client_inputs_paused(&self) -> u64 {
        self.client_input_paused
    }

    /// A limit of HTTP upstream `u` was hit `n` times: `read_budget` (a
    /// connection had more than one turn's read budget), `read_paused` (its
    /// client was not keeping up: reading paused), `get_hold_cap` (a session
    /// held `HOLD_CAP` messages for its opening GET stream), `get_refused`
    /// (a GET answered with a status that means "no GET stream"),
    /// `invalid_utf8` (a message from it was not UTF-8: dropped).
    pub fn http_limit(&mut self, u: UpstreamId, limit: &str, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(c) = self.upstreams.get_mut(u.0) {
            // The limits are the relay's own few words: never near the cap.
            c.http_limits.inc(limit);
            if n > 1 {
                c.http_limits.add(
                    |k| k.as_str().cmp(limit),
                    || limit.to_owned(),
                    n - 1,
                    MAX_LABEL_VALUES,
                );
            }
        }
    }

    pub fn http_limits(&self, u: UpstreamId, limit: &str) -> u64 {
        self.upstreams
            .get(u.0)
            .map_or(0, |c| c.http_limits.count(limit))
    }

    /// A client request finished with `outcome` (`ok`, `error`, `timeout`,
    /// `upstream_closed`, `queue_full`, `rejected`, …).
    pub fn request(&mut self, outcome: &str) {
        self.requests.inc(outcome);
    }

    /// A client request took `seconds` from arrival to answer.
    pub fn request_duration(&mut self, seconds: f64) {
        self.request_duration.observe(seconds);
    }

    /// `request(outcome)` and `request_duration(seconds)` together.
    pub fn request_done(&mut self, outcome: &str, seconds: f64) {
        self.request(outcome);
        self.request_duration(seconds);
    }

    /// A timeout of `kind` fired (`response_timeout`, `queue_timeout`,
    /// `client_header`, `client_idle`, …).
    pub fn timeout(&mut self, kind: &str) {
        self.timeouts.inc(kind);
    }

    /// The HTTP front answered with `code`.
    pub fn http_response(&mut self, code: u16) {
        self.http_responses
            .add(|k| k.cmp(&code), || code, 1, usize::MAX);
    }

    /// A message was dropped instead of passed on; `reason` is one of the
    /// relay's own (`unattributed_notification`, `cancel_not_in_flight`,
    /// `batch_nested`, `batch_empty`, `batch_invalid_item`).
    pub fn message_dropped(&mut self, reason: &str) {
        self.messages_dropped.inc(reason);
    }

    /// A TLS handshake on the listener failed: `error` (bad record, not
    /// TLS, no common cipher, ...), `eof` (the client left), `timeout`.
    pub fn tls_handshake_failed(&mut self, reason: &str) {
        self.tls_handshake_failures.inc(reason);
    }

    /// The listener's certificate was reloaded (SIGHUP): `ok` or `error`.
    pub fn tls_reload(&mut self, result: &str) {
        self.tls_reloads.inc(result);
    }

    pub fn tls_handshake_failures(&self, reason: &str) -> u64 {
        self.tls_handshake_failures.count(reason)
    }

    pub fn tls_reloads(&self, result: &str) -> u64 {
        self.tls_reloads.count(result)
    }

    pub fn messages_dropped(&self, reason: &str) -> u64 {
        self.messages_dropped.count(reason)
    }

    pub fn spawned(&self, u: UpstreamId) -> u64 {
        self.upstreams.get(u.0).map_or(0, |c| c.spawned)
    }

    pub fn exited(&self, u: UpstreamId, reason: &str) -> u64 {
        self.upstreams
            .get(u.0)
            .map_or(0, |c| c.exited.count(reason))
    }

    pub fn reclaimed(&self, u: UpstreamId) -> u64 {
        self.upstreams.get(u.0).map_or(0, |c| c.reclaimed)
    }

    pub fn requests(&self, outcome: &str) -> u64 {
        self.requests.count(outcome)
    }

    pub fn timeouts(&self, kind: &str) -> u64 {
        self.timeouts.count(kind)
    }

    pub fn http_responses(&self, code: u16) -> u64 {
        self.http_responses.get(|k| k.cmp(&code))
    }

    pub fn request_durations(&self) -> &Histogram {
        &self.request_duration
    }

    /// Appends the Prometheus text exposition (format 0.0.4, served as
    /// `text/plain; version=0.0.4`) to `out`. Every family gets its HELP and
    /// TYPE lines even when it has no samples yet.
    pub fn render(&self, out: &mut String, gauges: &[UpstreamGauges], client_connections: u64) {
        header(
            out,
            "mcp_relay_upstream_connections",
            "gauge",
            "Upstream server processes by state.",
        );
        for g in gauges {
            for (state, n) in [
                ("starting", g.starting),
                ("idle", g.idle),
                ("leased", g.leased),
                ("closing", g.closing),
            ] {
                sample(
                    out,
                    "mcp_relay_upstream_connections",
                    &[("upstream", g.upstream), ("state", state)],
                    n,
                );
            }
        }

        header(
            out,
            "mcp_relay_upstream_spawned_total",
            "counter",
            "Upstream server processes spawned.",
        );
        for u in &self.upstreams {
            sample(
                out,
                "mcp_relay_upstream_spawned_total",
                &[("upstream", &u.name)],
                u.spawned,
            );
        }

        header(
            out,
            "mcp_relay_upstream_exited_total",
            "counter",
            "Upstream server processes gone, by reason.",
        );
        for u in &self.upstreams {
            for (reason, n) in &u.exited.entries {
                sample(
                    out,
                    "mcp_relay_upstream_exited_total",
                    &[("upstream", &u.name), ("reason", reason)],
                    *n,
                );
            }
        }

        header(
            out,
            "mcp_relay_pool_waiting",
            "gauge",
            "Sessions waiting for an upstream process.",
        );
        for g in gauges {
            sample(
                out,
                "mcp_relay_pool_waiting",
                &[("upstream", g.upstream)],
                g.waiting,
            );
        }

        header(
            out,
            "mcp_relay_sessions",
            "gauge",
            "Client sessions per upstream.",
        );
        for g in gauges {
            sample(
                out,
                "mcp_relay_sessions",
                &[("upstream", g.upstream)],
                g.sessions,
            );
        }

        header(
            out,
            "mcp_relay_sessions_reclaimed_total",
            "counter",
            "Idle sessions ended to give their process to a waiting session.",
        );
        for u in &self.upstreams {
            sample(
                out,
                "mcp_relay_sessions_reclaimed_total",
                &[("upstream", &u.name)],
                u.reclaimed,
            );
        }

        header(
            out,
            "mcp_relay_upstream_queue_full_total",
            "counter",
            "Client messages refused because the stdin queue of their process was full.",
        );
        for u in &self.upstreams {
            sample(
                out,
                "mcp_relay_upstream_queue_full_total",
                &[("upstream", &u.name)],
                u.queue_full,
            );
        }

        header(
            out,
            "mcp_relay_requests_total",
            "counter",
            "Client requests finished, by outcome.",
        );
        for (outcome, n) in &self.requests.entries {
            sample(out, "mcp_relay_requests_total", &[("outcome", outcome)], *n);
        }

        let h = &self.request_duration;
        header(
            out,
            "mcp_relay_request_duration_seconds",
            "histogram",
            "Time from a client request's arrival to its answer.",
        );
        for (bound, n) in h.cumulative() {
            out.push_str("mcp_relay_request_duration_seconds_bucket{le=\"");
            write_float(out, bound);
            let _ = writeln!(out, "\"}} {n}");
        }
        out.push_str("mcp_relay_request_duration_seconds_sum ");
        write_float(out, h.sum());
        out.push('\n');
        let _ = writeln!(
            out,
            "mcp_relay_request_duration_seconds_count {}",
            h.count()
        );

        header(
            out,
            "mcp_relay_timeouts_total",
            "counter",
            "Timeouts fired, by kind.",
        );
        for (kind, n) in &self.timeouts.entries {
            sample(out, "mcp_relay_timeouts_total", &[("kind", kind)], *n);
        }

        header(
            out,
            "mcp_relay_messages_dropped_total",
            "counter",
            "Messages dropped instead of passed on, by reason.",
        );
        for (reason, n) in &self.messages_dropped.entries {
            sample(
                out,
                "mcp_relay_messages_dropped_total",
                &[("reason", reason)],
                *n,
            );
        }

        header(
            out,
            "mcp_relay_http_responses_total",
            "counter",
            "HTTP responses sent, by status code.",
        );
        for (code, n) in &self.http_responses.entries {
            let _ = writeln!(out, "mcp_relay_http_responses_total{{code=\"{code}\"}} {n}");
        }

        header(
            out,
            "mcp_relay_client_connections",
            "gauge",
            "Open client connections.",
        );
        let _ = writeln!(out, "mcp_relay_client_connections {client_connections}");

        header(
            out,
            "mcp_relay_client_input_paused_total",
            "counter",
            "Times a client connection reached its input cap and was not read until its requests were taken.",
        );
        let _ = writeln!(
            out,
            "mcp_relay_client_input_paused_total {}",
            self.client_input_paused
        );

        header(
            out,
            "mcp_relay_http_upstream_limits_total",
            "counter",
            "Limits of an HTTP upstream hit (read budget, read paused for a slow client, GET hold cap, GET refused, message not UTF-8).",
        );
        for u in &self.upstreams {
            for (limit, n) in &u.http_limits.entries {
                sample(
                    out,
                    "mcp_relay_http_upstream_limits_total",
                    &[("upstream", &u.name), ("limit", limit)],
                    *n,
                );
            }
        }
        header(
            out,
            "mcp_relay_tls_handshake_failures_total",
            "counter",
            "TLS handshakes on the client listener that failed, by reason (error, eof, timeout).",
        );
        for (reason, n) in &self.tls_handshake_failures.entries {
            sample(
                out,
                "mcp_relay_tls_handshake_failures_total",
                &[("reason", reason)],
                *n,
            );
        }

        header(
            out,
            "mcp_relay_tls_reloads_total",
            "counter",
            "Reloads of the listener's TLS certificate (SIGHUP), by result (ok, error).",
        );
        for (result, n) in &self.tls_reloads.entries {
            sample(
                out,
                "mcp_relay_tls_reloads_total",
                &[("result", result)],
                *n,
            );
        }
        self.render_tools(out);
    }
}

/// The `reason` label for a process that exited: `exit_0`, `exit_nonzero`,
/// or `signal` (killed by one). Neither known: `closed`.
pub fn exit_reason(code: Option<i32>, signal: Option<i32>) -> &'static str {
    match (code, signal) {
        (Some(0), _) => "exit_0",
        (Some(_), _) => "exit_nonzero",
        (None, Some(_)) => "signal",
        (None, None) => "closed",
    }
}

/// `# HELP` and `# TYPE` lines. Help texts are constants without backslashes
/// or newlines, so they need no escaping.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_label_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Text format 0.0.4: in label values, `\` → `\\`, `"` → `\"`, newline → `\n`.
fn escape_label_value(out: &mut String, v: &str) {
    if !v.contains(['\\', '"', '\n']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Go's float syntax as Prometheus parses it: `+Inf`, `-Inf`, `NaN`, else
/// Rust's shortest round-trip decimal (never exponent notation).
fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests;
