//! The benchmark comparison (`examples/bench_compare.rs`, also printed by
//! `cargo bench --bench suite`), issue 15: two runs on different machines or
//! under different load differ in every absolute figure, so it compares each
//! relay's ratio to the direct baseline measured in the same run, and flags
//! only a change larger than the spread seen between repeated rounds.

#[path = "../examples/bench_compare.rs"]
#[allow(dead_code)]
mod bench_compare;

use serde_json::{Value, json};

/// A results document with `rounds` rounds of one relay config
/// (`forward.stdio.w1`) and its direct baseline: per round, the direct's
/// p50 and throughput, and the relay's as `ratio` (p50) and `1 / ratio`
/// (throughput) of them, each round's ratio jittered by `jitter[i]`.
fn run(machine_speed: f64, p50_ratio: f64, jitter: &[f64]) -> Value {
    let mut rounds = Vec::new();
    let mut fig = serde_json::Map::new();
    let (mut d_p50, mut r_p50, mut d_thr, mut r_thr) = (vec![], vec![], vec![], vec![]);
    for (i, j) in jitter.iter().enumerate() {
        let direct_p50 = 10.0 / machine_speed * (1.0 + 0.3 * i as f64);
        let direct_thr = 80_000.0 * machine_speed / (1.0 + 0.3 * i as f64);
        let ratio = p50_ratio * (1.0 + j);
        let relay_p50 = direct_p50 * ratio;
        let relay_thr = direct_thr / ratio;
        rounds.push(
            json!({"round": i + 1, "config": "direct.stdio.w1", "relay": null,
            "stats": {"p50_us": direct_p50, "p95_us": direct_p50 * 2.0,
                      "throughput_rps": direct_thr}}),
        );
        rounds.push(
            json!({"round": i + 1, "config": "forward.stdio.w1", "relay": {},
            "stats": {"p50_us": relay_p50, "p95_us": relay_p50 * 2.0,
                      "throughput_rps": relay_thr}}),
        );
        d_p50.push(direct_p50);
        r_p50.push(relay_p50);
        d_thr.push(direct_thr);
        r_thr.push(relay_thr);
    }
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut add = |name: &str, value: f64, unit: &str, hib: bool| {
        fig.insert(
            name.into(),
            json!({"value": value, "unit": unit, "higher_is_better": hib}),
        );
    };
    add("direct.stdio.w1.p50_us", med(&d_p50), "µs", false);
    add("direct.stdio.w1.throughput_rps", med(&d_thr), "req/s", true);
    add("forward.stdio.w1.p50_us", med(&r_p50), "µs", false);
    add(
        "forward.stdio.w1.throughput_rps",
        med(&r_thr),
        "req/s",
        true,
    );
    add(
        "forward.stdio.w1.p50_over_direct",
        med(&r_p50) / med(&d_p50),
        "x",
        false,
    );
    add(
        "forward.stdio.w1.throughput_over_direct",
        med(&r_thr) / med(&d_thr),
        "x",
        true,
    );
    add(
        "forward.stdio.w1.cpu_ms_per_1k",
        9.0 / machine_speed,
        "ms",
        false,
    );
    json!({
        "date": "2026-12-06", "commit": "abc", "quick": false,
        "settings": {"rounds": jitter.len(), "seconds_per_configuration": 3.0},
        "configurations": [
            {"id": "direct.stdio.w1", "baseline": null},
            {"id": "forward.stdio.w1", "baseline": "direct.stdio.w1"},
        ],
        "rounds": rounds,
        "figures": fig,
    })
}

fn compare(a: &Value, b: &Value) -> (String, usize) {
    bench_compare::compare(a, b, "A", "B").expect("compare")
}

#[test]
fn a_slower_machine_is_not_a_regression() {
    // Same relay overhead (2x direct) with ±4% round-to-round wobble; B's
    // machine is 40% slower in every absolute figure.
    let a = run(1.0, 2.0, &[0.0, 0.04, -0.04]);
    let b = run(0.6, 2.0, &[0.02, -0.03, 0.01]);
    let (text, regressions) = compare(&a, &b);
    assert_eq!(regressions, 0, "{text}");
    assert!(!text.contains("REGRESSION\n"), "{text}");
}

#[test]
fn a_ratio_change_within_the_spread_of_rounds_is_not_flagged() {
    let a = run(1.0, 2.0, &[0.0, 0.08, -0.08]);
    let b = run(1.0, 2.24, &[0.0, 0.01, -0.01]);
    let (text, regressions) = compare(&a, &b);
    assert_eq!(
        regressions, 0,
        "12% is inside the 16% spread of A's rounds:\n{text}"
    );
}

#[test]
fn a_ratio_change_beyond_the_spread_is_flagged() {
    // The relay got 50% slower relative to direct; rounds agree within 2%.
    let a = run(1.0, 2.0, &[0.0, 0.01, -0.01]);
    let b = run(0.7, 3.0, &[0.0, 0.01, -0.01]);
    let (text, regressions) = compare(&a, &b);
    assert_eq!(
        regressions, 2,
        "p50 and throughput ratios both regressed:\n{text}"
    );
    for name in [
        "forward.stdio.w1.p50_over_direct",
        "forward.stdio.w1.throughput_over_direct",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"));
        assert!(line.ends_with("REGRESSION"), "{line}");
    }
}
