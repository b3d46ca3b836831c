//! Choosing a checkpoint for a training config: the one definition `tvck select` and
//! `tvck check --auto-fix` share.
//!
//! A candidate is any safe, readable checkpoint whose inferred version the config's model
//! class accepts (the compatibility matrix), checked key by key with the trainer's load
//! plan ([`check::load_plan`]); a checkpoint of a version the class does not accept is
//! listed when a migration spec chain leads to one it does (said as such: it needs
//! `convert` first, and never ranks before a loadable one).
//!
//! Ranking: loads without error, then exact layout fit, then metrics measured on the
//! candidate's current weights (a converted file whose metrics were never measured comes
//! after every measured one, whatever the file claims: its inherited metrics are never
//! read), then coverage ≥ [`FULL_FROM`](crate::metrics::coverage::FULL_FROM), then the [`RankBy`] metric, then newest,
//! then path.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;

use crate::arch::{self, KeyShape, VersionId};
use crate::check::{self, CheckReport};
use crate::config::TrainingConfig;
use crate::format::Checkpoint;
use crate::metrics::{Provenance, StoredMetrics};

use super::index::Index;
pub use super::source::Source;
use super::Query;

/// Evaluates a checkpoint file on all 19,683 operations (the trainer's `tvck eval`).
pub trait Measure: Sync {
    fn measure(&self, path: &Path) -> Result<StoredMetrics, MeasureError>;
}

/// A candidate that could not be evaluated.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct MeasureError(pub String);

/// [`Candidate::metrics`] of a candidate evaluated by this run.
pub const MEASURED_NOW: &str = "measured_now";

/// The metric candidates are ranked by after fit, measurement and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum RankBy {
    /// hierarchy_B, most negative first.
    #[default]
    #[serde(rename = "hierarchy_B")]
    HierarchyB,
    #[serde(rename = "hierarchy_A")]
    HierarchyA,
    #[serde(rename = "Q")]
    Q,
    #[serde(rename = "coverage")]
    Coverage,
    #[serde(rename = "richness")]
    Richness,
    #[serde(rename = "dist_corr")]
    DistCorr,
}

impl RankBy {
    pub const ALL: [RankBy; 6] = [
        RankBy::HierarchyB,
        RankBy::HierarchyA,
        RankBy::Q,
        RankBy::Coverage,
        RankBy::Richness,
        RankBy::DistCorr,
    ];

    /// The metric's name (the `--where` field).
    pub fn name(self) -> &'static str {
        match self {
            RankBy::HierarchyB => "hierarchy_B",
            RankBy::HierarchyA => "hierarchy_A",
            RankBy::Q => "Q",
            RankBy::Coverage => "coverage",
            RankBy::Richness => "richness",
            RankBy::DistCorr => "dist_corr",
        }
    }

    /// A metric name (case-insensitive; `hierarchy` is hierarchy_B).
    pub fn parse(s: &str) -> Option<RankBy> {
        let f = super::query::field(s)?;
        RankBy::ALL.into_iter().find(|r| r.name() == f)
    }

    /// Whether larger values are better.
    pub(crate) fn higher_is_better(self) -> bool {
        !matches!(self, RankBy::HierarchyA | RankBy::HierarchyB)
    }

    pub(crate) fn value(self, m: &StoredMetrics) -> Option<f64> {
        m.by_name(self.name())
    }
}

/// A checkpoint considered for `frozen_checkpoint.path`.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// The path as it would be written in the config.
    pub path: String,
    pub version: VersionId,
    pub layout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hierarchy: Option<f64>,
    /// The value of the ranking metric when it is not coverage or hierarchy_B.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank_value: Option<f64>,
    /// Where the metrics come from: stored by training, measured after conversion,
    /// `measured_now` (evaluated by this run), or `not_measured` (a converted file never
    /// evaluated: no values are used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<&'static str>,
    /// Seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified: Option<u64>,
    /// Loads without a size mismatch, frozen parts complete.
    pub fits: bool,
    /// Every key provided and used.
    pub exact: bool,
    /// The migration specs that would make it loadable, for a version the class does not
    /// accept (it needs `convert` first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub migration: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Why it ranks where it does.
    pub why: String,
}

