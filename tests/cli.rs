//! The command line as a user meets it (issue 15): help and version on
//! stdout when asked for, a short usage and a non-zero exit with no
//! arguments, unknown options named with their dashes and the closest known
//! one suggested, and duration errors that list the accepted units.
//!
//! Each case runs the real binary with a bounded wait.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::RELAY;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `mcp-relay ARGS` with stdin closed; killed if it runs over 5 s.
fn run(args: &[&str]) -> Run {
    let mut child = Command::new(RELAY)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mcp-relay");
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mcp-relay {args:?} still running after 5s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn help_goes_to_stdout_with_exit_0() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["forward", "--help"],
        &["reverse", "--help"],
    ] {
        let r = run(args);
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
        assert!(
            r.stdout.contains("Usage: mcp-relay"),
            "{args:?} stdout: {:?}",
            r.stdout
        );
        assert!(
            r.stdout.contains("--log-level"),
            "{args:?} stdout: {:?}",
            r.stdout
        );
        assert_eq!(r.stderr, "", "{args:?}: help also on stderr");
    }
}

#[test]
fn version_goes_to_stdout_with_exit_0() {
    let expected = format!("mcp-relay {}\n", env!("CARGO_PKG_VERSION"));
    for args in [&["--version"][..], &["-V"], &["version"]] {
        let r = run(args);
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
        assert_eq!(r.stdout, expected, "{args:?}");
        assert_eq!(r.stderr, "", "{args:?}");
    }
}

#[test]
fn no_arguments_is_an_error_with_a_short_usage() {
    let r = run(&[]);
    assert_eq!(r.code, Some(2), "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.starts_with("mcp-relay: no mode given\n"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("Usage: mcp-relay forward"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("mcp-relay help"), "{}", r.stderr);
    // Short: not the whole option list.
    assert!(r.stderr.lines().count() <= 10, "{}", r.stderr);
    assert!(!r.stderr.contains("--max-message-size"), "{}", r.stderr);
}

#[test]
fn unknown_option_is_named_with_dashes_and_the_closest_suggested() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["reverse", "--lissten", "127.0.0.1:0", "--", "x"],
            "mcp-relay: unknown option --lissten; did you mean --listen?\n",
        ),
        (
            &["forward", "--respone-timeout=3s", "--", "x"],
            "mcp-relay: unknown option --respone-timeout; did you mean --response-timeout?\n",
        ),
        (
            &["forward", "--restart-max", "3s", "--", "x"],
            "mcp-relay: unknown option --restart-max; did you mean --restart-max-delay?\n",
        ),
        (
            &["forward", "--qqqqqqqqqqqq", "--", "x"],
            "mcp-relay: unknown option --qqqqqqqqqqqq; see `mcp-relay help`\n",
        ),
        (
            &["forwrd", "--", "x"],
            "mcp-relay: unknown mode \"forwrd\"; did you mean `forward`?\n",
        ),
    ];
    for (args, first_line) in cases {
        let r = run(args);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        assert_eq!(r.stdout, "", "{args:?}");
        assert!(
            r.stderr.starts_with(first_line),
            "{args:?}: expected {first_line:?}, got {:?}",
            r.stderr
        );
    }
}

#[test]
fn a_bad_duration_lists_the_accepted_units() {
    let r = run(&["forward", "--response-timeout", "abc", "--", "x"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert_eq!(
        r.stderr,
        "mcp-relay: --response-timeout: bad duration \"abc\": \
         a number with a unit: ms, s, m or h (e.g. 250ms, 10s, 5m, 1h)\n"
    );
    let r = run(&["reverse", "--queue-timeout", "5 minutes", "--", "x"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("bad duration \"5 minutes\": a number with a unit: ms, s, m or h"),
        "{}",
        r.stderr
    );
}
