//! `--allow-tool GLOB` / `--deny-tool GLOB` (repeatable, both modes): the
//! upstream's tool filter (`mcp::tools_filter`). Kept apart from `cli.rs`
//! so the flags are defined and read in one place.

use getopts::{Matches, Options};

use crate::mcp::tools_filter::ToolFilter;

pub(super) fn add_options(o: &mut Options) {
    o.optmulti(
        "",
        "allow-tool",
        "only tools whose name matches a GLOB are listed and callable (repeatable; default: all)",
        "GLOB",
    );
    o.optmulti(
        "",
        "deny-tool",
        "tools matching GLOB are hidden from tools/list and their calls refused (repeatable; wins over --allow-tool)",
        "GLOB",
    );
}

pub(super) fn filter(m: &Matches) -> Result<ToolFilter, String> {
    ToolFilter::new(&m.opt_strs("allow-tool"), &m.opt_strs("deny-tool"))
        .map_err(|e| format!("--allow-tool/--deny-tool: {e}"))
}

#[cfg(test)]
mod tests {
    use crate::cli::{Command, parse};

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn both_modes_take_repeatable_globs() {
        let cli = parse(&args(&[
            "forward",
            "--deny-tool",
            "secret_*",
            "--deny-tool=rm",
            "--",
            "srv",
        ]))
        .unwrap();
        let Command::Forward(c) = cli.command else {
            panic!("not forward")
        };
        assert!(c.tools.is_active());
        assert!(!c.tools.allows("rm") && !c.tools.allows("secret_x") && c.tools.allows("echo"));
        let cli = parse(&args(&[
            "reverse",
            "--allow-tool",
            "echo",
            "--url",
            "http://h/",
        ]))
        .unwrap();
        let Command::Reverse(c) = cli.command else {
            panic!("not reverse")
        };
        assert!(c.tools.allows("echo") && !c.tools.allows("other"));
        let cli = parse(&args(&["reverse", "--", "srv"])).unwrap();
        let Command::Reverse(c) = cli.command else {
            panic!("not reverse")
        };
        assert!(!c.tools.is_active(), "no flag, no filter");
        let e = parse(&args(&["forward", "--allow-tool", "[x", "--", "s"])).unwrap_err();
        assert!(e.starts_with("--allow-tool/--deny-tool: "), "{e}");
    }
}
