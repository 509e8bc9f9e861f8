//! Command-line conventions around the option parser: the short usage shown
//! when no mode is given, mode names (`help`, `version`), and errors that
//! name an unknown option with its dashes and suggest the closest known one.
//!
//! Kept apart from the option definitions in `cli.rs` so that adding a flag
//! there needs no change here: the known options are read back from the
//! parser's own usage text.

use getopts::{Fail, Options};

/// What `mcp-relay` with no arguments prints (on stderr, exit 2).
pub const SHORT_USAGE: &str = "Usage: mcp-relay forward [OPTIONS] -- COMMAND [ARG...]
       mcp-relay forward [OPTIONS] --url URL
       mcp-relay reverse [OPTIONS] -- COMMAND [ARG...]
       mcp-relay reverse [OPTIONS] --url URL | --config FILE
       mcp-relay auth login | status | logout URL
       mcp-relay help | version
Run `mcp-relay help` for every option.";

/// The units a duration takes, for error messages.
pub const DURATION_UNITS: &str = "a number with a unit: ms, s, m or h (e.g. 250ms, 10s, 5m, 1h)";

/// What the first argument asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Mode {
    Help,
    Version,
    Forward,
    Reverse,
    /// `auth login|status|logout URL`.
    Auth,
}

/// The mode named by the first argument, or the error for a missing or
/// unknown one.
pub fn mode(first: Option<&str>) -> Result<Mode, String> {
    match first {
        None => Err(format!("no mode given\n{SHORT_USAGE}")),
        Some("-h" | "--help" | "help") => Ok(Mode::Help),
        Some("-V" | "--version" | "version") => Ok(Mode::Version),
        Some("forward") => Ok(Mode::Forward),
        Some("reverse") => Ok(Mode::Reverse),
        Some("auth") => Ok(Mode::Auth),
        Some(other) if other.starts_with('-') => Err(format!(
            "{other} given before the mode; the mode comes first \
             (`mcp-relay forward {other} ...` or `mcp-relay reverse {other} ...`)\n{SHORT_USAGE}"
        )),
        Some(other) => {
            let known = ["forward", "reverse", "auth", "help", "version"];
            let hint = closest(other, known.iter().copied())
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            Err(format!("unknown mode {other:?}{hint}\n{SHORT_USAGE}"))
        }
    }
}

/// `opts.parse(args)`, with errors that name the option as it was typed
/// (`--lissten`, `-x`) and suggest the closest known option.
pub fn parse_options(opts: &Options, args: &[String]) -> Result<getopts::Matches, String> {
    opts.parse(args).map_err(|fail| explain(opts, args, fail))
}

/// The error message for one parser failure.
fn explain(opts: &Options, args: &[String], fail: Fail) -> String {
    match fail {
        Fail::UnrecognizedOption(name) => {
            let typed = as_typed(args, &name);
            let known = long_options(opts);
            let bare = typed.trim_start_matches('-');
            let bare = bare.split_once('=').map_or(bare, |(n, _)| n);
            match closest(bare, known.iter().map(String::as_str)) {
                Some(k) => format!("unknown option {typed}; did you mean --{k}?"),
                None => format!("unknown option {typed}; see `mcp-relay help`"),
            }
        }
        Fail::ArgumentMissing(name) => format!("{} needs a value", as_typed(args, &name)),
        Fail::OptionMissing(name) => format!("{} is required", dashed(&name)),
        Fail::OptionDuplicated(name) => format!("{} given more than once", dashed(&name)),
        Fail::UnexpectedArgument(name) => format!("{} takes no value", dashed(&name)),
    }
}

/// `name` with its dashes as the user typed it: the argument that names it,
/// else `--name` (or `-n` for one letter).
fn as_typed(args: &[String], name: &str) -> String {
    args.iter()
        .take_while(|a| a.as_str() != "--")
        .find(|a| {
            let a = a.as_str();
            let long = a
                .strip_prefix("--")
                .map(|r| r.split_once('=').map_or(r, |(n, _)| n));
            long == Some(name)
                || (!a.starts_with("--") && a.starts_with('-') && a[1..].starts_with(name))
        })
        .map(|a| {
            if a.starts_with("--") {
                a.split_once('=').map_or(a.as_str(), |(n, _)| n).to_owned()
            } else {
                format!("-{name}")
            }
        })
        .unwrap_or_else(|| dashed(name))
}

fn dashed(name: &str) -> String {
    if name.chars().count() == 1 {
        format!("-{name}")
    } else {
        format!("--{name}")
    }
}

/// Every long option `opts` knows, read from its usage text.
fn long_options(opts: &Options) -> Vec<String> {
    let usage = opts.usage("");
    let mut names: Vec<String> = usage
        .lines()
        .filter_map(|l| {
            let at = l.find("--")?;
            let name: String = l[at + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect();
    names.dedup();
    names
}

/// The candidate closest to `typed` by edit distance, if close enough to be
/// a likely typo (or `typed` is a prefix of exactly one candidate).
pub fn closest<'a>(typed: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let candidates: Vec<&str> = candidates.collect();
    let mut prefixed = candidates
        .iter()
        .filter(|c| !typed.is_empty() && c.starts_with(typed));
    if let (Some(only), None) = (prefixed.next(), prefixed.next()) {
        return Some(only);
    }
    let limit = (typed.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(typed, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, by characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur.push(subst.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        let mut o = Options::new();
        o.optopt("", "listen", "address", "ADDR");
        o.optopt("", "response-timeout", "timeout", "DUR");
        o.optflag("h", "help", "help");
        o
    }

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("listen", "listen"), 0);
        assert_eq!(edit_distance("lissten", "listen"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("é", "e"), 1);
    }

    #[test]
    fn unknown_long_option_is_named_with_dashes_and_a_suggestion() {
        let e = parse_options(&opts(), &args(&["--lissten", "x"])).unwrap_err();
        assert_eq!(e, "unknown option --lissten; did you mean --listen?");
        let e = parse_options(&opts(), &args(&["--respons-timeout=3s"])).unwrap_err();
        assert_eq!(
            e,
            "unknown option --respons-timeout; did you mean --response-timeout?"
        );
        let e = parse_options(&opts(), &args(&["--zzzzzzzz"])).unwrap_err();
        assert_eq!(e, "unknown option --zzzzzzzz; see `mcp-relay help`");
    }

    #[test]
    fn unknown_short_option_keeps_its_single_dash() {
        let e = parse_options(&opts(), &args(&["-x"])).unwrap_err();
        assert!(e.starts_with("unknown option -x;"), "{e}");
    }

    #[test]
    fn missing_value_names_the_option() {
        let e = parse_options(&opts(), &args(&["--listen"])).unwrap_err();
        assert_eq!(e, "--listen needs a value");
    }

    #[test]
    fn modes() {
        assert_eq!(mode(Some("version")), Ok(Mode::Version));
        assert_eq!(mode(Some("--version")), Ok(Mode::Version));
        assert_eq!(mode(Some("help")), Ok(Mode::Help));
        let e = mode(None).unwrap_err();
        assert!(
            e.starts_with("no mode given\nUsage: mcp-relay forward"),
            "{e}"
        );
        let e = mode(Some("forwrd")).unwrap_err();
        assert!(
            e.starts_with("unknown mode \"forwrd\"; did you mean `forward`?"),
            "{e}"
        );
        let e = mode(Some("--url")).unwrap_err();
        assert!(e.starts_with("--url given before the mode"), "{e}");
    }
}
