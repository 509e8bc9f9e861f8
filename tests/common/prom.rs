//! `/metrics` read the way Prometheus reads it: the text is handed to a real
//! Prometheus text-format parser (`prometheus_client.parser` from the
//! provisioned virtualenv, see [`super::interop::deps`]), and tests look up
//! the samples it returns. A scrape the parser rejects fails the test.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

/// The parser as a server: one JSON string (a scrape) per line in, one
/// JSON line out, `{"ok": [families]}` or `{"err": "why"}`. One process per
/// test binary, so a scrape costs milliseconds, not an interpreter start.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for line in sys.stdin:
    try:
        out = []
        for fam in text_string_to_metric_families(json.loads(line)):
            out.append({"name": fam.name, "type": fam.type, "help": fam.documentation,
                        "samples": [{"name": s.name, "labels": s.labels, "value": repr(s.value)}
                                    for s in fam.samples]})
        resp = {"ok": out}
    except Exception as e:
        resp = {"err": "%s: %s" % (type(e).__name__, e)}
    sys.stdout.write(json.dumps(resp) + "\n")
    sys.stdout.flush()
"#;

/// How long one scrape may take to parse.
const PARSE_TIMEOUT: Duration = Duration::from_secs(20);

/// The running parser: its stdin, and its stdout's lines.
struct Parser {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Parser {
    fn start() -> Result<Parser, String> {
        let python = &super::interop::deps().python;
        let mut child = Command::new(python)
            .args(["-c", PARSER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Parser {
            child,
            stdin,
            lines,
        })
    }

    fn parse(&mut self, text: &str) -> Result<Value, String> {
        let mut req = serde_json::to_string(text).map_err(|e| e.to_string())?;
        req.push('\n');
        self.stdin
            .write_all(req.as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("parser stdin: {e}"))?;
        let line = self
            .lines
            .recv_timeout(PARSE_TIMEOUT)
            .map_err(|e| format!("no answer from the parser within {PARSE_TIMEOUT:?}: {e}"))?;
        serde_json::from_str(&line).map_err(|e| format!("parser output is not JSON: {e}"))
    }
}

impl Drop for Parser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One parser per test binary, shared by its test threads.
fn parse_with_server(text: &str) -> Result<Value, String> {
    static PARSER: Mutex<Option<Parser>> = Mutex::new(None);
    let mut slot = PARSER.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        *slot = Some(Parser::start()?);
    }
    let result = slot
        .as_mut()
        .map_or(Err("no parser".into()), |p| p.parse(text));
    if result.is_err() {
        // A broken or stuck parser is replaced on the next scrape.
        *slot = None;
    }
    result
}

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
        let resp = parse_with_server(&text)?;
        if let Some(e) = resp.get("err") {
            return Err(format!(
                "the Prometheus text-format parser rejects /metrics: {}\n--- /metrics ---\n{text}",
                e.as_str().unwrap_or_default()
            ));
        }
        let doc = resp.get("ok").cloned().unwrap_or(Value::Null);
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