/// The path to write in the config: relative to the working directory when inside it
/// (the trainer resolves relative to its working directory first), else absolute.
pub fn config_path_text(path: &Path, cwd: &Path) -> String {
    let cwd = cwd.canonicalize().unwrap_or_else(|_| cwd.to_path_buf());
    let p = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    canonical_path_text(&p, &cwd).into_owned()
}

/// [`config_path_text`] of a path and a working directory both already canonical (no
/// file system call: ranking thousands of candidates resolved every path component of
/// each with `readlink`). Borrowed from `path` unless it has to change (a backslash, or
/// bytes that are not UTF-8): the ranking holds one per candidate.
fn canonical_path_text<'a>(path: &'a Path, cwd: &Path) -> Cow<'a, str> {
    let text = match (path.to_str(), cwd.to_str()) {
        (Some(p), Some(c)) => Cow::Borrowed(strip_canonical(p, c)),
        _ => path.strip_prefix(cwd).unwrap_or(path).to_string_lossy(),
    };
    if text.contains('\\') {
        Cow::Owned(text.replace('\\', "/"))
    } else {
        text
    }
}

/// `path` relative to `cwd` when under it (`Path::strip_prefix`), for two canonical paths
/// as text: with no `.`, `..`, repeated or trailing separator in either, a prefix of the
/// text ending at a separator is a prefix of the components (and a comparison of bytes
/// is much cheaper than one of components, for thousands of candidates).
fn strip_canonical<'a>(path: &'a str, cwd: &str) -> &'a str {
    if path == cwd {
        return "";
    }
    match path.strip_prefix(cwd) {
        Some(rest) if cwd.ends_with('/') => rest,
        Some(rest) => rest.strip_prefix('/').unwrap_or(path),
        None => path,
    }
}

/// The `why` text: the fit, then what the metrics say and where they come from.
fn explain(fit: &str, c: &Candidate, by: RankBy) -> String {
    let mut why = vec![fit.to_string()];
    let origin = match c.metrics {
        Some(MEASURED_NOW) => " (measured now)",
        Some("measured") | Some("fitted") => " (measured after conversion)",
        _ => "",
    };
    if c.metrics == Some(Provenance::NotMeasured.as_str()) {
        why.push("not measured since conversion".into());
    } else {
        match c.coverage {
            Some(v) if v >= crate::metrics::coverage::FULL_FROM => {
                why.push(format!("coverage {:.2}%{origin}", v * 100.0))
            }
            Some(v) => why.push(format!("low coverage {:.2}%{origin}", v * 100.0)),
            None => why.push("no stored coverage".into()),
        }
    }
    if let Some(h) = c.hierarchy {
        why.push(format!("hierarchy {h:.3}"));
    }
    if let Some(v) = c.rank_value {
        why.push(format!("{} {v:.3}", by.name()));
    }
    why.join(", ")
}

/// Every safe, readable checkpoint under `roots` with a TernaryVAE layout, read from the
/// files.
pub fn sources_from_files(roots: &[PathBuf]) -> Vec<Source> {
    let mut paths: Vec<PathBuf> = roots
        .iter()
        .flat_map(|r| crate::discover::discover(r, crate::discover::Walk::everything()).files)
        .collect();
    paths.sort();
    paths.dedup();
    paths
        .par_iter()
        .filter_map(|p| {
            let ckpt = Checkpoint::open(p).ok()?;
            if ckpt.has_unsafe_globals() {
                return None;
            }
            let best = arch::infer_checkpoint(&ckpt).best?;
            let path = p.canonicalize().unwrap_or_else(|_| p.clone());
            let modified = std::fs::metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            Some(Source {
                path,
                version: best.version,
                layout: Arc::from(best.params.summary()),
                shapes: arch::state_shapes(&ckpt).into(),
                metrics: StoredMetrics::from_root(&ckpt.root),
                epoch: crate::metrics::epoch(&ckpt.root),
                size: ckpt.file_size,
                converted: ckpt.root.get(crate::metrics::MIGRATION).is_some(),
                modified,
                aliases: Vec::new(),
            })
        })
        .collect()
}

