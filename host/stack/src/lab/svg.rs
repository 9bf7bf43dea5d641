//! The demo drawn as an SVG: identifiers owned and card occupancy per node over time, with kills
//! and joins marked.

use std::collections::BTreeMap;
use std::fmt::Write;

/// One sample of the cluster.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sample {
    /// Milliseconds since traffic start.
    pub t_ms: u64,
    /// Identifiers owned per node.
    pub owned: BTreeMap<u16, u64>,
    /// Card entries per node.
    pub card: BTreeMap<u16, u64>,
}

/// A marked event.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Mark {
    /// Milliseconds since traffic start.
    pub t_ms: u64,
    /// Label ("kill 2", "join 4", ...).
    pub label: String,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn panel(
    out: &mut String,
    y0: f64,
    h: f64,
    title: &str,
    series: &BTreeMap<u16, Vec<(u64, u64)>>,
    t_max: u64,
) {
    let w = 900.0;
    let x0 = 60.0;
    let v_max = series
        .values()
        .flatten()
        .map(|p| p.1)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let _ = writeln!(
        out,
        r##"<text x="{x0}" y="{}" font-size="14">{title}</text>"##,
        y0 - 6.0
    );
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" font-size="10" text-anchor="end">{}</text>"##,
        x0 - 4.0,
        y0 + 10.0,
        v_max as u64
    );
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" font-size="10" text-anchor="end">0</text>"##,
        x0 - 4.0,
        y0 + h
    );
    for (i, (node, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut d = String::new();
        for (t, v) in pts {
            let x = x0 + w * (*t as f64) / (t_max.max(1) as f64);
            let y = y0 + h - h * (*v as f64) / v_max;
            let _ = write!(d, "{x:.1},{y:.1} ");
        }
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="{color}" stroke-width="2" points="{d}"/>"##
        );
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" font-size="11" fill="{color}">node {node}</text>"##,
            x0 + w + 8.0,
            y0 + 14.0 + 14.0 * i as f64
        );
    }
}

/// Renders the samples and marks.
pub fn render(samples: &[Sample], marks: &[Mark]) -> String {
    let t_max = samples.last().map_or(1, |s| s.t_ms).max(1);
    let mut owned: BTreeMap<u16, Vec<(u64, u64)>> = BTreeMap::new();
    let mut card: BTreeMap<u16, Vec<(u64, u64)>> = BTreeMap::new();
    for s in samples {
        for (n, v) in &s.owned {
            owned.entry(*n).or_default().push((s.t_ms, *v));
        }
        for (n, v) in &s.card {
            card.entry(*n).or_default().push((s.t_ms, *v));
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="1040" height="560" font-family="sans-serif">"##
    );
    let _ = writeln!(out, r##"<rect width="100%" height="100%" fill="white"/>"##);
    panel(
        &mut out,
        40.0,
        200.0,
        "distribution identifiers owned per node",
        &owned,
        t_max,
    );
    panel(
        &mut out,
        300.0,
        200.0,
        "card occupancy (node-specific table entries) per node",
        &card,
        t_max,
    );
    for m in marks {
        let x = 60.0 + 900.0 * (m.t_ms as f64) / (t_max as f64);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="34" x2="{x:.1}" y2="500" stroke="#d00" stroke-dasharray="4,3"/>"##
        );
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="520" font-size="11" fill="#d00">{}</text>"##,
            x + 2.0,
            m.label
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="60" y="545" font-size="11">time (s): 0 .. {:.1}</text>"##,
        t_max as f64 / 1000.0
    );
    out.push_str("</svg>\n");
    out
}
