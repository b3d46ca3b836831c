//! `tvck lineage FILE`: where each part of a checkpoint's model state (encoder_A,
//! encoder_B, decoder_A, projection, controller …) also lives, read from the weights: the
//! other indexed checkpoints holding byte-identical tensors for it, oldest first; a frozen
//! encoder shows where it was frozen from. Tensors match by their hash whatever their
//! names (a migration renames keys), and a file counts as holding a part when it holds at
//! least half of the part's tensors ([`MIN_SHARED`]: a converted encoder keeps its
//! source's Linear layers and gains fresh LayerNorms; a lone shared tensor, such as a
//! LayerNorm still at its initial ones, is no lineage). Plus the migration record of a file
//! tvck converted (from which version, by which specs). Graphviz for a whole tree.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::index::{Entry, Index};
use super::ManagerError;

/// Another file holding a part's bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// Seconds since the Unix epoch.
    pub modified: u64,
    /// The part's name in that file (a migration may have renamed it).
    pub part: String,
    /// How many of the part's tensors it holds byte for byte.
    pub shared: usize,
    /// Whether it is older than the file asked about.
    pub older: bool,
}

/// One part of the file's model state.
#[derive(Debug, Clone, Serialize)]
pub struct PartLineage {
    pub part: String,
    pub tensors: usize,
    /// Other files with the same bytes, oldest first.
    pub holders: Vec<Holder>,
}

/// A tvck migration record, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
    pub specs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utc: Option<String>,
}

/// The lineage of one file.
#[derive(Debug, Clone, Serialize)]
pub struct Lineage {
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    pub parts: Vec<PartLineage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationInfo>,
}

fn migration_info(m: &serde_json::Value) -> MigrationInfo {
    let s = |k: &str| m.get(k).and_then(|v| v.as_str()).map(String::from);
    MigrationInfo {
        from_version: s("from_version"),
        to_version: s("to_version"),
        specs: m
            .get("specs")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.get("name").and_then(|n| n.as_str()).map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        metrics: m
            .get(crate::metrics::MIGRATION_METRICS)
            .and_then(|v| v.get("status"))
            .and_then(|v| v.as_str())
            .map(String::from),
        utc: s("utc"),
    }
}

/// Files ordered by age: modification time, then epoch, then path.
pub(crate) fn age(e: &Entry) -> (i64, Option<i64>, &str) {
    (e.stat.mtime_ns, e.summary.epoch, &e.path)
}

/// A file holds a part when it holds at least this share of the part's tensors.
pub const MIN_SHARED: f64 = 0.5;

/// Who holds which tensor bytes, over a set of entries.
pub(crate) struct Graph {
    /// Per entry: its parts, each with its tensors' hashes.
    pub parts: Vec<Vec<(String, Vec<[u8; 32]>)>>,
    /// Per tensor hash: (entry, part index) holding it.
    by_hash: HashMap<[u8; 32], Vec<(usize, usize)>>,
}

impl Graph {
    pub fn build(index: &Index, entries: &[Entry]) -> Result<Graph, ManagerError> {
        // A statement per entry: in one read transaction.
        let _read = index.reading()?;
        let mut parts = Vec::with_capacity(entries.len());
        let mut by_hash: HashMap<[u8; 32], Vec<(usize, usize)>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            let mut ps: BTreeMap<String, Vec<[u8; 32]>> = BTreeMap::new();
            if e.summary.model_state_key.is_some() {
                for t in index.tensors(e.id)? {
                    ps.entry(super::index::part_of(&t.name).to_string())
                        .or_default()
                        .push(t.hash);
                }
            }
            let ps: Vec<(String, Vec<[u8; 32]>)> = ps.into_iter().collect();
            for (pi, (_, hs)) in ps.iter().enumerate() {
                for h in hs {
                    let v = by_hash.entry(*h).or_default();
                    if v.last() != Some(&(i, pi)) {
                        v.push((i, pi));
                    }
                }
            }
            parts.push(ps);
        }
        Ok(Graph { parts, by_hash })
    }

    /// The other entries holding part `pi` of entry `k`: (entry, its part's name, tensors
    /// shared), oldest first.
    pub fn holders(&self, entries: &[Entry], k: usize, pi: usize) -> Vec<(usize, String, usize)> {
        let hashes = &self.parts[k][pi].1;
        let mut shared: BTreeMap<usize, (usize, BTreeMap<usize, usize>)> = BTreeMap::new();
        let mut uniq = hashes.clone();
        uniq.sort();
        uniq.dedup();
        for h in &uniq {
            let mut seen_files = Vec::new();
            for &(o, opi) in self.by_hash.get(h).into_iter().flatten() {
                if o == k {
                    continue;
                }
                let e = shared.entry(o).or_default();
                *e.1.entry(opi).or_default() += 1;
                if !seen_files.contains(&o) {
                    e.0 += 1;
                    seen_files.push(o);
                }
            }
        }
        let need = (uniq.len() as f64 * MIN_SHARED).ceil().max(1.0) as usize;
        let mut out: Vec<(usize, String, usize)> = shared
            .into_iter()
            .filter(|(_, (n, _))| *n >= need)
            .map(|(o, (n, by_part))| {
                let part = by_part
                    .iter()
                    .max_by_key(|(_, c)| **c)
                    .map(|(p, _)| self.parts[o][*p].0.clone())
                    .unwrap_or_default();
                (o, part, n)
            })
            .collect();
        out.sort_by(|a, b| age(&entries[a.0]).cmp(&age(&entries[b.0])));
        out
    }

    /// The origin of part `pi` of entry `k`: its oldest holder older than `k`.
    pub fn origin(&self, entries: &[Entry], k: usize, pi: usize) -> Option<usize> {
        self.holders(entries, k, pi)
            .into_iter()
            .map(|(o, _, _)| o)
            .find(|&o| age(&entries[o]) < age(&entries[k]))
    }
}