/// The sources under `roots`: from the index when it holds every file under them
/// unchanged (then `true`), else read from the files. Freshness is judged on the stat
/// columns alone; the sources are read from the query columns and layouts of the rows of
/// versioned, readable, safe files (no summary decoded).
pub fn sources(index: Option<&Index>, roots: &[PathBuf]) -> (Vec<Source>, bool) {
    if let Some(Ok(Some(s))) = index.map(|i| i.fresh_candidates(roots)) {
        return (s, true);
    }
    (sources_from_files(roots), false)
}

/// Rank the sources for a checked config; with `measure`, each one is evaluated first and
/// ranked by what was measured. Empty when the config's model cannot be resolved.
pub fn rank(
    cfg: &TrainingConfig,
    report: &CheckReport,
    sources: &[Source],
    cwd: &Path,
    measure: Option<&dyn Measure>,
    by: RankBy,
) -> Vec<Candidate> {
    let mut ranked = rank_unordered(cfg, report, sources, cwd, measure, by);
    first_in_order(&mut ranked, None, by);
    ranked
        .par_iter()
        .map(|r| r.candidate(&sources[r.source].aliases, by))
        .collect()
}

/// A ranked source: what the order compares, and its version and layout (shared). The
/// rest of its [`Candidate`] (aliases, migration names, the reasons' text) is made only
/// when it is listed ([`Ranked::candidate`]): over thousands of candidates, making them
/// cost more than ranking them.
#[derive(Clone)]
struct Ranked<'s> {
    /// Its place in the sources (or in the rows read from the index).
    source: usize,
    /// The path as it would be written in the config.
    path: Cow<'s, str>,
    version: VersionId,
    layout: Arc<str>,
    fits: bool,
    exact: bool,
    /// What the load plan says (shared by the candidates of one layout).
    fit: Arc<str>,
    /// The migration chain that would make a version the class does not accept loadable
    /// (shared by the candidates of one version).
    migration: Option<Arc<[String]>>,
    coverage: Option<f64>,
    hierarchy: Option<f64>,
    rank_value: Option<f64>,
    metrics: Option<&'static str>,
    modified: Option<u64>,
    /// The reason of a candidate that could not be measured.
    why: Option<String>,
}

impl<'s> Ranked<'s> {
    /// The ranked form of a candidate of `version` and `layout`, of `class`, whose stored
    /// metrics are `m`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        source: usize,
        path: Cow<'s, str>,
        version: VersionId,
        layout: Arc<str>,
        class: ClassFit,
        m: &StoredMetrics,
        modified: Option<u64>,
        by: RankBy,
    ) -> Ranked<'s> {
        Ranked {
            source,
            path,
            version,
            layout,
            fits: class.fits,
            exact: class.exact,
            fit: class.fit,
            migration: class.migration,
            coverage: m.coverage,
            hierarchy: m.hierarchy,
            rank_value: if matches!(by, RankBy::HierarchyB | RankBy::Coverage) {
                None
            } else {
                by.value(m)
            },
            metrics: m.provenance.map(Provenance::as_str),
            modified,
            why: None,
        }
    }

    /// The candidate, with its aliases and the reasons for its place.
    fn candidate(&self, aliases: &[String], by: RankBy) -> Candidate {
        let mut c = Candidate {
            path: self.path.to_string(),
            version: self.version,
            layout: self.layout.to_string(),
            coverage: self.coverage,
            hierarchy: self.hierarchy,
            rank_value: self.rank_value,
            metrics: self.metrics,
            modified: self.modified,
            fits: self.fits,
            exact: self.exact,
            migration: self
                .migration
                .as_deref()
                .map(<[String]>::to_vec)
                .unwrap_or_default(),
            aliases: aliases.to_vec(),
            why: String::new(),
        };
        c.why = match &self.why {
            Some(why) => why.clone(),
            None => explain(&self.fit, &c, by),
        };
        c
    }
}

/// What the load plan of a (version, layout) says for a config: the fit of every
/// candidate of that class.
#[derive(Clone)]
struct ClassFit {
    fits: bool,
    exact: bool,
    /// What the load plan says (or the conversion needed).
    fit: Arc<str>,
    /// The migration chain that would make a version the class does not accept loadable.
    migration: Option<Arc<[String]>>,
}

