//! Rendering of `tvck convert`: the plan (identical for a dry run and a real run), the
//! written file, and the summary of a folder conversion.

use crate::migrate::{Converted, Plan, TreeReport};

use super::{human_bytes, new_table, shape};

/// The plan as tables, one per spec step.
pub fn render_plan(p: &Plan) -> String {
    let mut out = format!(
        "{}: {} ({}) → {} ({})\n",
        p.input, p.source_version, p.source_layout, p.target_version, p.target_layout
    );
    if let Some(k) = &p.model_state_key {
        out.push_str(&format!("model state under `{k}`\n"));
    } else {
        out.push_str("bare state_dict\n");
    }
    if p.is_noop() {
        out.push_str(&format!(
            "already {}: nothing to convert\n",
            p.target_version
        ));
        return out;
    }
    let n = p.steps.len();
    for (i, s) in p.steps.iter().enumerate() {
        out.push_str(&format!(
            "\nstep {}/{n}: spec {} ({}, sha256 {}): {} → {}\n",
            i + 1,
            s.spec,
            s.spec_origin,
            &s.spec_sha256[..12],
            s.from_version,
            s.to_version
        ));
        let mut t = new_table(&["#", "Source key", "Shape", "Target key", "Shape", "Rule"]);
        for (j, r) in s.rows.iter().enumerate() {
            let (fk, fs) = r
                .from
                .as_ref()
                .map(|(k, s)| (k.clone(), shape(s)))
                .unwrap_or_else(|| ("—".into(), String::new()));
            let (tk, ts) =
                r.to.as_ref()
                    .map(|(k, s)| (k.clone(), shape(s)))
                    .unwrap_or_else(|| ("(dropped)".into(), String::new()));
            let rule = if r.detail.is_empty() {
                format!("{} (rule {})", r.op, r.rule)
            } else {
                format!("{} {} (rule {})", r.op, r.detail, r.rule)
            };
            t.add_row(vec![(j + 1).to_string(), fk, fs, tk, ts, rule]);
        }
        out.push_str(&t.to_string());
        out.push('\n');
        let sm = &s.summary;
        out.push_str(&format!(
            "summary: {} copied (incl. {} duplicates), {} initialised, {} transformed, {} dropped\n",
            sm.copied, sm.duplicated, sm.initialised, sm.transformed, sm.dropped
        ));
        let applied: Vec<String> = s
            .entries
            .iter()
            .filter(|e| e.applies)
            .map(|e| match &e.value {
                Some(v) => format!("{} {} = {v}", e.action, e.key),
                None => format!("{} {}", e.action, e.key),
            })
            .collect();
        if !applied.is_empty() {
            out.push_str(&format!("entries: {}\n", applied.join("; ")));
        }
    }
    if !p.warnings.is_empty() {
        out.push_str("\nwarnings:\n");
        for w in &p.warnings {
            out.push_str(&format!("  - {w}\n"));
        }
    }
    out
}

/// A single-file conversion: the plan, then what was (or would be) written.
pub fn render_converted(c: &Converted, output: &std::path::Path, dry_run: bool) -> String {
    let mut out = render_plan(&c.plan);
    if c.plan.is_noop() {
        return out;
    }
    out.push('\n');
    match (&c.output, c.bytes) {
        (Some(path), Some(bytes)) => out.push_str(&format!(
            "wrote {} ({}, {}); verified {} tensors (SHA-256, shape, dtype) before renaming it into place\n",
            path.display(),
            c.format.extension(),
            human_bytes(bytes),
            c.verified
        )),
        _ if dry_run => out.push_str(&format!(
            "dry run: would write {} ({}); nothing written\n",
            output.display(),
            c.format.extension()
        )),
        _ => {}
    }
    if let Some(r) = &c.refinement {
        out.push('\n');
        if dry_run {
            out.push_str(&render_fit_plan(r));
        } else {
            out.push_str(&render_refinement(r));
        }
    } else if let Some(st) = c.metrics_status {
        out.push_str(&format!(
            "metrics: {} (--measure or --fit measures the converted weights)\n",
            st.label()
        ));
    }
    out
}

fn num(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(x) if x != 0.0 && x.abs() < 1e-3 => format!("{x:.3e}"),
        Some(x) => format!("{x:.4}"),
        None => "—".into(),
    }
}

