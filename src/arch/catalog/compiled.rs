//! The compiled catalog: versions, model classes, components and their entries, the
//! layout cache, and the lookups on them.

use super::*;

/// A model version: its identity, parameter domains and layout.
#[derive(Debug, Clone)]
pub struct Version {
    pub id: VersionId,
    /// Display name (`v5.11 (PartialFreeze)`).
    pub display: String,
    /// The compatibility-matrix id this version counts as when it is a source checkpoint.
    pub family: VersionId,
    /// One-line description.
    pub doc: String,
    /// The Python model classes that build this version (from `model_classes[].builds`).
    pub model_classes: Vec<String>,
    /// The parameters this version uses, with their domains.
    pub params: Vec<ParamDomain>,
    pub(super) layout: Vec<Entry>,
}

impl Version {
    /// The domain of `param`, if this version uses it.
    pub fn domain(&self, param: Param) -> Option<&ParamDomain> {
        self.params.iter().find(|d| d.param == param)
    }

    /// The canonical parameters (each used parameter at its default, the rest 0/false).
    pub fn defaults(&self) -> LayoutParams {
        let mut p = LayoutParams::default();
        for d in &self.params {
            d.param.set(&mut p, d.default);
        }
        p
    }

    /// `params` restricted to this version: unused parameters reset to 0/false/frozen.
    /// (Used parameters are kept as they are, even outside the domain.)
    pub fn restrict(&self, params: &LayoutParams) -> LayoutParams {
        let mut p = LayoutParams::default();
        for d in &self.params {
            d.param.set(&mut p, d.param.get(params));
        }
        p
    }

    /// Check `params` against this version's domains (unused parameters are ignored).
    pub fn check(&self, params: &LayoutParams) -> Result<(), ArchError> {
        for d in &self.params {
            let v = d.param.get(params);
            if !d.admits(v) {
                return Err(ArchError::ParamOutOfDomain {
                    version: self.id.as_str(),
                    param: d.param.name(),
                    value: d.param.format_value(v),
                    domain: d.describe(),
                });
            }
        }
        Ok(())
    }

    /// How many non-width parameters of `params` differ from this version's canonical
    /// values (0 = the canonical configuration).
    pub fn deviations(&self, params: &LayoutParams) -> usize {
        self.params
            .iter()
            .filter(|d| !d.param.is_dimension() && d.param.get(params) != d.default)
            .count()
    }
}

/// A Python model class and its row of the compatibility matrix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelClass {
    /// Class name as in `config.model.name` (`TernaryVAEV5_11_PartialFreeze`).
    pub name: String,
    /// The versions this class builds.
    pub builds: Vec<VersionId>,
    /// Whether a config of this class needs `frozen_checkpoint.path`.
    pub requires_frozen: bool,
    /// The checkpoint versions (matrix ids, see [`Version::family`]) it may load.
    pub accepts: Vec<VersionId>,
}

#[derive(Debug, Clone)]
pub(super) struct Component {
    pub(super) name: String,
    pub(super) layout: Vec<Entry>,
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) when: Option<Expr>,
    pub(super) kind: EntryKind,
}

#[derive(Debug, Clone)]
pub(super) enum EntryKind {
    Tensor {
        name: String,
        shape: Vec<Expr>,
    },
    Linear {
        name: String,
        out: Expr,
        inp: Expr,
        bias: Expr,
    },
    LayerNorm {
        name: String,
        dim: Expr,
    },
    Sequential {
        name: String,
        layers: Vec<Layer>,
    },
    Component {
        index: usize,
        at: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub(super) out: Expr,
    pub(super) inp: Expr,
    pub(super) bias: Expr,
    pub(super) norm: Expr,
    pub(super) act: Expr,
    pub(super) dropout: Expr,
    pub(super) repeat: Expr,
    pub(super) when: Option<Expr>,
}

/// The parsed, validated catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub(super) versions: Vec<Version>,
    /// Index into `versions` by [`VersionId::ordinal`].
    pub(super) by_id: [usize; VersionId::ALL.len()],
    pub(super) model_classes: Vec<ModelClass>,
    pub(super) components: Vec<Component>,
    pub(super) derived: Vec<(String, Expr)>,
    /// Expression variables: the parameters' names, then the derived ones ([`Catalog::env`]).
    pub(super) vars: Vec<String>,
    pub(super) layouts: LayoutCache,
}

/// An expected layout generated once and shared (see [`Catalog::layout`]).
#[derive(Debug)]
pub(crate) struct Layout {
    /// The keys and shapes, as [`Catalog::expected_layout`] returns them.
    pub keys: Vec<KeyShape>,
    /// Whether `keys[i]` is the first occurrence of its key.
    pub first: Vec<bool>,
    /// [`key_hash`] of each key.
    pub hashes: Vec<u64>,
}

