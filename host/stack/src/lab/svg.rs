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

/// Left edge and width of the plotting area.
const X0: f64 = 60.0;
const W: f64 = 900.0;

fn x_of(t_ms: u64, t_max: u64) -> f64 {
    X0 + W * (t_ms as f64) / (t_max.max(1) as f64)
}

/// The step between time ticks (seconds): the smallest of 0.1, 0.2, 0.5, 1, 2, 5, ... that
/// gives at most 10 ticks over `t_max_ms`.
pub fn tick_step_s(t_max_ms: u64) -> f64 {
    let span = t_max_ms.max(1) as f64 / 1000.0;
    let mut base = 0.1;
    loop {
        for m in [1.0, 2.0, 5.0] {
            let step = base * m;
            if span / step <= 10.0 {
                return step;
            }
        }
        base *= 10.0;
    }
}

/// Per node, its runs of consecutive samples (a node missing from a sample, killed, frozen or
/// not started, breaks its line: it is drawn as a gap).
fn runs(samples: &[Sample], pick: impl Fn(&Sample) -> &BTreeMap<u16, u64>) -> Series {
    let nodes: std::collections::BTreeSet<u16> = samples
        .iter()
        .flat_map(|s| pick(s).keys().copied())
        .collect();
    let mut out = Series::new();
    for n in nodes {
        let mut node_runs: Vec<Vec<(u64, u64)>> = Vec::new();
        let mut current: Vec<(u64, u64)> = Vec::new();
        for s in samples {
            match pick(s).get(&n) {
                Some(v) => current.push((s.t_ms, *v)),
                None if !current.is_empty() => node_runs.push(std::mem::take(&mut current)),
                None => {}
            }
        }
        if !current.is_empty() {
            node_runs.push(current);
        }
        out.insert(n, node_runs);
    }
    out
}

/// Per node, its runs of (t_ms, value) points.
type Series = BTreeMap<u16, Vec<Vec<(u64, u64)>>>;

fn panel(out: &mut String, y0: f64, h: f64, title: &str, series: &Series, t_max: u64) {
    let v_max = series
        .values()
        .flatten()
        .flatten()
        .map(|p| p.1)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let _ = writeln!(
        out,
        r##"<text x="{X0}" y="{}" font-size="14">{title}</text>"##,
        y0 - 6.0
    );
    let _ = writeln!(
        out,
        r##"<rect x="{X0}" y="{y0}" width="{W}" height="{h}" fill="none" stroke="#999"/>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" font-size="10" text-anchor="end">{}</text>"##,
        X0 - 4.0,
        y0 + 10.0,
        v_max as u64
    );
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" font-size="10" text-anchor="end">0</text>"##,
        X0 - 4.0,
        y0 + h
    );
    // time ticks along the bottom edge
    let step = tick_step_s(t_max);
    let mut k = 0u32;
    loop {
        let t_ms = (f64::from(k) * step * 1000.0).round() as u64;
        if t_ms > t_max {
            break;
        }
        let x = x_of(t_ms, t_max);
        let _ = writeln!(
            out,
            r##"<line class="tick" x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#999"/>"##,
            y0 + h,
            y0 + h + 4.0
        );
        let _ = writeln!(
            out,
            r##"<text class="tick" x="{x:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"##,
            y0 + h + 13.0,
            tick_label(t_ms)
        );
        k += 1;
    }
    for (i, (node, node_runs)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        for run in node_runs {
            let mut d = String::new();
            for (t, v) in run {
                let x = x_of(*t, t_max);
                let y = y0 + h - h * (*v as f64) / v_max;
                let _ = write!(d, "{x:.1},{y:.1} ");
            }
            let _ = writeln!(
                out,
                r##"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"##,
                d.trim_end()
            );
        }
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" font-size="11" fill="{color}">node {node}</text>"##,
            X0 + W + 8.0,
            y0 + 14.0 + 14.0 * i as f64
        );
    }
}

/// A tick's label: seconds, with one decimal when the tick is not a whole second.
fn tick_label(t_ms: u64) -> String {
    if t_ms.is_multiple_of(1000) {
        format!("{}s", t_ms / 1000)
    } else {
        format!("{:.1}s", t_ms as f64 / 1000.0)
    }
}

