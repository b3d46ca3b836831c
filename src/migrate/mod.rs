//! `tvck convert`: migrations as data.
//!
//! * [`spec`]: the YAML migration specs (`migrations-specs/*.yaml`, embedded; more with
//!   `--specs DIR`) compiled into rules;
//! * [`pattern`]: anchored key patterns with named captures;
//! * [`ops`]: the tensor operations (initialisers, slice, pad, reshape, transpose);
//! * [`plan`]: a spec applied to one checkpoint's keys and shapes, checked whole (every
//!   source key matched once, every target key produced once, every shape as asserted);
//! * [`convert`]: executing a plan, building the output tree and writing it atomically,
//!   verified against the plan before it replaces anything;
//! * `tree`: edits of the non-model tree by dotted path (the entry rules);
//! * [`refine`]: measuring (and fitting) the converted model before it is written (the
//!   implementations are the trainer's).
//!
//! See docs/migrations.md for the spec format.

pub mod convert;
pub mod ops;
pub mod pattern;
pub mod plan;
pub mod refine;
pub mod spec;
pub(crate) mod tree;

use std::path::{Path, PathBuf};

pub use convert::{
    convert_file, convert_tree, default_output, execute, ConvertOptions, Converted, FileOutcome,
    OutputFormat, TreeReport,
};
pub use plan::{plan_checkpoint, EntryPlan, Plan, Row, StepPlan, Violation};
pub use refine::{MetricsStatus, Refine, RefineInput, Refined};
pub use spec::Spec;

use crate::arch::VersionId;

/// The specs shipped in the binary: (file name, text).
pub const EMBEDDED_SPECS: [(&str, &str); 3] = [
    (
        "v5_5_to_v5_11.yaml",
        include_str!("../../migrations-specs/v5_5_to_v5_11.yaml"),
    ),
    (
        "v5_11_to_v5_12_4.yaml",
        include_str!("../../migrations-specs/v5_11_to_v5_12_4.yaml"),
    ),
    (
        "v5_12_to_v5_12_4.yaml",
        include_str!("../../migrations-specs/v5_12_to_v5_12_4.yaml"),
    ),
];