/// The fit of each (version, layout) for one config, each worked out once: a tree of
/// thousands of epochs has a few layouts, and a plan is built from the catalog's whole
/// layout.
struct Classifier<'c> {
    cfg: &'c TrainingConfig,
    class: &'c str,
    target_version: VersionId,
    target_params: &'c arch::LayoutParams,
    specs: Option<crate::migrate::SpecSet>,
    plans: HashMap<VersionId, HashMap<Arc<[KeyShape]>, ClassFit>>,
    /// The sources of one layout read from the index share its shapes: the shared list's
    /// address is looked up first (hashing a whole layout per candidate cost more than the
    /// ranking).
    by_address: HashMap<(VersionId, *const KeyShape, usize), ClassFit>,
    /// The migration chain of each source version the class does not accept; `None` when
    /// there is none.
    chains: HashMap<VersionId, Option<ClassFit>>,
}

impl<'c> Classifier<'c> {
    /// `None` when the config's model cannot be resolved (nothing is a candidate).
    fn new(cfg: &'c TrainingConfig, report: &'c CheckReport) -> Option<Classifier<'c>> {
        let (Some(class), Some(target_version), Some(target_params)) = (
            report.model.class.as_deref(),
            report.model.version,
            report.model.params.as_ref(),
        ) else {
            return None;
        };
        Some(Classifier {
            cfg,
            class,
            target_version,
            target_params,
            specs: crate::migrate::SpecSet::embedded().ok(),
            plans: HashMap::new(),
            by_address: HashMap::new(),
            chains: HashMap::new(),
        })
    }

    /// The fit of a checkpoint of `version` whose model state is `shapes`; `None` when it
    /// is no candidate (a version the class does not accept, with no migration path to one
    /// it does).
    fn fit(&mut self, version: VersionId, shapes: &Arc<[KeyShape]>) -> Option<ClassFit> {
        if !arch::accepts_source(self.class, version) {
            // A known migration path to the config's own version, said as such.
            let (specs, class, target) = (&self.specs, self.class, self.target_version);
            return self
                .chains
                .entry(version)
                .or_insert_with(|| {
                    let chain = specs.as_ref()?.path(version, target).ok()?;
                    if chain.is_empty() || !arch::accepts_source(class, target) {
                        return None;
                    }
                    let names: Vec<String> = chain.iter().map(|sp| sp.name.clone()).collect();
                    let fit = format!(
                        "needs conversion to {} first ({})",
                        target.as_str(),
                        names.join(" → ")
                    );
                    Some(ClassFit {
                        fits: false,
                        exact: false,
                        fit: Arc::from(fit),
                        migration: Some(Arc::from(names)),
                    })
                })
                .clone();
        }
        let address = (version, shapes.as_ptr(), shapes.len());
        if let Some(v) = self.by_address.get(&address) {
            return Some(v.clone());
        }
        let (cfg, target_version, target_params) =
            (self.cfg, self.target_version, self.target_params);
        let plans = self.plans.entry(version).or_default();
        if let Some(v) = plans.get(&shapes[..]) {
            let v = v.clone();
            self.by_address.insert(address, v.clone());
            return Some(v);
        }
        let v = plans
            .entry(shapes.clone())
            .or_insert_with(|| {
                let plan = check::load_plan(cfg, shapes, version, target_version, target_params);
                let fit = if plan.exact() {
                    "exact layout fit".to_string()
                } else if plan.fits() {
                    format!(
                        "loads ({} mapped, {} initialised, {} ignored)",
                        plan.mapped.len(),
                        plan.keys.missing.len(),
                        plan.keys.unexpected.len()
                    )
                } else {
                    format!(
                        "does not fit: {} size mismatches",
                        plan.keys.mismatched.len()
                    )
                };
                ClassFit {
                    fits: plan.fits(),
                    exact: plan.exact(),
                    fit: Arc::from(fit),
                    migration: None,
                }
            })
            .clone();
        self.by_address.insert(address, v.clone());
        Some(v)
    }
}