/// Rows for the event labels, so that none overlaps another: per mark (in time order), the
/// row (0 = top) of the first row whose last label ends left of this one's start. Labels are
/// taken as 6.5 px per character, plus 6 px of space.
pub fn label_rows(xs_and_labels: &[(f64, &str)]) -> Vec<usize> {
    let mut ends: Vec<f64> = Vec::new();
    let mut rows = Vec::with_capacity(xs_and_labels.len());
    for (x, label) in xs_and_labels {
        let start = x + 2.0;
        let end = start + 6.5 * label.chars().count() as f64 + 6.0;
        let row = match ends.iter().position(|e| *e <= start) {
            Some(r) => r,
            None => {
                ends.push(f64::NEG_INFINITY);
                ends.len() - 1
            }
        };
        ends[row] = end;
        rows.push(row);
    }
    rows
}

/// Renders the samples and marks: one line per node and run of samples in which it answered
/// (a killed or frozen node is a gap), time ticks in seconds, the events as dashed lines with
/// labels in as many rows as keep them apart.
pub fn render(samples: &[Sample], marks: &[Mark]) -> String {
    let t_max = samples.last().map_or(1, |s| s.t_ms).max(1);
    let owned = runs(samples, |s| &s.owned);
    let card = runs(samples, |s| &s.card);
    let mut marks: Vec<&Mark> = marks.iter().collect();
    marks.sort_by_key(|m| m.t_ms);
    let placed: Vec<(f64, &str)> = marks
        .iter()
        .map(|m| (x_of(m.t_ms, t_max), m.label.as_str()))
        .collect();
    let rows = label_rows(&placed);
    let n_rows = rows.iter().max().map_or(0, |r| r + 1);
    let labels_y = 530.0;
    let height = labels_y + 13.0 * n_rows as f64 + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="1040" height="{height:.0}" font-family="sans-serif">"##
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
    for ((x, label), row) in placed.iter().zip(&rows) {
        let y = labels_y + 13.0 * *row as f64;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="34" x2="{x:.1}" y2="{:.1}" stroke="#d00" stroke-dasharray="4,3"/>"##,
            y - 10.0
        );
        let _ = writeln!(
            out,
            r##"<text class="event" x="{:.1}" y="{y:.1}" font-size="11" fill="#d00">{label}</text>"##,
            x + 2.0,
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="60" y="{:.1}" font-size="11">time (s) since traffic start; a gap in a node's line: it did not answer (killed, frozen, not started)</text>"##,
        height - 10.0
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_ms: u64, nodes: &[(u16, u64)]) -> Sample {
        Sample {
            t_ms,
            owned: nodes.iter().copied().collect(),
            card: nodes.iter().copied().collect(),
        }
    }

    #[test]
    fn ticks_are_round_and_few() {
        assert_eq!(tick_step_s(800), 0.1);
        assert_eq!(tick_step_s(4_000), 0.5);
        assert_eq!(tick_step_s(8_000), 1.0);
        assert_eq!(tick_step_s(20_000), 2.0);
        assert_eq!(tick_step_s(600_000), 100.0);
        let svg = render(&[sample(0, &[(1, 5)]), sample(8_000, &[(1, 5)])], &[]);
        assert_eq!(svg.matches(r#"<text class="tick""#).count(), 2 * 9, "{svg}");
        assert!(svg.contains(">8s</text>"), "{svg}");
    }

    #[test]
    fn a_dead_node_is_a_gap() {
        let samples = [
            sample(0, &[(1, 128), (2, 128)]),
            sample(250, &[(1, 128), (2, 128)]),
            sample(500, &[(1, 256)]),
            sample(750, &[(1, 128), (2, 128)]),
        ];
        let svg = render(&samples, &[]);
        // node 1: one line; node 2: two, around the sample it missed; in both panels
        assert_eq!(svg.matches("<polyline").count(), 2 * 3, "{svg}");
        let r = runs(&samples, |s| &s.owned);
        assert_eq!(r[&2].len(), 2);
        assert_eq!(r[&2][1], vec![(750, 128)]);
    }

    #[test]
    fn labels_do_not_overlap() {
        let rows = label_rows(&[(100.0, "kill 2"), (110.0, "restart 2"), (300.0, "join 4")]);
        assert_eq!(rows, vec![0, 1, 0]);
        let marks = [
            Mark {
                t_ms: 1000,
                label: "kill 2".into(),
            },
            Mark {
                t_ms: 1010,
                label: "partition 3".into(),
            },
            Mark {
                t_ms: 1020,
                label: "heal 3".into(),
            },
        ];
        let svg = render(&[sample(0, &[(1, 1)]), sample(4000, &[(1, 1)])], &marks);
        let ys: std::collections::BTreeSet<String> = svg
            .lines()
            .filter(|l| l.contains(r#"class="event""#))
            .map(|l| {
                l.split("y=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(ys.len(), 3, "three rows: {svg}");
    }
}