/// The lineage of `file` among every indexed file.
pub fn lineage(index: &Index, file: &Path) -> Result<Lineage, ManagerError> {
    let abs = file
        .canonicalize()
        .unwrap_or_else(|_| file.to_path_buf())
        .to_string_lossy()
        .into_owned();
    let entries = index.entries(&[])?;
    let Some(me) = entries.iter().position(|e| e.path == abs) else {
        return Err(ManagerError::NotIndexed { path: abs });
    };
    let graph = Graph::build(index, &entries)?;
    let e = &entries[me];
    let parts = graph.parts[me]
        .iter()
        .enumerate()
        .map(|(pi, (part, hashes))| PartLineage {
            part: part.clone(),
            tensors: hashes.len(),
            holders: graph
                .holders(&entries, me, pi)
                .into_iter()
                .map(|(i, part, shared)| {
                    let o = &entries[i];
                    Holder {
                        path: o.path.clone(),
                        version: o.summary.version.as_ref().map(|v| v.version.clone()),
                        epoch: o.summary.epoch,
                        modified: o.modified,
                        part,
                        shared,
                        older: age(o) < age(e),
                    }
                })
                .collect(),
        })
        .collect();
    Ok(Lineage {
        file: e.path.clone(),
        version: e.summary.version.as_ref().map(|v| v.version.clone()),
        fingerprint: e.summary.fingerprint.clone(),
        parts,
        migration: e.migration.as_ref().map(migration_info),
    })
}

/// Graphviz of every indexed file under `roots`: a node per file, an edge from each part's
/// origin (the oldest older holder of its bytes) to the file, labelled with the parts;
/// converted files say so in their label.
pub fn dot(index: &Index, roots: &[PathBuf]) -> Result<String, ManagerError> {
    let entries = index.entries(roots)?;
    let graph = Graph::build(index, &entries)?;
    // Each line escaped for the terminal (untrusted names), then for a DOT string.
    let quote = |s: &str| {
        crate::report::safe::value(s)
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    };
    let base = roots.first().and_then(|r| r.canonicalize().ok());
    let label = |e: &Entry| {
        let shown = base
            .as_ref()
            .map(|r| crate::discover::relative(r, Path::new(&e.path)))
            .unwrap_or_else(|| e.path.clone());
        let mut lines = vec![shown];
        if let Some(v) = &e.summary.version {
            lines.push(v.version.clone());
        }
        if let Some(m) = &e.migration {
            lines.push(format!(
                "converted by {}",
                migration_info(m).specs.join(" + ")
            ));
        }
        lines
            .iter()
            .map(|l| quote(l))
            .collect::<Vec<_>>()
            .join("\\n")
    };
    let mut out = String::from("digraph lineage {\n  rankdir=LR;\n  node [shape=box];\n");
    for (i, e) in entries.iter().enumerate() {
        out.push_str(&format!("  n{i} [label=\"{}\"];\n", label(e)));
    }
    let mut edges: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
    for k in 0..entries.len() {
        for (pi, (part, _)) in graph.parts[k].iter().enumerate() {
            if let Some(o) = graph.origin(&entries, k, pi) {
                edges.entry((o, k)).or_default().push(part.clone());
            }
        }
    }
    for ((o, k), ps) in edges {
        out.push_str(&format!(
            "  n{o} -> n{k} [label=\"{}\"];\n",
            quote(&ps.join(", "))
        ));
    }
    out.push_str("}\n");
    Ok(out)
}
