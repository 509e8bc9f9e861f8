//! Compares two benchmark-suite results files.
//!
//! ```sh
//! cargo run --release --example bench_compare -- A.json B.json
//! ```
//!
//! Two runs rarely share a machine or its load, so absolute figures (µs,
//! req/s, CPU ms, KiB) are not compared. Each results file (written by
//! `cargo bench --bench suite`) has, per round, every relay configuration
//! and the direct path it is compared with, measured right before it; the
//! comparison takes each relay's p50 and throughput as ratios to that direct
//! path, round by round, and compares the medians of A and B. A ratio that
//! moved the bad way (p50 ratio up, throughput ratio down) by more than the
//! spread between rounds seen in either file (max − min over median, at least
//! 2%) is flagged `REGRESSION`; the good way, `better`. With one round in
//! both files a ratio is shown but not judged.
//!
//! Exit status: 0 whatever the figures say (noise must not fail a build);
//! 2 when a file cannot be read or parsed, or on bad usage.
//!
//! The suite bench includes this file as a module to print its comparison
//! with `benches/baseline.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

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

/// The smallest tolerance, in percent: three rounds can agree by chance
/// more closely than runs ever do.
pub const MIN_TOLERANCE_PCT: f64 = 2.0;

/// A relay's ratio to its direct baseline over the rounds of one run (each
/// round measures the direct path right before the relays compared with it).
#[derive(Debug, Clone)]
pub struct Ratio {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub rounds: usize,
    pub higher_is_better: bool,
}

impl Ratio {
    fn of(mut values: Vec<f64>, higher_is_better: bool) -> Option<Ratio> {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Ratio {
            median,
            min: values[0],
            max: values[n - 1],
            rounds: n,
            higher_is_better,
        })
    }

    /// (max − min) / median over the rounds, in percent; none from one round.
    pub fn spread_pct(&self) -> Option<f64> {
        (self.rounds >= 2 && self.median != 0.0)
            .then(|| (self.max - self.min) / self.median.abs() * 100.0)
    }
}

/// Every relay configuration's p50 and throughput as ratios to its direct
/// baseline, round by round (`{id}.p50_over_direct`,
/// `{id}.throughput_over_direct`). A file without per-round data falls
/// back to its `x` figures, as one round.
pub fn ratios(doc: &Value) -> Result<BTreeMap<String, Ratio>, String> {
    let mut out = BTreeMap::new();
    let rounds = doc.get("rounds").and_then(Value::as_array);
    let configs = doc.get("configurations").and_then(Value::as_array);
    if let (Some(rounds), Some(configs)) = (rounds, configs) {
        let stat = |round: &Value, key: &str| round.pointer(&format!("/stats/{key}"))?.as_f64();
        // (config, round number) → that round's entry.
        let mut by: BTreeMap<(&str, u64), &Value> = BTreeMap::new();
        for r in rounds {
            if let (Some(c), Some(n)) = (
                r.get("config").and_then(Value::as_str),
                r.get("round").and_then(Value::as_u64),
            ) {
                by.insert((c, n), r);
            }
        }
        for c in configs {
            let (Some(id), Some(base)) = (
                c.get("id").and_then(Value::as_str),
                c.get("baseline").and_then(Value::as_str),
            ) else {
                continue;
            };
            let (mut p50, mut thr) = (Vec::new(), Vec::new());
            for (&(cid, n), r) in &by {
                if cid != id {
                    continue;
                }
                let Some(d) = by.get(&(base, n)) else {
                    continue;
                };
                if let (Some(x), Some(y)) = (stat(r, "p50_us"), stat(d, "p50_us"))
                    && y > 0.0
                {
                    p50.push(x / y);
                }
                if let (Some(x), Some(y)) = (stat(r, "throughput_rps"), stat(d, "throughput_rps"))
                    && y > 0.0
                {
                    thr.push(x / y);
                }
            }
            if let Some(r) = Ratio::of(p50, false) {
                out.insert(format!("{id}.p50_over_direct"), r);
            }
            if let Some(r) = Ratio::of(thr, true) {
                out.insert(format!("{id}.throughput_over_direct"), r);
            }
        }
    }
    if out.is_empty() {
        for (name, f) in figures(doc)? {
            if f.unit == "x"
                && let Some(r) = Ratio::of(vec![f.value], f.higher_is_better)
            {
                out.insert(name, r);
            }
        }
    }
    Ok(out)
}

