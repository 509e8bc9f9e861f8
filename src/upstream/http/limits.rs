//! What the engine counts when it holds back; the owner turns the counts
//! into metrics and log lines (rate-limited with [`crate::io::ratelog`]).

/// How often the engine held back since the owner last asked
/// ([`super::HttpClient::take_limit_counts`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LimitCounts {
    /// A connection's read stopped at [`super::READ_BUDGET`] with more
    /// waiting: the rest is read next turn (fairness).
    pub read_budget: u64,
    /// Reading was paused (backpressure from a full client or host queue):
    /// counted once per pause, when it starts.
    pub read_paused: u64,
    /// A message (a JSON body or an SSE event's data) was not UTF-8. It is
    /// handed over as sent; the owner's check (`jsonrpc::peek`) drops it
    /// and answers `invalid_reply` to a request it names.
    pub invalid_utf8: u64,
}

impl LimitCounts {
    pub fn is_zero(&self) -> bool {
        *self == LimitCounts::default()
    }
}
