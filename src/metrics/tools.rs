//! The tool filter's counter (`mcp_relay_tool_calls_denied_total`), kept
//! apart from the registry's other families.

use super::{Metrics, UpstreamId, header, sample};

impl Metrics {
    /// A `tools/call` for upstream `u` was refused by its tool filter.
    pub fn tool_call_denied(&mut self, u: UpstreamId) {
        if let Some(c) = self.upstreams.get_mut(u.0) {
            c.tools_denied = c.tools_denied.saturating_add(1);
        }
    }

    pub fn tool_calls_denied(&self, u: UpstreamId) -> u64 {
        self.upstreams.get(u.0).map_or(0, |c| c.tools_denied)
    }

    pub(super) fn render_tools(&self, out: &mut String) {
        header(
            out,
            "mcp_relay_tool_calls_denied_total",
            "counter",
            "tools/call requests refused by the upstream's tool filter (never sent to it).",
        );
        for u in &self.upstreams {
            sample(
                out,
                "mcp_relay_tool_calls_denied_total",
                &[("upstream", &u.name)],
                u.tools_denied,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_calls_are_counted_per_upstream() {
        let mut m = Metrics::new();
        let a = m.upstream("a");
        let b = m.upstream("b");
        m.tool_call_denied(b);
        m.tool_call_denied(b);
        assert_eq!((m.tool_calls_denied(a), m.tool_calls_denied(b)), (0, 2));
        let mut out = String::new();
        m.render(&mut out, &[], 0);
        assert!(
            out.contains(
                "# TYPE mcp_relay_tool_calls_denied_total counter\n\
                 mcp_relay_tool_calls_denied_total{upstream=\"a\"} 0\n\
                 mcp_relay_tool_calls_denied_total{upstream=\"b\"} 2\n"
            ),
            "{out}"
        );
    }
}
