//! `/metrics` read the way Prometheus reads it: the text is handed to a real
//! Prometheus text-format parser (`prometheus_client.parser` from the
//! provisioned virtualenv, see [`super::interop::deps`]), and tests look up
//! the samples it returns. A scrape the parser rejects fails the test.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Runs the parser on stdin; prints one JSON array of families.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": fam.name, "type": fam.type, "help": fam.documentation,
                "samples": [{"name": s.name, "labels": s.labels, "value": repr(s.value)}
                            for s in fam.samples]})
json.dump(out, sys.stdout)
"#;

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone)]
pub struct Family {
    /// As the parser names it: a counter's family drops `_total`.
    pub name: String,
    pub kind: String,
    pub help: String,
    pub samples: Vec<Sample>,
}

/// One scrape: its text and what the parser made of it.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    pub families: Vec<Family>,
}

impl Scrape {
    /// Parses `text`; panics (with the parser's complaint and the text) if
    /// the parser rejects it.
    pub fn parse(text: String) -> Scrape {
        match Scrape::try_parse(text) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    pub fn try_parse(text: String) -> Result<Scrape, String> {
        let python = &super::interop::deps().python;
        let mut child = Command::new(python)
            .args(["-c", PARSER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = text.clone();
        // Written on a thread so a large scrape cannot deadlock the pipes.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let _ = writer.join();
        if !out.status.success() {
            return Err(format!(
                "the Prometheus text-format parser rejects /metrics: {}\n--- /metrics ---\n{text}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let doc: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("parser output is not JSON: {e}"))?;
        let families = doc
            .as_array()
            .ok_or("parser output is not an array")?
            .iter()
            .map(|f| Family {
                name: f["name"].as_str().unwrap_or_default().to_owned(),
                kind: f["type"].as_str().unwrap_or_default().to_owned(),
                help: f["help"].as_str().unwrap_or_default().to_owned(),
                samples: f["samples"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|s| Sample {
                        name: s["name"].as_str().unwrap_or_default().to_owned(),
                        labels: s["labels"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        value: parse_value(s["value"].as_str().unwrap_or("nan")),
                    })
                    .collect(),
            })
            .collect();
        Ok(Scrape { text, families })
    }

    /// The family a metric name belongs to (`x_total` is family `x`).
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| {
            f.name == name
                || (f.kind == "counter" && name.strip_suffix("_total") == Some(f.name.as_str()))
        })
    }

    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.families.iter().flat_map(|f| f.samples.iter())
    }

    /// The value of the sample named `name` with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// The value of one series written as in the text format,
    /// `name{a="b",c="d"}` (label order does not matter).
    pub fn series(&self, series: &str) -> Option<f64> {
        let (name, labels) = split_series(series);
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.value(&name, &labels)
    }

    /// Sum over the samples named `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

/// The parser's `repr(float)`: `1.0`, `inf`, `-inf`, `nan`.
fn parse_value(s: &str) -> f64 {
    match s {
        "inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        "nan" => f64::NAN,
        _ => s.parse().unwrap_or(f64::NAN),
    }
}

/// `name{a="b",c="d"}` → (name, [(a, b), (c, d)]). Values may hold `\"`,
/// `\\` and `,`.
fn split_series(series: &str) -> (String, Vec<(String, String)>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series.to_owned(), Vec::new());
    };
    let body = rest.strip_suffix('}').unwrap_or(rest);
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(o) => value.push(o),
                    None => {}
                },
                '"' => break,
                o => value.push(o),
            }
        }
        labels.push((key, value));
    }
    (name.to_owned(), labels)
}