/// A hash of a state_dict key, the same for the whole process (randomly keyed, so files
/// cannot choose colliding keys).
pub(crate) fn key_hash(key: &str) -> u64 {
    key_hasher().hash_one(key)
}

/// The hasher of [`key_hash`] (fetch it once to hash many keys).
pub(crate) fn key_hasher() -> &'static std::collections::hash_map::RandomState {
    pub(super) static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    STATE.get_or_init(std::collections::hash_map::RandomState::new)
}

impl Layout {
    pub(super) fn new(keys: Vec<KeyShape>) -> Layout {
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        let first = keys.iter().map(|(k, _)| seen.insert(k.as_str())).collect();
        let hasher = key_hasher();
        let hashes = keys
            .iter()
            .map(|(k, _)| hasher.hash_one(k.as_str()))
            .collect();
        Layout {
            keys,
            first,
            hashes,
        }
    }
}

/// Most layouts kept by a [`LayoutCache`]; parameters come from untrusted files, so the
/// cache is emptied when it is full rather than allowed to grow.
pub(super) const MAX_CACHED_LAYOUTS: usize = 256;

/// Layouts by (version, restricted params). Inference asks for the same few layouts for
/// every file of a scan.
#[derive(Default)]
pub(super) struct LayoutCache(Mutex<HashMap<(VersionId, LayoutParams), Arc<Layout>>>);

impl Clone for LayoutCache {
    fn clone(&self) -> Self {
        LayoutCache::default()
    }
}

impl fmt::Debug for LayoutCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LayoutCache")
    }
}

impl Catalog {
    /// All versions, in catalog order (also the tie-break order of inference).
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// The version `id` (every id is defined: checked at load).
    pub fn version(&self, id: VersionId) -> &Version {
        &self.versions[self.by_id[id.ordinal()]]
    }

    /// All model classes with their compatibility-matrix rows.
    pub fn model_classes(&self) -> &[ModelClass] {
        &self.model_classes
    }

    /// The model class named `name` (a module path such as `models.TernaryVAEV5_11` is
    /// matched by its last component).
    pub fn model_class(&self, name: &str) -> Option<&ModelClass> {
        let name = name.trim();
        let short = name.rsplit('.').next().unwrap_or(name);
        self.model_classes
            .iter()
            .find(|c| c.name == name || c.name == short)
    }

    /// Every state_dict key of `version` built with `params`, with its shape, in module
    /// (state_dict) order. Parameters the version does not use are ignored; used ones are
    /// taken as given, even outside the version's domain (see [`Version::check`]).
    pub fn expected_layout(&self, version: VersionId, params: &LayoutParams) -> Vec<KeyShape> {
        let v = self.version(version);
        let env = self.env(&v.restrict(params));
        let mut out = Vec::with_capacity(128);
        let mut prefix = String::new();
        self.emit(&v.layout, &mut prefix, &env, &mut out, 0);
        out
    }

    /// [`expected_layout`](Self::expected_layout), generated once per (version, params)
    /// and shared.
    pub(crate) fn layout(&self, version: VersionId, params: &LayoutParams) -> Arc<Layout> {
        let key = (version, self.version(version).restrict(params));
        let cached = self
            .layouts
            .0
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned());
        if let Some(l) = cached {
            return l;
        }
        let keys = self.expected_layout(version, &key.1);
        let Ok(mut m) = self.layouts.0.lock() else {
            return Arc::new(Layout::new(keys));
        };
        // Versions with the same layout share it (inference then compares it once).
        let same = m.values().find(|l| l.keys == keys).cloned();
        let layout = same.unwrap_or_else(|| Arc::new(Layout::new(keys)));
        if m.len() >= MAX_CACHED_LAYOUTS {
            m.clear();
        }
        m.insert(key, Arc::clone(&layout));
        layout
    }

    /// The slot of an expression variable (a parameter or a derived name such as `L`, `H`,
    /// `R`) in [`Catalog::env`].
    pub(crate) fn var_slot(&self, name: &str) -> Option<usize> {
        self.vars.iter().position(|v| v == name)
    }

    /// The values of every expression variable for a layout.
    pub(crate) fn env(&self, params: &LayoutParams) -> Vec<i64> {
        let mut env: Vec<i64> = Param::ALL.iter().map(|p| p.get(params)).collect();
        for (_, e) in &self.derived {
            let v = e.eval(&env);
            env.push(v);
        }
        env
    }
}