/// Errors of migration.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A spec file does not parse or a rule is malformed.
    #[error("migration spec {origin}: {source}")]
    Spec {
        origin: String,
        #[source]
        source: spec::SpecError,
    },
    /// Two specs with the same name.
    #[error("two migration specs are named `{name}`: {first} and {second}")]
    DuplicateSpec {
        name: String,
        first: String,
        second: String,
    },
    /// A spec folder could not be read.
    #[error("cannot read the spec folder `{}`: {source}", path.display())]
    SpecDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// No chain of specs leads from the source version to the target.
    #[error("no migration path from {from} to {to} (specs: {available})")]
    NoPath {
        from: String,
        to: String,
        available: String,
    },
    /// The checkpoint's layout cannot be recognised.
    #[error("cannot tell which TernaryVAE layout `{}` holds{}", path.display(), detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    UnknownLayout {
        path: PathBuf,
        detail: Option<String>,
    },
    /// The source layout has parameters the spec does not accept.
    #[error("spec {spec} does not accept this {version} layout: {}", mismatches.join("; "))]
    NotAccepted {
        spec: String,
        version: String,
        mismatches: Vec<String>,
    },
    /// The spec, applied to this checkpoint, leaves keys unmatched, produces keys twice, misses
    /// target keys or breaks a shape assertion.
    #[error("{0}")]
    Violation(Box<Violation>),
    /// The file holds unsafe pickle globals: tvck does not rewrite it.
    #[error("`{}` holds unsafe pickle globals ({globals}); tvck will not convert it", path.display())]
    Unsafe { path: PathBuf, globals: String },
    /// A value of the checkpoint cannot be carried into the output.
    #[error("{0}")]
    Tree(String),
    #[error(transparent)]
    Read(#[from] crate::format::ReadError),
    #[error("{0}")]
    Format(#[from] crate::format::FormatError),
    #[error(transparent)]
    Write(#[from] crate::format::write::WriteError),
    /// The output would replace the input.
    #[error("the output `{}` is the input file", path.display())]
    SameFile { path: PathBuf },
    /// The output is a symbolic link.
    #[error("the output `{}` is a symbolic link; tvck does not write through links", path.display())]
    OutputIsLink { path: PathBuf },
    /// Measuring or fitting the converted model failed (or the fit did not reach its
    /// tolerances within its step budget).
    #[error("{message}")]
    Refine { message: String },
    /// A tensor operation failed (bad slice, …).
    #[error("rule {rule} on `{key}`: {source}")]
    Op {
        rule: usize,
        key: String,
        #[source]
        source: ops::OpError,
    },
}

/// The specs a conversion may use.
#[derive(Debug, Clone)]
pub struct SpecSet {
    pub specs: Vec<Spec>,
}

impl SpecSet {
    /// The embedded specs.
    pub fn embedded() -> Result<SpecSet, MigrateError> {
        let specs = EMBEDDED_SPECS
            .iter()
            .map(|(name, text)| {
                let origin = format!("embedded:{name}");
                Spec::parse(text, &origin).map_err(|source| MigrateError::Spec { origin, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut set = SpecSet { specs: Vec::new() };
        for s in specs {
            set.add(s, false)?;
        }
        Ok(set)
    }

    /// The embedded specs plus every `*.yaml` / `*.yml` of `dir`; a user spec with the name
    /// of an embedded one replaces it.
    pub fn with_dir(dir: &Path) -> Result<SpecSet, MigrateError> {
        let mut set = SpecSet::embedded()?;
        let read_dir = std::fs::read_dir(dir).map_err(|source| MigrateError::SpecDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = read_dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            })
            .collect();
        paths.sort();
        for p in paths {
            let origin = p.display().to_string();
            let text = std::fs::read_to_string(&p).map_err(|e| MigrateError::Spec {
                origin: origin.clone(),
                source: e.into(),
            })?;
            let spec = Spec::parse(&text, &origin)
                .map_err(|source| MigrateError::Spec { origin, source })?;
            set.add(spec, true)?;
        }
        Ok(set)
    }

    fn add(&mut self, spec: Spec, user: bool) -> Result<(), MigrateError> {
        if let Some(i) = self.specs.iter().position(|s| s.name == spec.name) {
            let existing = &self.specs[i];
            if user && existing.origin.starts_with("embedded:") {
                self.specs[i] = spec;
                return Ok(());
            }
            return Err(MigrateError::DuplicateSpec {
                name: spec.name,
                first: existing.origin.clone(),
                second: spec.origin,
            });
        }
        self.specs.push(spec);
        Ok(())
    }

    /// The shortest chain of specs from `from` to `to` (empty when they are the same layout).
    pub fn path(&self, from: VersionId, to: VersionId) -> Result<Vec<&Spec>, MigrateError> {
        if same_layout(from, to) {
            return Ok(Vec::new());
        }
        // Breadth-first over versions; ties broken by spec order.
        let mut prev: Vec<(VersionId, Option<(usize, usize)>)> = vec![(from, None)];
        let mut head = 0;
        while head < prev.len() {
            let (v, _) = prev[head];
            for (i, s) in self.specs.iter().enumerate() {
                if same_layout(s.from, v) && !prev.iter().any(|(u, _)| same_layout(*u, s.to)) {
                    prev.push((s.to, Some((head, i))));
                    if same_layout(s.to, to) {
                        let mut chain = Vec::new();
                        let mut at = prev.len() - 1;
                        while let (_, Some((p, spec))) = prev[at] {
                            chain.push(&self.specs[spec]);
                            at = p;
                        }
                        chain.reverse();
                        return Ok(chain);
                    }
                }
            }
            head += 1;
        }
        Err(MigrateError::NoPath {
            from: from.as_str().into(),
            to: to.as_str().into(),
            available: self
                .specs
                .iter()
                .map(|s| format!("{} ({} → {})", s.name, s.from.as_str(), s.to.as_str()))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// Versions whose state_dicts are interchangeable (v5.11 and its PartialFreeze variant).
pub fn same_layout(a: VersionId, b: VersionId) -> bool {
    use VersionId::*;
    a == b
        || matches!(
            (a, b),
            (V5_11, V5_11PartialFreeze) | (V5_11PartialFreeze, V5_11)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_specs_load_and_chain() {
        let set = SpecSet::embedded().unwrap();
        let names = |c: Vec<&Spec>| c.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(set.path(VersionId::V5_5, VersionId::V5_12_4).unwrap()),
            ["v5_5_to_v5_11", "v5_11_to_v5_12_4"]
        );
        assert_eq!(
            names(
                set.path(VersionId::V5_11PartialFreeze, VersionId::V5_12_4)
                    .unwrap()
            ),
            ["v5_11_to_v5_12_4"]
        );
        assert_eq!(
            names(set.path(VersionId::V5_12, VersionId::V5_12_4).unwrap()),
            ["v5_12_to_v5_12_4"]
        );
        assert!(set
            .path(VersionId::V5_12_4, VersionId::V5_12_4)
            .unwrap()
            .is_empty());
        let err = set.path(VersionId::V5_12_4, VersionId::V5_5).unwrap_err();
        assert!(err.to_string().contains("no migration path"), "{err}");
    }

    #[test]
    fn user_specs_replace_embedded_ones_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("# a user copy\n{}", EMBEDDED_SPECS[1].1);
        std::fs::write(dir.path().join("mine.yaml"), &text).unwrap();
        let set = SpecSet::with_dir(dir.path()).unwrap();
        assert_eq!(set.specs.len(), 3);
        assert!(set.specs.iter().any(|s| s.origin.ends_with("mine.yaml")));
        std::fs::write(dir.path().join("zbad.yaml"), "name: x\nrules: 3\n").unwrap();
        let err = SpecSet::with_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("zbad.yaml"), "{err}");
    }
}
