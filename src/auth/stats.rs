//! Counters of the protected resource, rendered with the relay's metrics
//! (`mcp_relay_oauth_*`). Label values are the relay's own vocabulary.

use std::fmt::Write;

use super::introspect::Answer;
use super::jwt::Reason;

#[derive(Debug, Default)]
pub struct Stats {
    pub accepted: u64,
    pub insufficient_scope: u64,
    /// 503 while no key could decide.
    pub unavailable: u64,
    /// (reason label, count), in first-seen order; at most one per `Reason`.
    rejected: Vec<(&'static str, u64)>,
    /// (document, outcome, count).
    fetches: Vec<(&'static str, &'static str, u64)>,
}

impl Stats {
    /// One request's answer (503s are counted in `unavailable` directly).
    pub fn count(&mut self, a: &Answer) {
        match a {
            Answer::Valid { .. } => self.accepted += 1,
            Answer::InsufficientScope => self.insufficient_scope += 1,
            Answer::Invalid(r) => self.reject(*r),
        }
    }

    fn reject(&mut self, r: Reason) {
        let l = r.label();
        match self.rejected.iter_mut().find(|(k, _)| *k == l) {
            Some((_, n)) => *n += 1,
            None => self.rejected.push((l, 1)),
        }
    }

    pub fn rejected(&self, r: Reason) -> u64 {
        self.rejected
            .iter()
            .find(|(k, _)| *k == r.label())
            .map_or(0, |(_, n)| *n)
    }

    /// A metadata or JWKS fetch ended: `outcome` is `ok` or `error`.
    pub fn fetched(&mut self, doc: &'static str, outcome: &'static str) {
        match self
            .fetches
            .iter_mut()
            .find(|(d, o, _)| *d == doc && *o == outcome)
        {
            Some((_, _, n)) => *n += 1,
            None => self.fetches.push((doc, outcome, 1)),
        }
    }

    /// `keys`: keys loaded now; `refetches`: unknown-`kid` refetches.
    pub fn render(&self, out: &mut String, keys: usize, refetches: u64) {
        let _ = write!(
            out,
            "# HELP mcp_relay_oauth_requests_total Requests by OAuth decision.\n\
             # TYPE mcp_relay_oauth_requests_total counter\n\
             mcp_relay_oauth_requests_total{{decision=\"accepted\"}} {}\n\
             mcp_relay_oauth_requests_total{{decision=\"insufficient_scope\"}} {}\n\
             mcp_relay_oauth_requests_total{{decision=\"unavailable\"}} {}\n",
            self.accepted, self.insufficient_scope, self.unavailable
        );
        let _ = writeln!(
            out,
            "# HELP mcp_relay_oauth_rejected_total Bearer tokens refused with 401, by reason.\n\
             # TYPE mcp_relay_oauth_rejected_total counter"
        );
        for (r, n) in &self.rejected {
            let _ = writeln!(out, "mcp_relay_oauth_rejected_total{{reason=\"{r}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP mcp_relay_oauth_fetches_total Authorization server metadata and JWKS fetches.\n\
             # TYPE mcp_relay_oauth_fetches_total counter"
        );
        for (d, o, n) in &self.fetches {
            let _ = writeln!(
                out,
                "mcp_relay_oauth_fetches_total{{document=\"{d}\",outcome=\"{o}\"}} {n}"
            );
        }
        let _ = write!(
            out,
            "# HELP mcp_relay_oauth_jwks_refetches_total JWKS refetches caused by an unknown kid.\n\
             # TYPE mcp_relay_oauth_jwks_refetches_total counter\n\
             mcp_relay_oauth_jwks_refetches_total {refetches}\n\
             # HELP mcp_relay_oauth_keys Verification keys loaded.\n\
             # TYPE mcp_relay_oauth_keys gauge\n\
             mcp_relay_oauth_keys {keys}\n"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let mut s = Stats::default();
        s.count(&Answer::Invalid(Reason::Expired));
        s.count(&Answer::Invalid(Reason::Expired));
        s.unavailable += 1;
        s.fetched("jwks", "ok");
        assert_eq!(s.rejected(Reason::Expired), 2);
        let mut out = String::new();
        s.render(&mut out, 2, 1);
        assert!(out.contains("mcp_relay_oauth_rejected_total{reason=\"expired\"} 2\n"));
        assert!(out.contains("mcp_relay_oauth_requests_total{decision=\"unavailable\"} 1\n"));
        assert!(
            out.contains("mcp_relay_oauth_fetches_total{document=\"jwks\",outcome=\"ok\"} 1\n")
        );
        assert!(out.contains("mcp_relay_oauth_keys 2\n"));
    }
}
