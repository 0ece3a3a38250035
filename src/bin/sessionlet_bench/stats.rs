//! Figures: samples per peer, their summary, the Markdown table and the JSON.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// Summary of a sample set.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarizes samples.
pub fn summarize(samples: &[f64]) -> Summary {
    let mut s: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return Summary::default();
    }
    Summary {
        n: s.len(),
        min: s[0],
        p10: pct(&s, 10.0),
        p50: pct(&s, 50.0),
        p90: pct(&s, 90.0),
        p99: pct(&s, 99.0),
        max: s[s.len() - 1],
        mean: s.iter().sum::<f64>() / s.len() as f64,
    }
}

/// Which statistic a row shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// p50 with [p10–p90].
    P50,
    /// p99 with the sample count.
    P99,
    /// Median of repetitions with [min–max].
    Median,
    /// A single measurement.
    Single,
}

/// What one peer gave for a figure.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Measured.
    Samples { samples: Vec<f64>, timeouts: usize },
    /// Not measured, and why.
    Skipped(String),
}

/// A goal: the value must be at most this.
#[derive(Debug, Clone)]
pub struct Goal {
    pub max: f64,
    pub text: String,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Figure {
    pub id: String,
    pub title: String,
    pub unit: String,
    pub show: Show,
    pub goal: Option<Goal>,
    pub results: BTreeMap<String, Outcome>,
    /// Extra facts (breakdowns) for the JSON.
    pub detail: Value,
}

impl Figure {
    pub fn new(id: &str, title: &str, unit: &str, show: Show) -> Figure {
        Figure {
            id: id.into(),
            title: title.into(),
            unit: unit.into(),
            show,
            goal: None,
            results: BTreeMap::new(),
            detail: Value::Null,
        }
    }

    pub fn goal(mut self, max: f64, text: &str) -> Figure {
        self.goal = Some(Goal {
            max,
            text: text.into(),
        });
        self
    }

    pub fn set(&mut self, peer: &str, samples: Vec<f64>, timeouts: usize) {
        self.results
            .insert(peer.into(), Outcome::Samples { samples, timeouts });
    }

    pub fn skip(&mut self, peer: &str, why: &str) {
        self.results
            .insert(peer.into(), Outcome::Skipped(why.into()));
    }

    /// The value a row shows for a peer.
    pub fn value(&self, peer: &str) -> Option<f64> {
        match self.results.get(peer)? {
            Outcome::Samples { samples, .. } if !samples.is_empty() => {
                let s = summarize(samples);
                Some(match self.show {
                    Show::P50 | Show::Median => s.p50,
                    Show::P99 => s.p99,
                    Show::Single => s.p50,
                })
            }
            _ => None,
        }
    }

    pub fn met(&self) -> Option<bool> {
        let g = self.goal.as_ref()?;
        Some(self.value("sessionlet")? <= g.max)
    }

    fn cell(&self, peer: &str) -> String {
        match self.results.get(peer) {
            None => "–".into(),
            Some(Outcome::Skipped(why)) => why.clone(),
            Some(Outcome::Samples { samples, timeouts }) => {
                let mut out = if samples.is_empty() {
                    "no sample".to_string()
                } else {
                    let s = summarize(samples);
                    match self.show {
                        Show::P50 => format!(
                            "{} [{}–{}]",
                            fmt(s.p50, &self.unit),
                            fmt_n(s.p10, &self.unit),
                            fmt_n(s.p90, &self.unit)
                        ),
                        Show::P99 => format!("{} (n={})", fmt(s.p99, &self.unit), s.n),
                        Show::Median if s.n > 1 => format!(
                            "{} [{}–{}]",
                            fmt(s.p50, &self.unit),
                            fmt_n(s.min, &self.unit),
                            fmt_n(s.max, &self.unit)
                        ),
                        _ => fmt(s.p50, &self.unit),
                    }
                };
                if *timeouts > 0 {
                    out.push_str(&format!(", {timeouts} timed out"));
                }
                out
            }
        }
    }

    pub fn to_json(&self) -> Value {
        let mut results = serde_json::Map::new();
        for (peer, o) in &self.results {
            let v = match o {
                Outcome::Skipped(why) => json!({ "skipped": why }),
                Outcome::Samples { samples, timeouts } => {
                    let s = summarize(samples);
                    json!({
                        "value": self.value(peer),
                        "n": s.n, "min": s.min, "p10": s.p10, "p50": s.p50, "p90": s.p90,
                        "p99": s.p99, "max": s.max, "mean": s.mean,
                        "timeouts": timeouts,
                        "samples": samples,
                    })
                }
            };
            results.insert(peer.clone(), v);
        }
        let mut ratios = serde_json::Map::new();
        if let Some(me) = self.value("sessionlet") {
            for peer in self.results.keys().filter(|p| *p != "sessionlet") {
                if let Some(v) = self.value(peer).filter(|v| *v > 0.0) {
                    ratios.insert(peer.clone(), json!(me / v));
                }
            }
        }
        json!({
            "id": self.id,
            "title": self.title,
            "unit": self.unit,
            "statistic": format!("{:?}", self.show).to_lowercase(),
            "goal": self.goal.as_ref().map(|g| json!({"max": g.max, "text": g.text})),
            "goalMet": self.met(),
            "results": results,
            "ratioSessionletOverPeer": ratios,
            "detail": self.detail,
        })
    }
}

/// A value with its unit, 2–3 significant digits.
pub fn fmt(v: f64, unit: &str) -> String {
    let n = fmt_n(v, unit);
    match unit {
        "" => n,
        "%" => format!("{n}%"),
        u => format!("{n} {u}"),
    }
}

/// A number, 2–3 significant digits.
pub fn fmt_n(v: f64, _unit: &str) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

/// The Markdown table: one row per figure, one column per peer, the ratios, the goal.
pub fn markdown(figures: &[Figure], peers: &[&str]) -> String {
    let others: Vec<&str> = peers
        .iter()
        .copied()
        .filter(|p| *p != "sessionlet")
        .collect();
    let mut out = String::new();
    out.push_str("| figure |");
    for p in peers {
        out.push_str(&format!(" {p} |"));
    }
    for p in &others {
        out.push_str(&format!(" sessionlet ÷ {p} |"));
    }
    out.push_str(" goal |\n|---|");
    for _ in 0..peers.len() + others.len() {
        out.push_str("---|");
    }
    out.push_str("---|\n");
    for f in figures {
        out.push_str(&format!("| {} |", f.title));
        for p in peers {
            out.push_str(&format!(" {} |", f.cell(p)));
        }
        for p in &others {
            let r = match (f.value("sessionlet"), f.value(p)) {
                (Some(a), Some(b)) if b > 0.0 => fmt_n(a / b, ""),
                _ => "–".into(),
            };
            out.push_str(&format!(" {r} |"));
        }
        let goal = match (&f.goal, f.met()) {
            (Some(g), Some(true)) => format!("{} ✅", g.text),
            (Some(g), Some(false)) => format!("{} ❌ missed", g.text),
            (Some(g), None) => g.text.clone(),
            (None, _) => String::new(),
        };
        out.push_str(&format!(" {goal} |\n"));
    }
    out
}