/// The comparison as text, and the number of regressions.
///
/// Only ratios to the same run's direct baseline are compared: absolute
/// figures (µs, req/s, CPU ms, KiB) move with the machine and its load, and
/// comparing them across runs flags noise. A ratio is flagged when it moved
/// the bad way by more than the spread between rounds seen in either run
/// (at least [`MIN_TOLERANCE_PCT`]); with one round in both runs there is
/// no spread to judge by, and it is reported, not flagged.
pub fn compare(
    a: &Value,
    b: &Value,
    a_name: &str,
    b_name: &str,
) -> Result<(String, usize), String> {
    let ra = ratios(a).map_err(|e| format!("{a_name}: {e}"))?;
    let rb = ratios(b).map_err(|e| format!("{b_name}: {e}"))?;
    let mut out = String::new();
    let _ = writeln!(out, "A: {a_name}\n   {}", describe(a));
    let _ = writeln!(out, "B: {b_name}\n   {}", describe(b));
    let _ = writeln!(
        out,
        "each relay's p50 and throughput as a ratio to the direct path measured in the same \
         round (median over rounds);\nchange = (B - A) / |A|; flagged when worse by more than \
         the spread between rounds (max - min over median, larger of A and B, at least \
         {MIN_TOLERANCE_PCT}%)\n"
    );
    let _ = writeln!(
        out,
        "{:<48} {:>9} {:>9} {:>9} {:>9}",
        "ratio to direct", "A", "B", "change", "spread"
    );
    let _ = writeln!(out, "{}", "-".repeat(100));
    let (mut regressions, mut better, mut common, mut unjudged) = (0, 0, 0, 0);
    for (name, x) in &ra {
        let Some(y) = rb.get(name) else {
            continue;
        };
        common += 1;
        if x.median == 0.0 {
            continue;
        }
        let pct = (y.median - x.median) / x.median.abs() * 100.0;
        let worse = if y.higher_is_better { -pct } else { pct };
        let tolerance = match (x.spread_pct(), y.spread_pct()) {
            (None, None) => None,
            (p, q) => Some(
                p.unwrap_or(0.0)
                    .max(q.unwrap_or(0.0))
                    .max(MIN_TOLERANCE_PCT),
            ),
        };
        let flag = match tolerance {
            None => {
                unjudged += 1;
                "  (one round: not judged)"
            }
            Some(t) if worse > t => {
                regressions += 1;
                "  REGRESSION"
            }
            Some(t) if -worse > t => {
                better += 1;
                "  better"
            }
            Some(_) => "",
        };
        let _ = writeln!(
            out,
            "{name:<48} {:>9.3} {:>9.3} {:>8.1}% {:>9}{flag}",
            x.median,
            y.median,
            pct,
            tolerance.map_or("-".to_string(), |t| format!("±{t:.1}%")),
        );
    }
    let only_a: Vec<&String> = ra.keys().filter(|n| !rb.contains_key(*n)).collect();
    let only_b: Vec<&String> = rb.keys().filter(|n| !ra.contains_key(*n)).collect();
    if !only_a.is_empty() {
        let _ = writeln!(out, "\nonly in A: {}", join(&only_a));
    }
    if !only_b.is_empty() {
        let _ = writeln!(out, "\nonly in B: {}", join(&only_b));
    }
    let _ = writeln!(
        out,
        "\n{common} ratios compared: {regressions} REGRESSION (worse by more than the spread \
         between rounds), {better} better, {unjudged} not judged (one round in both runs); \
         absolute figures depend on the machine and are not compared (see the results files); \
         informational only, never a failure"
    );
    Ok((out, regressions))
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
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
