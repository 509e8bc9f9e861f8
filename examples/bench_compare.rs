//! Compares two benchmark-suite results files.
//!
//! ```sh
//! cargo run --release --example bench_compare -- A.json B.json
//! ```
//!
//! Reads the `figures` map of each file (written by `cargo bench --bench
//! suite`: name → `{value, unit, higher_is_better}`) and prints, for every
//! figure, A, B and the change from A to B in percent. A figure that moved
//! more than 10% in its bad direction (up for latency, memory, CPU, size;
//! down for throughput and throughput ratios) is flagged `REGRESSION`;
//! more than 10% the good way, `better`. Figures present in only one file are
//! listed too.
//!
//! Exit status: 0 whatever the figures say (noise must not fail a build);
//! 2 when a file cannot be read or parsed, or on bad usage.
//!
//! The suite bench includes this file as a module to print its comparison
//! with `bench-results/baseline.json`.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

/// A figure is flagged when it moved more than this, in percent.
pub const THRESHOLD_PCT: f64 = 10.0;

pub struct Figure {
    pub value: f64,
    pub unit: String,
    pub higher_is_better: bool,
}

/// The `figures` map of a results document, sorted by name.
pub fn figures(doc: &Value) -> Result<Vec<(String, Figure)>, String> {
    let map = doc
        .get("figures")
        .and_then(Value::as_object)
        .ok_or("no \"figures\" object (not a suite results file?)")?;
    let mut out = Vec::with_capacity(map.len());
    for (name, f) in map {
        let value = f
            .get("value")
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("figure {name}: no numeric \"value\""))?;
        let higher_is_better = f
            .get("higher_is_better")
            .and_then(Value::as_bool)
            .ok_or_else(|| format!("figure {name}: no boolean \"higher_is_better\""))?;
        let unit = f
            .get("unit")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        out.push((
            name.clone(),
            Figure {
                value,
                unit,
                higher_is_better,
            },
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

pub fn load(path: &Path) -> Result<Value, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))
}

fn describe(doc: &Value) -> String {
    let s = |k: &str| {
        doc.get(k)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    let dirty = doc.get("dirty").and_then(Value::as_bool) == Some(true);
    let quick = doc.get("quick").and_then(Value::as_bool) == Some(true);
    let secs = doc
        .pointer("/settings/seconds_per_configuration")
        .and_then(Value::as_f64);
    let rounds = doc.pointer("/settings/rounds").and_then(Value::as_u64);
    format!(
        "{} commit {}{}{}, {} s x {} round(s), load {}",
        s("date"),
        s("commit"),
        if dirty { "-dirty" } else { "" },
        if quick { " [quick]" } else { "" },
        secs.map_or("?".into(), |v| v.to_string()),
        rounds.map_or("?".into(), |v| v.to_string()),
        doc.pointer("/machine/loadavg_before")
            .and_then(Value::as_str)
            .unwrap_or("?"),
    )
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The comparison as text, and the number of regressions.
pub fn compare(
    a: &Value,
    b: &Value,
    a_name: &str,
    b_name: &str,
) -> Result<(String, usize), String> {
    let fa = figures(a).map_err(|e| format!("{a_name}: {e}"))?;
    let fb = figures(b).map_err(|e| format!("{b_name}: {e}"))?;
    let mut out = String::new();
    let _ = writeln!(out, "A: {a_name}\n   {}", describe(a));
    let _ = writeln!(out, "B: {b_name}\n   {}", describe(b));
    let _ = writeln!(
        out,
        "change = (B - A) / |A|; flagged when worse by more than {THRESHOLD_PCT}% \
         (direction per figure)\n"
    );
    let _ = writeln!(
        out,
        "{:<48} {:>6} {:>12} {:>12} {:>9}",
        "figure", "unit", "A", "B", "change"
    );
    let _ = writeln!(out, "{}", "-".repeat(100));
    let (mut regressions, mut better, mut common) = (0, 0, 0);
    let mut only_a = Vec::new();
    let mut names: Vec<&String> = fa.iter().map(|(n, _)| n).collect();
    for (n, _) in &fb {
        if !fa.iter().any(|(m, _)| m == n) {
            names.push(n);
        }
    }
    names.sort();
    let mut only_b = Vec::new();
    for name in names {
        let x = fa.iter().find(|(n, _)| n == name).map(|(_, f)| f);
        let y = fb.iter().find(|(n, _)| n == name).map(|(_, f)| f);
        match (x, y) {
            (Some(x), Some(y)) => {
                common += 1;
                let (change, flag) = if x.value == 0.0 {
                    ("n/a".to_string(), "")
                } else {
                    let pct = (y.value - x.value) / x.value.abs() * 100.0;
                    let worse = if y.higher_is_better { -pct } else { pct };
                    let flag = if worse > THRESHOLD_PCT {
                        regressions += 1;
                        "  REGRESSION"
                    } else if worse < -THRESHOLD_PCT {
                        better += 1;
                        "  better"
                    } else {
                        ""
                    };
                    (format!("{pct:+.1}%"), flag)
                };
                let _ = writeln!(
                    out,
                    "{name:<48} {:>6} {:>12} {:>12} {change:>9}{flag}",
                    y.unit,
                    fmt_value(x.value),
                    fmt_value(y.value)
                );
            }
            (Some(_), None) => only_a.push(name.clone()),
            (None, Some(_)) => only_b.push(name.clone()),
            (None, None) => {}
        }
    }
    if !only_a.is_empty() {
        let _ = writeln!(out, "\nonly in A: {}", only_a.join(", "));
    }
    if !only_b.is_empty() {
        let _ = writeln!(out, "\nonly in B: {}", only_b.join(", "));
    }
    let _ = writeln!(
        out,
        "\n{common} figures compared: {regressions} REGRESSION (worse by > {THRESHOLD_PCT}%), \
         {better} better by > {THRESHOLD_PCT}%; informational only, never a failure"
    );
    Ok((out, regressions))
}

pub fn compare_files(a: &Path, b: &Path) -> Result<String, String> {
    let (da, db) = (load(a)?, load(b)?);
    compare(&da, &db, &a.display().to_string(), &b.display().to_string()).map(|(text, _)| text)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [a, b] = args.as_slice() else {
        eprintln!("usage: bench_compare A.json B.json");
        std::process::exit(2);
    };
    match compare_files(Path::new(a), Path::new(b)) {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("bench_compare: {e}");
            std::process::exit(2);
        }
    }
}
