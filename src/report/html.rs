//! `tvck report RUN_DIR -o report.html`: one self-contained HTML file of a run (no script,
//! no external resource): its state, final metrics, curves as inline SVG, alerts, events,
//! config files and checkpoints. Every text read from the run folder is escaped
//! ([`safe::html`]).

use std::fmt::Write;

use crate::dashboard::runs::RunReport;
use crate::dashboard::series::Series;
use crate::monitor::line::known_value;
use crate::monitor::rules::Direction;
use crate::monitor::AlertState;

use super::safe;

/// The curves drawn, each a group of series names (those the run has are drawn).
pub const CHARTS: &[(&str, &[&str])] = &[
    ("coverage", &["coverage"]),
    ("hierarchy", &["hierarchy_A", "hierarchy_B"]),
    ("Q", &["Q"]),
    ("richness", &["richness_A", "richness_B"]),
    ("distance correlation", &["dist_corr_A", "dist_corr_B"]),
    ("radii", &["r_v0", "r_v9", "mean_radius"]),
    ("total loss", &["loss.total"]),
    (
        "loss terms",
        &[
            "loss.rich",
            "loss.radial",
            "loss.rank",
            "loss.geodesic",
            "loss.zero_structure",
        ],
    ),
    ("learning rate", &["lr"]),
    ("gradient norm", &["grad_norm"]),
];