/// [`rank`] without the order (the sources' order) and without the candidates made.
fn rank_unordered<'s>(
    cfg: &TrainingConfig,
    report: &CheckReport,
    sources: &'s [Source],
    cwd: &Path,
    measure: Option<&dyn Measure>,
    by: RankBy,
) -> Vec<Ranked<'s>> {
    let Some(mut classifier) = Classifier::new(cfg, report) else {
        return Vec::new();
    };
    let cwd = cwd.canonicalize().unwrap_or_else(|_| cwd.to_path_buf());
    let mut out: Vec<Ranked> = Vec::with_capacity(sources.len());
    for (source, s) in sources.iter().enumerate() {
        let Some(class) = classifier.fit(s.version, &s.shapes) else {
            continue;
        };
        out.push(Ranked::new(
            source,
            canonical_path_text(&s.path, &cwd),
            s.version,
            s.layout.clone(),
            class,
            &s.metrics,
            s.modified,
            by,
        ));
    }
    if let Some(m) = measure {
        for r in &mut out {
            if r.migration.is_some() {
                continue;
            }
            match m.measure(&sources[r.source].path) {
                Ok(measured) => {
                    r.coverage = measured.coverage;
                    r.hierarchy = measured.hierarchy;
                    if r.rank_value.is_some()
                        || !matches!(by, RankBy::HierarchyB | RankBy::Coverage)
                    {
                        r.rank_value = by.value(&measured);
                    }
                    r.metrics = Some(MEASURED_NOW);
                }
                Err(e) => {
                    r.coverage = None;
                    r.hierarchy = None;
                    r.rank_value = None;
                    r.metrics = Some(Provenance::NotMeasured.as_str());
                    r.why = Some(format!("{}, could not be measured: {e}", r.fit));
                }
            }
        }
    }
    out
}

/// The selection among ranked candidates: the first in the order that fits, else the
/// first a conversion would make loadable.
fn selection<'r, 's>(ranked: &'r [Ranked<'s>], by: RankBy) -> Option<&'r Ranked<'s>> {
    let pick = |p: fn(&Ranked) -> bool| {
        ranked
            .iter()
            .filter(|r| p(r))
            .min_by(|a, b| order(a, b, by))
    };
    pick(|r| r.fits).or_else(|| pick(|r| r.migration.is_some()))
}

/// Keep the first `limit` of `ranked` in the ranking's order (every one when `None`): only
/// those are sorted (the order is total: no two candidates tie).
fn first_in_order(ranked: &mut Vec<Ranked<'_>>, limit: Option<usize>, by: RankBy) {
    let cmp = |a: &Ranked, b: &Ranked| order(a, b, by);
    let keep = limit.unwrap_or(ranked.len()).min(ranked.len());
    if keep < ranked.len() {
        if keep > 0 {
            ranked.select_nth_unstable_by(keep - 1, cmp);
        }
        ranked.truncate(keep);
    }
    // (No two candidates tie: an unstable sort gives the one order.)
    ranked.par_sort_unstable_by(cmp);
}