fn list(v: &serde_json::Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// What `--fit` / `--measure` would do (a dry run).
pub fn render_fit_plan(r: &serde_json::Value) -> String {
    let mut out = String::new();
    let mode = r["mode"].as_str().unwrap_or("?");
    out.push_str(&format!(
        "{mode} on {}:\n",
        r["device"].as_str().unwrap_or("?")
    ));
    if mode == "fit" {
        out.push_str(&format!(
            "  seed {}, at most {} steps\n",
            r["seed"], r["max_steps"]
        ));
        out.push_str(&format!("  matched outputs: {}\n", list(&r["matched"])));
        out.push_str(&format!("  tuned parts: {}\n", list(&r["tuned_parts"])));
        if let Some(o) = r["new_tensors"].as_object().filter(|o| !o.is_empty()) {
            let parts: Vec<String> = o.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out.push_str(&format!(
                "  tensors the conversion creates (they move first): {}\n",
                parts.join(", ")
            ));
        }
        for p in r["initialised_only"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  only initialised: {}\n",
                p.as_str().unwrap_or_default()
            ));
        }
        if let Some(t) = r["tolerances"].as_object() {
            let parts: Vec<String> = t.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out.push_str(&format!("  tolerances (|Δ|): {}\n", parts.join(", ")));
        }
        if let Some(s) = r["stop"].as_str() {
            out.push_str(&format!("  stops when {s}\n"));
        }
    }
    if let Some(h) = r["how"].as_str() {
        out.push_str(&format!("  {h}\n"));
    }
    out
}

/// What `--fit` / `--measure` did: source / structural / fitted per metric.
pub fn render_refinement(r: &serde_json::Value) -> String {
    let mut out = String::new();
    let status = r["status"]
        .as_str()
        .and_then(crate::metrics::Provenance::parse);
    out.push_str(&format!(
        "metrics: {} on {}",
        status.map_or("?", |s| s.label()),
        r["device"].as_str().unwrap_or("?")
    ));
    if let Some(steps) = r["steps"].as_u64().filter(|&s| s > 0) {
        out.push_str(&format!(", {steps} steps (seed {})", r["seed"]));
    }
    if let Some(w) = r["wall_s"].as_f64() {
        out.push_str(&format!(", {w:.1} s"));
    }
    out.push('\n');
    if let Some(h) = r["how"].as_str() {
        out.push_str(&format!("{h}\n"));
    }
    if let Some(values) = r["values"].as_object() {
        let mut t = new_table(&["Metric", "Source", "Structural", "Fitted"]);
        for (k, v) in values {
            if v["source"].is_null() && v["structural"].is_null() {
                continue;
            }
            t.add_row(vec![
                k.clone(),
                num(&v["source"]),
                num(&v["structural"]),
                num(&v["fitted"]),
            ]);
        }
        out.push_str(&t.to_string());
        out.push('\n');
    }
    for (label, key) in [
        ("structural", "structural_radius_delta"),
        ("fitted", "radius_delta"),
    ] {
        let d = &r[key];
        if d.is_object() {
            out.push_str(&format!(
                "|Δ radius| vs the source, {label}: A max {} mean {}; B max {} mean {}\n",
                num(&d["A"]["max"]),
                num(&d["A"]["mean"]),
                num(&d["B"]["max"]),
                num(&d["B"]["mean"])
            ));
        }
    }
    for p in r["initialised_only"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "only initialised: {}\n",
            p.as_str().unwrap_or_default()
        ));
    }
    if let Some(t) = r["time_s"].as_object() {
        let parts: Vec<String> = t
            .iter()
            .map(|(k, v)| format!("{k} {:.1} s", v.as_f64().unwrap_or(0.0)))
            .collect();
        out.push_str(&format!("time: {}\n", parts.join(", ")));
    }
    out
}

/// A folder conversion: one row per file, then counts.
pub fn render_tree(r: &TreeReport) -> String {
    let mut t = new_table(&["Input", "From", "Status", "Output / error"]);
    for f in &r.files {
        let detail = match (&f.error, &f.result) {
            (Some(e), _) => e.lines().next().unwrap_or_default().to_string(),
            (None, Some(res)) if res.plan.is_noop() => "already the target layout".into(),
            (None, _) => f.output.display().to_string(),
        };
        t.add_row(vec![
            f.input.display().to_string(),
            f.source_version.unwrap_or("?").to_string(),
            f.status.to_string(),
            detail,
        ]);
    }
    let mut out = t.to_string();
    out.push('\n');
    let count = |s: &str| r.files.iter().filter(|f| f.status == s).count();
    out.push_str(&format!(
        "{} files: {} converted, {} planned, {} unchanged, {} failed\n",
        r.files.len(),
        count("converted"),
        count("planned"),
        count("unchanged"),
        count("failed")
    ));
    for e in &r.walk_errors {
        out.push_str(&format!("could not read: {e}\n"));
    }
    for f in r.files.iter().filter(|f| f.status == "failed") {
        if let Some(e) = &f.error {
            out.push_str(&format!("\n{}:\n{e}\n", f.input.display()));
        }
    }
    out
}