const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;color:#1d2330;margin:24px auto;max-width:1100px;padding:0 16px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #d9dee7}\
table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 8px;border-bottom:1px solid #e4e7ec;text-align:left;vertical-align:top}\
td.num{text-align:right;font-variant-numeric:tabular-nums}th{color:#667085}\
pre{background:#f2f4f7;padding:8px;overflow:auto;white-space:pre-wrap;word-break:break-all}\
.badge{display:inline-block;padding:0 7px;border-radius:8px;background:#eaecf0;font-size:12px}\
.critical{background:#b42318;color:#fff}.warning{background:#fdb022}.info{background:#b2ddff}\
.charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figcaption{font-weight:600}\
tr.cleared{color:#667085}";

fn h(s: &str) -> String {
    safe::html(s, false)
}

/// A number as the report prints it: 4 significant digits, exponents for the very small
/// and large, `–` for none.
pub fn num(v: Option<f64>) -> String {
    match v {
        Some(0.0) => "0".into(),
        Some(x) if x.is_finite() => {
            if x.abs() < 1e-3 || x.abs() >= 1e5 {
                format!("{x:.2e}")
            } else {
                let digits = (3.0 - x.abs().log10().floor()).clamp(0.0, 6.0) as usize;
                let s = format!("{x:.digits$}");
                if s.contains('.') {
                    s.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    s
                }
            }
        }
        Some(_) => "non-finite".into(),
        None => "–".into(),
    }
}

/// An SVG line chart of some columns of `series` (gaps where a value is missing or not
/// finite). `None` when none of them has a finite value.
pub fn svg_chart(title: &str, series: &Series, names: &[&str]) -> Option<String> {
    let cols: Vec<(&str, &[f64])> = names
        .iter()
        .filter_map(|n| series.column(n))
        .filter(|(_, c)| c.iter().any(|v| v.is_finite()))
        .collect();
    if cols.is_empty() || series.epochs.is_empty() {
        return None;
    }
    let (w, ht) = (520.0, 220.0);
    let (left, right, top, bottom) = (64.0, 12.0, 28.0, 30.0);
    let xs = &series.epochs;
    let x0 = *xs.iter().min()? as f64;
    let mut x1 = *xs.iter().max()? as f64;
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let finite = cols
        .iter()
        .flat_map(|(_, c)| c.iter().copied())
        .filter(|v| v.is_finite());
    let (mut y0, mut y1) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if y1 - y0 < 1e-12 {
        let pad = if y0 == 0.0 { 0.5 } else { y0.abs() * 0.1 };
        y0 -= pad;
        y1 += pad;
    } else {
        let pad = (y1 - y0) * 0.05;
        y0 -= pad;
        y1 += pad;
    }
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| top + (y1 - y) / (y1 - y0) * (ht - top - bottom);
    let mut s = String::new();
    let points: usize = cols
        .iter()
        .map(|(_, c)| c.iter().filter(|v| v.is_finite()).count())
        .sum();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{ht}" viewBox="0 0 {w} {ht}" role="img" aria-label="{}" data-points="{points}">"#,
        h(title)
    );
    let _ = write!(
        s,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"#fff\" stroke=\"#d0d5dd\"/>",
        w - left - right,
        ht - top - bottom
    );
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * i as f64 / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eaecf0\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            w - right,
            py(y),
            py(y),
            left - 4.0,
            py(y) + 3.0,
            num(Some(y))
        );
    }
    for i in 0..=4 {
        let x = (x0 + (x1 - x0) * i as f64 / 4.0).round();
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{x}</text>",
            px(x),
            ht - bottom + 14.0
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">epoch</text>",
        left + (w - left - right) / 2.0,
        ht - 4.0
    );
    for (i, (name, col)) in cols.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut segment: Vec<String> = Vec::new();
        let flush = |seg: &mut Vec<String>, s: &mut String| {
            match seg.len() {
                0 => {}
                1 => {
                    let _ = write!(
                        s,
                        "<circle cx=\"{}\" r=\"2\" fill=\"{color}\"/>",
                        seg[0].replace(',', "\" cy=\"")
                    );
                }
                _ => {
                    let _ = write!(
                        s,
                        "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
                        seg.join(" ")
                    );
                }
            }
            seg.clear();
        };
        for (x, v) in xs.iter().zip(col.iter()) {
            if v.is_finite() {
                segment.push(format!("{:.1},{:.1}", px(*x as f64), py(*v)));
            } else {
                flush(&mut segment, &mut s);
            }
        }
        flush(&mut segment, &mut s);
        let lx = left + 4.0 + i as f64 * 110.0;
        let _ = write!(
            s,
            "<rect x=\"{lx:.1}\" y=\"8\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"17\" font-size=\"11\">{}</text>",
            lx + 14.0,
            h(name)
        );
    }
    s.push_str("</svg>");
    Some(s)
}

fn row(cells: &[String]) -> String {
    let mut s = String::from("<tr>");
    for c in cells {
        s.push_str(c);
    }
    s.push_str("</tr>\n");
    s
}

fn td(s: &str) -> String {
    format!("<td>{}</td>", h(s))
}

fn td_num(s: String) -> String {
    format!("<td class=\"num\">{}</td>", h(&s))
}

fn table(header: &[&str], rows: &[String]) -> String {
    let mut s = String::from("<table><thead><tr>");
    for c in header {
        let _ = write!(s, "<th>{}</th>", h(c));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for r in rows {
        s.push_str(r);
    }
    s.push_str("</tbody></table>\n");
    s
}

fn alerts_table(alerts: &[AlertState]) -> String {
    if alerts.is_empty() {
        return "<p id=\"no-alerts\">No alert.</p>\n".into();
    }
    let rows: Vec<String> = alerts
        .iter()
        .map(|a| {
            let sev = a.alert.severity.label().to_ascii_lowercase();
            let mut r = row(&[
                format!("<td><span class=\"badge {sev}\">{sev}</span></td>"),
                td_num(a.alert.epoch.to_string()),
                td(&a.alert.rule),
                td(&a.alert.message),
                td(&a.alert.cause),
                td(&a.alert.fix),
                td(if a.standing { "yes" } else { "no" }),
            ]);
            if !a.standing {
                r = r.replacen("<tr>", "<tr class=\"cleared\">", 1);
            }
            r
        })
        .collect();
    table(
        &[
            "severity", "epoch", "rule", "message", "cause", "fix", "stands",
        ],
        &rows,
    )
}

/// The final and best value of every series the run has.
fn metrics_table(series: &Series) -> String {
    let rows: Vec<String> = series
        .columns
        .iter()
        .filter(|(_, c)| c.iter().any(|v| v.is_finite()))
        .map(|(name, c)| {
            let dir = Direction::natural(name);
            // Counts, settings, the learning rate: nothing is better about them.
            let ranked = known_value(name) && !matches!(name.as_str(), "lr" | "grad_norm");
            let best = c
                .iter()
                .zip(series.epochs.iter())
                .filter(|(v, _)| v.is_finite())
                .filter(|_| ranked)
                .fold(None::<(f64, u64)>, |acc, (v, e)| match (acc, dir) {
                    (Some((b, _)), Direction::Min) if *v >= b => acc,
                    (Some((b, _)), Direction::Max) if *v <= b => acc,
                    _ => Some((*v, *e)),
                });
            let last = c
                .iter()
                .zip(series.epochs.iter())
                .rev()
                .find(|(v, _)| v.is_finite());
            let non_finite = c.iter().filter(|v| v.is_nan() || v.is_infinite()).count();
            row(&[
                td(name),
                td_num(num(last.map(|l| *l.0))),
                td_num(last.map_or("–".into(), |l| l.1.to_string())),
                td_num(num(best.map(|b| b.0))),
                td_num(best.map_or("–".into(), |b| b.1.to_string())),
                td(match (ranked, dir) {
                    (false, _) => "",
                    (true, Direction::Min) => "lower",
                    (true, Direction::Max) => "higher",
                }),
                td_num(non_finite.to_string()),
            ])
        })
        .collect();
    table(
        &[
            "value",
            "last",
            "at epoch",
            "best",
            "at epoch",
            "better",
            "missing or non-finite",
        ],
        &rows,
    )
}

/// The whole report page.
pub fn render(r: &RunReport) -> String {
    let s = &r.summary;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>tvck report: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        h(&s.name)
    );
    let _ = writeln!(
        out,
        "<h1>Run {}</h1>\n<p>Written by tvck {} from the run folder's files.</p>",
        h(&s.name),
        env!("CARGO_PKG_VERSION")
    );
    out.push_str("<h2 id=\"state\">State</h2>\n");
    let standing = s.standing;
    let mut rows = vec![
        row(&[td("state"), td(s.state.as_str())]),
        row(&[
            td("epochs"),
            td(&match (s.epoch, s.epochs) {
                (Some(e), Some(p)) => format!("{e} of {p}"),
                (Some(e), None) => e.to_string(),
                (None, _) => "none yet".into(),
            }),
        ]),
        row(&[
            td("alerts"),
            td(&format!(
                "{} raised; standing: {} critical, {} warning, {} info",
                s.alerts, standing.critical, standing.warning, standing.info
            )),
        ]),
    ];
    if let Some(sec) = s.epoch_seconds {
        rows.push(row(&[td("seconds per epoch"), td(&num(Some(sec)))]));
    }
    if let Some(i) = &r.detail.info {
        rows.push(row(&[
            td("process"),
            td(&format!("{} on {}", i.pid, i.host)),
        ]));
        if let Some(c) = &i.config {
            rows.push(row(&[td("config"), td(c)]));
        }
    }
    if !s.freeze.is_empty() {
        let f: Vec<String> = s
            .freeze
            .iter()
            .map(|(k, v)| format!("{k}: {}", if *v { "frozen" } else { "trained" }))
            .collect();
        rows.push(row(&[td("freeze"), td(&f.join(", "))]));
    }
    out.push_str(&table(&["", ""], &rows));
    out.push_str("<h2 id=\"final-metrics\">Final metrics</h2>\n");
    out.push_str(&metrics_table(&r.series));
    out.push_str("<h2 id=\"curves\">Curves</h2>\n<div class=\"charts\">\n");
    for (title, names) in CHARTS {
        if let Some(svg) = svg_chart(title, &r.series, names) {
            let _ = writeln!(
                out,
                "<figure><figcaption>{}</figcaption>{svg}</figure>",
                h(title)
            );
        }
    }
    out.push_str("</div>\n<h2 id=\"alerts\">Alerts</h2>\n");
    out.push_str(&alerts_table(&r.alerts));
    out.push_str("<h2 id=\"events\">Events</h2>\n");
    if r.series.events.is_empty() {
        out.push_str("<p>No event.</p>\n");
    } else {
        let rows: Vec<String> = r
            .series
            .events
            .iter()
            .map(|e| {
                row(&[
                    td_num(e.epoch.to_string()),
                    td(&e.event.kind),
                    td(&e.event.component),
                    td(&e.event.message),
                ])
            })
            .collect();
        out.push_str(&table(&["epoch", "kind", "part", "message"], &rows));
    }
    out.push_str("<h2 id=\"config\">Config</h2>\n");
    if r.detail.configs.is_empty() {
        out.push_str("<p>No config file in the run folder.</p>\n");
    }
    for c in &r.detail.configs {
        let _ = writeln!(
            out,
            "<h3>{}{}</h3>\n<pre>{}</pre>",
            h(&c.name),
            if c.truncated { " (cut)" } else { "" },
            safe::html(&c.text, true)
        );
    }
    out.push_str("<h2 id=\"checkpoints\">Checkpoints</h2>\n");
    if r.detail.checkpoints.is_empty() {
        out.push_str("<p>No checkpoint in the run folder.</p>\n");
    } else {
        let rows: Vec<String> = r
            .detail
            .checkpoints
            .iter()
            .map(|c| {
                let findings = match &c.error {
                    Some(e) => e.clone(),
                    None => c
                        .findings
                        .iter()
                        .map(|f| format!("{}: {}", f.kind, f.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                };
                row(&[
                    td(&c.file),
                    td_num(super::human_bytes(c.size)),
                    td(c.version.as_deref().unwrap_or("")),
                    td_num(c.epoch.map_or(String::new(), |e| e.to_string())),
                    td_num(c.parameters.to_string()),
                    td_num(num(c.metrics.coverage)),
                    td_num(num(c.metrics.hierarchy)),
                    td_num(num(c.metrics.q)),
                    td(&findings),
                ])
            })
            .collect();
        out.push_str(&table(
            &[
                "file",
                "size",
                "version",
                "epoch",
                "parameters",
                "coverage",
                "hierarchy_B",
                "Q",
                "findings",
            ],
            &rows,
        ));
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::line::EpochLine;

    #[test]
    fn numbers_and_charts() {
        assert_eq!(num(Some(0.99)), "0.99");
        assert_eq!(num(Some(1234.56)), "1235");
        assert_eq!(num(Some(1e-5)), "1.00e-5");
        assert_eq!(num(Some(f64::NAN)), "non-finite");
        assert_eq!(num(None), "–");
        assert_eq!(num(Some(0.0)), "0");
        assert_eq!(num(Some(-0.5)), "-0.5");
        let mut s = Series::default();
        for l in [
            r#"{"epoch":0,"metrics":{"coverage":0.5}}"#,
            r#"{"epoch":1,"metrics":{"coverage":NaN}}"#,
            r#"{"epoch":2,"metrics":{"coverage":0.7}}"#,
            r#"{"epoch":3,"metrics":{"coverage":0.9}}"#,
        ] {
            s.push(&EpochLine::parse(l).unwrap());
        }
        let svg = svg_chart("c<", &s, &["coverage"]).unwrap();
        assert!(svg.contains("data-points=\"3\""), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 1, "a gap at the NaN");
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(svg.contains("aria-label=\"c&lt;\""));
        assert!(svg_chart("q", &s, &["Q"]).is_none());
    }
}