/// The ranking (see the module's documentation).
fn order(a: &Ranked<'_>, b: &Ranked<'_>, by: RankBy) -> Ordering {
    let healthy = |r: &Ranked| {
        r.coverage
            .is_some_and(|v| v >= crate::metrics::coverage::FULL_FROM)
    };
    let measured = |r: &Ranked| r.metrics != Some(Provenance::NotMeasured.as_str());
    let loadable = |r: &Ranked| r.migration.is_none();
    let value = |r: &Ranked| match by {
        RankBy::HierarchyB => r.hierarchy,
        RankBy::Coverage => r.coverage,
        _ => r.rank_value,
    };
    // Best first; a missing value last.
    let metric = match (value(a), value(b)) {
        (Some(x), Some(y)) if by.higher_is_better() => y.total_cmp(&x),
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    loadable(b)
        .cmp(&loadable(a))
        .then(b.fits.cmp(&a.fits))
        .then(b.exact.cmp(&a.exact))
        .then(measured(b).cmp(&measured(a)))
        .then(healthy(b).cmp(&healthy(a)))
        .then(metric)
        .then(b.modified.cmp(&a.modified))
        .then(a.path.cmp(&b.path))
}

/// The result of `tvck select`.
#[derive(Debug, Clone, Serialize)]
pub struct Selection {
    pub config: String,
    pub by: RankBy,
    /// Folders searched.
    pub roots: Vec<PathBuf>,
    /// Whether the index answered (every file under the roots indexed and unchanged).
    pub from_index: bool,
    /// The best candidate that loads (or, when none does, the best one a conversion would
    /// make loadable), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected: Option<Candidate>,
    /// How many candidates were ranked.
    pub ranked: usize,
    /// The candidates, best first: every one, or the first few the caller asked for.
    pub candidates: Vec<Candidate>,
}

impl Selection {
    /// Whether a checkpoint the trainer loads as it is was found.
    pub fn found(&self) -> bool {
        self.selected
            .as_ref()
            .is_some_and(|c| c.fits && c.migration.is_empty())
    }
}

/// `tvck select`: the best checkpoint under `roots` for a checked config, keeping only
/// candidates `filter` matches (evaluated on the index's entries when there is an index,
/// else on what the files say), and listing the first `limit` of them (every one when
/// `None`).
///
/// With an index that holds every file under one root unchanged, the candidates are
/// ranked and listed from a few columns of their rows ([`select_in_index`]); else every
/// candidate is read, then ranked. Both rank with [`order`], and give the same selection
/// in the same order.
#[allow(clippy::too_many_arguments)]
pub fn select(
    cfg: &TrainingConfig,
    report: &CheckReport,
    roots: &[PathBuf],
    index: Option<&Index>,
    cwd: &Path,
    by: RankBy,
    limit: Option<usize>,
    filter: Option<&Query>,
) -> Selection {
    let (mut all, from_index) = match (index, roots) {
        (Some(index), [root]) => {
            match select_in_index(cfg, report, root, index, cwd, by, limit, filter) {
                Some(sel) => return sel,
                // The index does not hold the tree unchanged (or cannot answer), which that
                // walk has just found: the files, without walking the tree again.
                None => (sources_from_files(roots), false),
            }
        }
        _ => sources(index, roots),
    };
    if let Some(q) = filter {
        // The index's entries when it answers (what `ls --where` lists), else the files'.
        let canon: Vec<PathBuf> = roots.iter().filter_map(|d| d.canonicalize().ok()).collect();
        match index.map(|ix| ix.query_paths(&canon, Some(q))) {
            Some(Ok(paths)) => {
                let allowed: std::collections::HashSet<String> = paths.into_iter().collect();
                all.retain(|s| allowed.contains(s.path.to_string_lossy().as_ref()));
            }
            _ => all.retain(|s| q.matches(s)),
        }
    }
    let ranked = rank_unordered(cfg, report, &all, cwd, None, by);
    listing(cfg, by, roots.to_vec(), from_index, ranked, limit, |r| {
        &all[r.source].aliases
    })
}

/// The [`Selection`] of the candidates `ranked` (unordered) for `cfg` by `by` under
/// `roots` (`from_index`: whether the index answered), listing the first `limit` (every one
/// when `None`); `aliases` gives a ranked candidate's aliases.
fn listing<'s, 'a>(
    cfg: &TrainingConfig,
    by: RankBy,
    roots: Vec<PathBuf>,
    from_index: bool,
    mut ranked: Vec<Ranked<'s>>,
    limit: Option<usize>,
    aliases: impl Fn(&Ranked<'s>) -> &'a [String] + Sync,
) -> Selection {
    let total = ranked.len();
    let selected = selection(&ranked, by).map(|r| r.candidate(aliases(r), by));
    first_in_order(&mut ranked, limit, by);
    let candidates = ranked
        .par_iter()
        .map(|r| r.candidate(aliases(r), by))
        .collect();
    Selection {
        config: cfg.path.display().to_string(),
        by,
        roots,
        from_index,
        selected,
        ranked: total,
        candidates,
    }
}

/// [`select`] under one root from an index that holds every file under it unchanged,
/// listing the first `limit` (every one when `None`): each candidate ranked and listed
/// from what its row says of its version, layout, provenance, the metrics the order
/// compares and its time ([`Index::fresh_candidate_rows`]), no source read whole. `None`
/// when the index does not hold the tree unchanged or cannot answer.
#[allow(clippy::too_many_arguments)]
fn select_in_index(
    cfg: &TrainingConfig,
    report: &CheckReport,
    root: &Path,
    index: &Index,
    cwd: &Path,
    by: RankBy,
    limit: Option<usize>,
    filter: Option<&Query>,
) -> Option<Selection> {
    let canon = root.canonicalize().ok()?;
    let cwd = cwd.canonicalize().unwrap_or_else(|_| cwd.to_path_buf());
    let aliases = index.aliases_by_path().ok()?;
    let mut classifier = Classifier::new(cfg, report);
    let mut metrics = vec![RankBy::Coverage.name(), RankBy::HierarchyB.name()];
    if !metrics.contains(&by.name()) {
        metrics.push(by.name());
    }
    // The fit of each (version text, model-state shapes, layout text) met, looked up by
    // the last one first (the version parsed and the layout's text made once per class,
    // not per row).
    type Class = (
        String,
        Arc<[KeyShape]>,
        Arc<str>,
        Option<(VersionId, ClassFit)>,
    );
    let mut classes: Vec<Class> = Vec::new();
    let mut last = usize::MAX;
    // The row of each ranked candidate; its `Ranked::source` is its place here.
    let mut rows: Vec<usize> = Vec::new();
    let mut ranked: Vec<Ranked<'static>> = Vec::new();
    let paths = index
        .fresh_candidate_rows(&canon, filter, &metrics, |row| {
            let Some(classifier) = classifier.as_mut() else {
                return;
            };
            let hit = |c: &Class| {
                c.0 == row.version && Arc::ptr_eq(&c.1, row.shapes) && &*c.2 == row.layout
            };
            if !classes.get(last).is_some_and(hit) {
                last = classes.iter().position(hit).unwrap_or_else(|| {
                    // A version this tvck's catalog does not name is no candidate.
                    let fit = row
                        .version
                        .parse::<VersionId>()
                        .ok()
                        .and_then(|v| classifier.fit(v, row.shapes).map(|f| (v, f)));
                    classes.push((
                        row.version.to_string(),
                        row.shapes.clone(),
                        Arc::from(row.layout),
                        fit,
                    ));
                    classes.len() - 1
                });
            }
            let (_, _, layout, Some((version, class))) = &classes[last] else {
                return;
            };
            ranked.push(Ranked::new(
                rows.len(),
                Cow::Borrowed(""),
                *version,
                layout.clone(),
                class.clone(),
                &row.metrics,
                Some(row.modified),
                by,
            ));
            rows.push(row.row);
        })
        .ok()??;
    let mut ranked: Vec<Ranked<'_>> = ranked;
    for r in &mut ranked {
        r.path = canonical_path_text(Path::new(&paths[rows[r.source]]), &cwd);
    }
    let roots = vec![root.to_path_buf()];
    Some(listing(cfg, by, roots, true, ranked, limit, |r| {
        aliases
            .get(&paths[rows[r.source]])
            .map_or(&[], Vec::as_slice)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canonical_path_is_made_relative_as_strip_prefix_makes_it() {
        let cases = [
            ("/a/b/c.pt", "/a/b"),
            ("/a/b/c.pt", "/a"),
            ("/a/bc/d.pt", "/a/b"),
            ("/a/b", "/a/b"),
            ("/a/b.pt", "/a/b"),
            ("/x/y.pt", "/"),
            ("/", "/"),
            ("/a/b/c.pt", "/z"),
            ("/a/é/ü.pt", "/a/é"),
            ("/a/b\\c/d.pt", "/a"),
        ];
        for (path, cwd) in cases {
            let want = Path::new(path)
                .strip_prefix(cwd)
                .map_or(path.to_string(), |p| p.to_string_lossy().into_owned());
            assert_eq!(strip_canonical(path, cwd), want, "{path} under {cwd}");
            assert_eq!(
                canonical_path_text(Path::new(path), Path::new(cwd)),
                want.replace('\\', "/"),
                "{path} under {cwd}"
            );
        }
    }
}
