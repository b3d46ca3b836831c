//! Loading, validating and evaluating `catalog.yaml`.
//!
//! The YAML is parsed once into [`Catalog`]; every expression is compiled and every name
//! resolved at load time, so generating a layout is a walk over small trees.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize, Serializer};

use super::expr::{self, Expr};
use super::{ArchError, KeyShape};

/// The catalog source, embedded at build time.
pub const CATALOG_YAML: &str = include_str!("catalog.yaml");

static CATALOG: OnceLock<Catalog> = OnceLock::new();

/// The embedded catalog, parsed on first use.
///
/// The embedded YAML is validated by the unit tests, so this cannot fail in a released build.
pub fn catalog() -> &'static Catalog {
    CATALOG.get_or_init(|| {
        Catalog::from_yaml(CATALOG_YAML)
            .expect("embedded src/arch/catalog.yaml is valid (unit-tested)")
    })
}

// ---------------------------------------------------------------------------------------
// Identifiers and parameters
// ---------------------------------------------------------------------------------------

/// A model version known to the catalog. The ids are the catalog's `versions[].id`; the
/// catalog must define each of them exactly once (checked when it loads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VersionId {
    /// `v5_5`: DualNeuralVAEV5.
    V5_5,
    /// `v5_11`: TernaryVAEV5_11.
    V5_11,
    /// `v5_11_partial_freeze`: TernaryVAEV5_11_PartialFreeze (same shapes as v5.11).
    V5_11PartialFreeze,
    /// `v5_12`: the v5.12 – v5.12.3 configurations (frozen-style encoders).
    V5_12,
    /// `v5_12_4`: v5.12.4 production (improved encoders/decoder).
    V5_12_4,
}

impl VersionId {
    /// Every version id, in declaration order.
    pub const ALL: [VersionId; 5] = [
        VersionId::V5_5,
        VersionId::V5_11,
        VersionId::V5_11PartialFreeze,
        VersionId::V5_12,
        VersionId::V5_12_4,
    ];

    /// The catalog id (`v5_11_partial_freeze`).
    pub fn as_str(self) -> &'static str {
        match self {
            VersionId::V5_5 => "v5_5",
            VersionId::V5_11 => "v5_11",
            VersionId::V5_11PartialFreeze => "v5_11_partial_freeze",
            VersionId::V5_12 => "v5_12",
            VersionId::V5_12_4 => "v5_12_4",
        }
    }

    /// The display name from the catalog (`v5.11 (PartialFreeze)`).
    pub fn display_name(self) -> &'static str {
        &catalog().version(self).display
    }

    fn ordinal(self) -> usize {
        self as usize
    }
}

impl fmt::Display for VersionId {
    /// Writes the display name (`v5.12.4`); use [`VersionId::as_str`] for the id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
}

impl FromStr for VersionId {
    type Err = ArchError;

    /// Accepts an id (`v5_12_4`) or a display name (`v5.12.4`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(id) = VersionId::ALL.iter().find(|v| v.as_str() == s) {
            return Ok(*id);
        }
        catalog()
            .versions()
            .iter()
            .find(|v| v.display == s)
            .map(|v| v.id)
            .ok_or_else(|| ArchError::UnknownVersion(s.to_string()))
    }
}

impl Serialize for VersionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Which encoder (or decoder) style a model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderKind {
    /// v5.5 style: Linear + ReLU (indices 0, 2, 4).
    #[default]
    Frozen,
    /// v5.12.4 style: Linear + LayerNorm + SiLU + Dropout (indices 0/1, 4/5, 8/9).
    Improved,
}

impl EncoderKind {
    fn as_str(self) -> &'static str {
        match self {
            EncoderKind::Frozen => "frozen",
            EncoderKind::Improved => "improved",
        }
    }
}

/// The hyper-parameters that determine a model's state_dict layout.
///
/// Parameters a version does not use are 0 / false / [`EncoderKind::Frozen`] in that
/// version's params (e.g. a v5.5 model has `hidden_dim == 0`: it has no projection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct LayoutParams {
    /// L: rows of `fc_mu` (16 by default, 8 in quick tests).
    pub latent_dim: u64,
    /// H: the projection's hidden width (rows of `direction_net.0`).
    pub hidden_dim: u64,
    /// Hidden layers of each projection network (n_layers ≥ 1).
    pub projection_layers: u64,
    /// Whether the projection networks hold Dropout modules (dropout > 0).
    pub projection_dropout: bool,
    /// `projection.proj_A` / `projection.proj_B` instead of a single projection.
    pub dual_projection: bool,
    /// Dual projection sharing the direction: `proj_B_radius` replaces `proj_B`.
    pub share_direction: bool,
    /// A DifferentiableController (`controller.net.*`).
    pub controller: bool,
    /// v5.5 only: the StateNet (`state_net.*`).
    pub state_net: bool,
    /// Encoder style of encoder_A and encoder_B.
    pub encoder: EncoderKind,
    /// Decoder style of decoder_A.
    pub decoder: EncoderKind,
}

impl LayoutParams {
    /// A short description for tables: `L16 H64 dual 2L drop ctrl improved`.
    ///
    /// `L<latent>`; when there is a projection (`hidden_dim > 0`): `H<hidden>`,
    /// `single` / `dual` / `dual-shared`, `<n>L`, `drop`; then `ctrl`, `statenet`, and
    /// `improved` (`improved-enc` / `improved-dec` when only one side is).
    pub fn summary(&self) -> String {
        let mut parts = vec![format!("L{}", self.latent_dim)];
        if self.hidden_dim > 0 {
            parts.push(format!("H{}", self.hidden_dim));
            parts.push(
                match (self.dual_projection, self.share_direction) {
                    (false, _) => "single",
                    (true, false) => "dual",
                    (true, true) => "dual-shared",
                }
                .to_string(),
            );
            parts.push(format!("{}L", self.projection_layers));
            if self.projection_dropout {
                parts.push("drop".into());
            }
        }
        if self.controller {
            parts.push("ctrl".into());
        }
        if self.state_net {
            parts.push("statenet".into());
        }
        match (self.encoder, self.decoder) {
            (EncoderKind::Improved, EncoderKind::Improved) => parts.push("improved".into()),
            (EncoderKind::Improved, EncoderKind::Frozen) => parts.push("improved-enc".into()),
            (EncoderKind::Frozen, EncoderKind::Improved) => parts.push("improved-dec".into()),
            (EncoderKind::Frozen, EncoderKind::Frozen) => {}
        }
        parts.join(" ")
    }
}

impl fmt::Display for LayoutParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// One layout parameter (a field of [`LayoutParams`]), as named in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param {
    LatentDim,
    HiddenDim,
    ProjectionLayers,
    ProjectionDropout,
    DualProjection,
    ShareDirection,
    Controller,
    StateNet,
    Encoder,
    Decoder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamType {
    Int,
    Bool,
    Kind,
}

impl Param {
    /// Every parameter, in environment-slot order.
    pub const ALL: [Param; 10] = [
        Param::LatentDim,
        Param::HiddenDim,
        Param::ProjectionLayers,
        Param::ProjectionDropout,
        Param::DualProjection,
        Param::ShareDirection,
        Param::Controller,
        Param::StateNet,
        Param::Encoder,
        Param::Decoder,
    ];

    /// The name used in `versions[].params` (and the field name of [`LayoutParams`]).
    pub fn name(self) -> &'static str {
        match self {
            Param::LatentDim => "latent_dim",
            Param::HiddenDim => "hidden_dim",
            Param::ProjectionLayers => "projection_layers",
            Param::ProjectionDropout => "projection_dropout",
            Param::DualProjection => "dual_projection",
            Param::ShareDirection => "share_direction",
            Param::Controller => "controller",
            Param::StateNet => "state_net",
            Param::Encoder => "encoder",
            Param::Decoder => "decoder",
        }
    }

    /// The expression variable that holds it (encoder kinds read as 0/1 `improved_*`).
    fn var(self) -> &'static str {
        match self {
            Param::Encoder => "improved_encoder",
            Param::Decoder => "improved_decoder",
            p => p.name(),
        }
    }

    fn ty(self) -> ParamType {
        match self {
            Param::LatentDim | Param::HiddenDim | Param::ProjectionLayers => ParamType::Int,
            Param::Encoder | Param::Decoder => ParamType::Kind,
            _ => ParamType::Bool,
        }
    }

    /// True for the width parameters (L, H), which are free in every version.
    pub fn is_dimension(self) -> bool {
        matches!(self, Param::LatentDim | Param::HiddenDim)
    }

    /// The parameter's value in `p`, as the catalog's integer.
    pub fn get(self, p: &LayoutParams) -> i64 {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match self {
            Param::LatentDim => clamp(p.latent_dim),
            Param::HiddenDim => clamp(p.hidden_dim),
            Param::ProjectionLayers => clamp(p.projection_layers),
            Param::ProjectionDropout => i64::from(p.projection_dropout),
            Param::DualProjection => i64::from(p.dual_projection),
            Param::ShareDirection => i64::from(p.share_direction),
            Param::Controller => i64::from(p.controller),
            Param::StateNet => i64::from(p.state_net),
            Param::Encoder => i64::from(p.encoder == EncoderKind::Improved),
            Param::Decoder => i64::from(p.decoder == EncoderKind::Improved),
        }
    }

    /// Set the parameter in `p` from the catalog's integer (negative widths read 0).
    pub fn set(self, p: &mut LayoutParams, v: i64) {
        let kind = |v: i64| {
            if v != 0 {
                EncoderKind::Improved
            } else {
                EncoderKind::Frozen
            }
        };
        let uint = u64::try_from(v).unwrap_or(0);
        match self {
            Param::LatentDim => p.latent_dim = uint,
            Param::HiddenDim => p.hidden_dim = uint,
            Param::ProjectionLayers => p.projection_layers = uint,
            Param::ProjectionDropout => p.projection_dropout = v != 0,
            Param::DualProjection => p.dual_projection = v != 0,
            Param::ShareDirection => p.share_direction = v != 0,
            Param::Controller => p.controller = v != 0,
            Param::StateNet => p.state_net = v != 0,
            Param::Encoder => p.encoder = kind(v),
            Param::Decoder => p.decoder = kind(v),
        }
    }

    /// Format a catalog integer as this parameter's value (`true`, `improved`, `2`).
    pub fn format_value(self, v: i64) -> String {
        match self.ty() {
            ParamType::Int => v.to_string(),
            ParamType::Bool => (v != 0).to_string(),
            ParamType::Kind => if v != 0 {
                EncoderKind::Improved
            } else {
                EncoderKind::Frozen
            }
            .as_str()
            .to_string(),
        }
    }

    /// Parse this parameter's value as [`Param::format_value`] writes it (`2`, `true`,
    /// `improved`) into the catalog's integer.
    pub fn parse_value(self, text: &str) -> Option<i64> {
        match self.ty() {
            ParamType::Int => text.parse::<u64>().ok().and_then(|v| i64::try_from(v).ok()),
            ParamType::Bool => text.parse::<bool>().ok().map(i64::from),
            ParamType::Kind => match text {
                "frozen" => Some(0),
                "improved" => Some(1),
                _ => None,
            },
        }
    }

    /// The parameter called `name` ([`Param::name`]).
    pub fn from_name(name: &str) -> Option<Param> {
        Param::ALL.iter().copied().find(|p| p.name() == name)
    }
}

/// The domain of one parameter in one version.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDomain {
    pub param: Param,
    /// The canonical value.
    pub default: i64,
    /// The only allowed value, if the version fixes it.
    pub fixed: Option<i64>,
    pub min: Option<i64>,
    pub max: Option<i64>,
}

impl ParamDomain {
    /// Whether `v` lies in the domain.
    pub fn admits(&self, v: i64) -> bool {
        match self.fixed {
            Some(f) => v == f,
            None => {
                self.min.is_none_or(|m| v >= m)
                    && self.max.is_none_or(|m| v <= m)
                    && (self.param.ty() == ParamType::Int || v == 0 || v == 1)
            }
        }
    }

    /// The nearest admitted value to `v` (the fixed value, or `v` clamped to min/max).
    pub fn conform(&self, v: i64) -> i64 {
        if let Some(f) = self.fixed {
            return f;
        }
        let mut v = v;
        if self.param.ty() != ParamType::Int {
            v = i64::from(v != 0);
        }
        if let Some(m) = self.min {
            v = v.max(m);
        }
        if let Some(m) = self.max {
            v = v.min(m);
        }
        v
    }

    /// A human description of the domain (`= 2`, `1..=64`, `any`).
    pub fn describe(&self) -> String {
        match (self.fixed, self.min, self.max) {
            (Some(f), _, _) => format!("= {}", self.param.format_value(f)),
            (None, Some(a), Some(b)) => format!("{a}..={b}"),
            (None, Some(a), None) => format!(">= {a}"),
            (None, None, Some(b)) => format!("<= {b}"),
            (None, None, None) => "any".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Compiled catalog
// ---------------------------------------------------------------------------------------

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
    layout: Vec<Entry>,
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
struct Component {
    name: String,
    layout: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    when: Option<Expr>,
    kind: EntryKind,
}

#[derive(Debug, Clone)]
enum EntryKind {
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
struct Layer {
    out: Expr,
    inp: Expr,
    bias: Expr,
    norm: Expr,
    act: Expr,
    dropout: Expr,
    repeat: Expr,
    when: Option<Expr>,
}

/// The parsed, validated catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    versions: Vec<Version>,
    /// Index into `versions` by [`VersionId::ordinal`].
    by_id: [usize; VersionId::ALL.len()],
    model_classes: Vec<ModelClass>,
    components: Vec<Component>,
    derived: Vec<(String, Expr)>,
    /// Expression variables: the parameters' names, then the derived ones ([`Catalog::env`]).
    vars: Vec<String>,
    layouts: LayoutCache,
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
    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    STATE.get_or_init(std::collections::hash_map::RandomState::new)
}

impl Layout {
    fn new(keys: Vec<KeyShape>) -> Layout {
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
const MAX_CACHED_LAYOUTS: usize = 256;

/// Layouts by (version, restricted params). Inference asks for the same few layouts for
/// every file of a scan.
#[derive(Default)]
struct LayoutCache(Mutex<HashMap<(VersionId, LayoutParams), Arc<Layout>>>);

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

const MAX_NESTING: usize = 32;

impl Catalog {
    /// Parse and validate a catalog. Every expression is compiled, every component and
    /// version reference resolved, component cycles rejected, and each [`VersionId`] must be
    /// defined exactly once.
    pub fn from_yaml(src: &str) -> Result<Catalog, ArchError> {
        let raw: RawCatalog = serde_yaml::from_str(src)?;
        if raw.schema != 1 {
            return Err(bad(format!("unsupported schema {}", raw.schema)));
        }

        // Variables: the parameters, then the derived names in order.
        let mut vars: Vec<String> = Param::ALL.iter().map(|p| p.var().to_string()).collect();
        let mut derived = Vec::new();
        for (k, v) in &raw.derived {
            let name = k
                .as_str()
                .ok_or_else(|| bad("derived: names must be strings".into()))?
                .to_string();
            if !is_ident(&name) || vars.contains(&name) {
                return Err(bad(format!("derived `{name}`: not a new identifier")));
            }
            let rawx: RawScalar = serde_yaml::from_value(v.clone())?;
            let e = compile(&rawx, &vars).map_err(|m| bad(format!("derived `{name}`: {m}")))?;
            vars.push(name.clone());
            derived.push((name, e));
        }

        let comp_names: Vec<&String> = raw.components.keys().collect();
        let ctx = Ctx {
            vars: &vars,
            components: &comp_names,
        };
        let mut components = Vec::new();
        for (name, c) in &raw.components {
            let layout = ctx
                .entries(&c.layout)
                .map_err(|m| bad(format!("component `{name}`: {m}")))?;
            components.push(Component {
                name: name.clone(),
                layout,
            });
        }

        let mut versions: Vec<Version> = Vec::new();
        for v in &raw.versions {
            let id = parse_id(&v.id).map_err(|m| bad(format!("versions: {m}")))?;
            if versions.iter().any(|o| o.id == id) {
                return Err(bad(format!("version `{}` defined twice", v.id)));
            }
            let family =
                parse_id(&v.family).map_err(|m| bad(format!("version `{}`: family: {m}", v.id)))?;
            let mut params = Vec::new();
            for (pname, spec) in &v.params {
                let param = Param::from_name(pname).ok_or_else(|| {
                    bad(format!("version `{}`: unknown parameter `{pname}`", v.id))
                })?;
                params.push(
                    domain(param, spec)
                        .map_err(|m| bad(format!("version `{}`: {pname}: {m}", v.id)))?,
                );
            }
            params.sort_by_key(|d| Param::ALL.iter().position(|p| *p == d.param));
            let layout = ctx
                .entries(&v.layout)
                .map_err(|m| bad(format!("version `{}`: {m}", v.id)))?;
            if v.display.trim().is_empty() {
                return Err(bad(format!("version `{}`: empty display name", v.id)));
            }
            versions.push(Version {
                id,
                display: v.display.clone(),
                family,
                doc: v.doc.clone().unwrap_or_default(),
                model_classes: Vec::new(),
                params,
                layout,
            });
        }
        let mut by_id = [usize::MAX; VersionId::ALL.len()];
        for (i, v) in versions.iter().enumerate() {
            by_id[v.id.ordinal()] = i;
        }
        if let Some(missing) = VersionId::ALL
            .iter()
            .find(|id| by_id[id.ordinal()] == usize::MAX)
        {
            return Err(bad(format!(
                "version `{}` is not defined",
                missing.as_str()
            )));
        }

        let mut model_classes: Vec<ModelClass> = Vec::new();
        for mc in &raw.model_classes {
            if model_classes.iter().any(|o| o.name == mc.name) {
                return Err(bad(format!("model class `{}` defined twice", mc.name)));
            }
            let ids = |list: &[String], what: &str| -> Result<Vec<VersionId>, ArchError> {
                list.iter()
                    .map(|s| {
                        parse_id(s)
                            .map_err(|m| bad(format!("model class `{}`: {what}: {m}", mc.name)))
                    })
                    .collect()
            };
            let builds = ids(&mc.builds, "builds")?;
            if builds.is_empty() {
                return Err(bad(format!("model class `{}` builds nothing", mc.name)));
            }
            let accepts = ids(&mc.accepts, "accepts")?;
            for b in &builds {
                versions[by_id[b.ordinal()]]
                    .model_classes
                    .push(mc.name.clone());
            }
            model_classes.push(ModelClass {
                name: mc.name.clone(),
                builds,
                requires_frozen: mc.requires_frozen,
                accepts,
            });
        }

        let cat = Catalog {
            versions,
            by_id,
            model_classes,
            components,
            derived,
            vars,
            layouts: LayoutCache::default(),
        };
        cat.check_acyclic()?;
        Ok(cat)
    }

    fn check_acyclic(&self) -> Result<(), ArchError> {
        // Depth-first search over component references; a path longer than the number of
        // components (or MAX_NESTING) means a cycle.
        fn visit(
            cat: &Catalog,
            entries: &[Entry],
            depth: usize,
            path: &mut Vec<usize>,
        ) -> Result<(), ArchError> {
            for e in entries {
                if let EntryKind::Component { index, .. } = e.kind {
                    if path.contains(&index) || depth >= MAX_NESTING {
                        let names: Vec<&str> = path
                            .iter()
                            .map(|i| cat.components[*i].name.as_str())
                            .collect();
                        return Err(bad(format!(
                            "component cycle (or nesting deeper than {MAX_NESTING}): {} -> {}",
                            names.join(" -> "),
                            cat.components[index].name
                        )));
                    }
                    path.push(index);
                    visit(cat, &cat.components[index].layout, depth + 1, path)?;
                    path.pop();
                }
            }
            Ok(())
        }
        for v in &self.versions {
            visit(self, &v.layout, 0, &mut Vec::new())?;
        }
        for (i, c) in self.components.iter().enumerate() {
            visit(self, &c.layout, 0, &mut vec![i])?;
        }
        Ok(())
    }

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

    fn emit(
        &self,
        entries: &[Entry],
        prefix: &mut String,
        env: &[i64],
        out: &mut Vec<KeyShape>,
        depth: usize,
    ) {
        for e in entries {
            if e.when.as_ref().is_some_and(|w| !w.truthy(env)) {
                continue;
            }
            match &e.kind {
                EntryKind::Tensor { name, shape } => {
                    out.push((
                        format!("{prefix}{name}"),
                        shape.iter().map(|d| dim(d, env)).collect(),
                    ));
                }
                EntryKind::Linear {
                    name,
                    out: o,
                    inp,
                    bias,
                } => {
                    linear(
                        out,
                        prefix,
                        name,
                        dim(o, env),
                        dim(inp, env),
                        bias.truthy(env),
                    );
                }
                EntryKind::LayerNorm { name, dim: d } => {
                    layernorm(out, prefix, name, dim(d, env));
                }
                EntryKind::Sequential { name, layers } => {
                    let mut index = 0u64;
                    let base = format!("{prefix}{name}.");
                    for l in layers {
                        if l.when.as_ref().is_some_and(|w| !w.truthy(env)) {
                            continue;
                        }
                        let repeat = l.repeat.eval(env).clamp(0, 4096);
                        for _ in 0..repeat {
                            let o = dim(&l.out, env);
                            linear(
                                out,
                                &base,
                                &index.to_string(),
                                o,
                                dim(&l.inp, env),
                                l.bias.truthy(env),
                            );
                            index += 1;
                            if l.norm.truthy(env) {
                                layernorm(out, &base, &index.to_string(), o);
                                index += 1;
                            }
                            if l.act.truthy(env) {
                                index += 1;
                            }
                            if l.dropout.truthy(env) {
                                index += 1;
                            }
                        }
                    }
                }
                EntryKind::Component { index, at } => {
                    if depth >= MAX_NESTING {
                        continue; // unreachable for a validated catalog
                    }
                    let len = prefix.len();
                    if let Some(at) = at {
                        prefix.push_str(at);
                        prefix.push('.');
                    }
                    self.emit(&self.components[*index].layout, prefix, env, out, depth + 1);
                    prefix.truncate(len);
                }
            }
        }
    }
}

fn dim(e: &Expr, env: &[i64]) -> u64 {
    u64::try_from(e.eval(env)).unwrap_or(0)
}

fn linear(out: &mut Vec<KeyShape>, prefix: &str, name: &str, o: u64, i: u64, bias: bool) {
    out.push((format!("{prefix}{name}.weight"), vec![o, i]));
    if bias {
        out.push((format!("{prefix}{name}.bias"), vec![o]));
    }
}

fn layernorm(out: &mut Vec<KeyShape>, prefix: &str, name: &str, d: u64) {
    out.push((format!("{prefix}{name}.weight"), vec![d]));
    out.push((format!("{prefix}{name}.bias"), vec![d]));
}

fn bad(msg: String) -> ArchError {
    ArchError::Catalog(msg)
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_key_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|seg| {
            !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

fn parse_id(s: &str) -> Result<VersionId, String> {
    VersionId::ALL
        .iter()
        .copied()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| format!("unknown version id `{s}`"))
}

// ---------------------------------------------------------------------------------------
// Raw YAML
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    schema: u32,
    #[serde(default)]
    derived: serde_yaml::Mapping,
    components: BTreeMap<String, RawComponent>,
    versions: Vec<RawVersion>,
    model_classes: Vec<RawModelClass>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    #[serde(default)]
    #[allow(dead_code)]
    doc: Option<String>,
    layout: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersion {
    id: String,
    display: String,
    family: String,
    #[serde(default)]
    doc: Option<String>,
    params: BTreeMap<String, RawParamSpec>,
    layout: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParamSpec {
    default: Option<RawScalar>,
    fixed: Option<RawScalar>,
    min: Option<i64>,
    max: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelClass {
    name: String,
    builds: Vec<String>,
    requires_frozen: bool,
    #[serde(default)]
    accepts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: Option<String>,
    tensor: Option<Vec<RawScalar>>,
    linear: Option<Vec<RawScalar>>,
    bias: Option<RawScalar>,
    layernorm: Option<RawScalar>,
    sequential: Option<Vec<RawLayer>>,
    component: Option<String>,
    at: Option<String>,
    when: Option<RawScalar>,
    #[serde(default)]
    #[allow(dead_code)]
    doc: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    linear: Vec<RawScalar>,
    bias: Option<RawScalar>,
    norm: Option<RawScalar>,
    act: Option<RawScalar>,
    dropout: Option<RawScalar>,
    repeat: Option<RawScalar>,
    when: Option<RawScalar>,
}

/// A YAML scalar that is an expression: a boolean, an integer or expression text.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawScalar {
    Bool(bool),
    Int(i64),
    Str(String),
}

fn compile(raw: &RawScalar, vars: &[String]) -> Result<Expr, String> {
    match raw {
        RawScalar::Bool(b) => Ok(Expr::Int(i64::from(*b))),
        RawScalar::Int(i) => Ok(Expr::Int(*i)),
        RawScalar::Str(s) => expr::parse(s, &|name| vars.iter().position(|v| v == name))
            .map_err(|m| format!("expression `{s}`: {m}")),
    }
}

fn domain(param: Param, spec: &RawParamSpec) -> Result<ParamDomain, String> {
    let value = |raw: &RawScalar| -> Result<i64, String> {
        match (param.ty(), raw) {
            (ParamType::Int, RawScalar::Int(i)) => Ok(*i),
            (ParamType::Bool, RawScalar::Bool(b)) => Ok(i64::from(*b)),
            (ParamType::Kind, RawScalar::Str(s)) if s == "frozen" => Ok(0),
            (ParamType::Kind, RawScalar::Str(s)) if s == "improved" => Ok(1),
            (ParamType::Int, _) => Err("expected an integer".into()),
            (ParamType::Bool, _) => Err("expected true or false".into()),
            (ParamType::Kind, _) => Err("expected `frozen` or `improved`".into()),
        }
    };
    let fixed = spec.fixed.as_ref().map(value).transpose()?;
    let default = spec.default.as_ref().map(value).transpose()?;
    if (spec.min.is_some() || spec.max.is_some()) && param.ty() != ParamType::Int {
        return Err("min/max only apply to integer parameters".into());
    }
    let d = ParamDomain {
        param,
        default: match (default, fixed) {
            (Some(d), _) => d,
            (None, Some(f)) => f,
            (None, None) => return Err("needs `default` or `fixed`".into()),
        },
        fixed,
        min: spec.min,
        max: spec.max,
    };
    if !d.admits(d.default) {
        return Err(format!("default {} is outside its own domain", d.default));
    }
    Ok(d)
}

struct Ctx<'a> {
    vars: &'a [String],
    components: &'a [&'a String],
}

impl Ctx<'_> {
    fn expr(&self, raw: &RawScalar) -> Result<Expr, String> {
        compile(raw, self.vars)
    }

    fn opt(&self, raw: &Option<RawScalar>, default: i64) -> Result<Expr, String> {
        raw.as_ref()
            .map_or(Ok(Expr::Int(default)), |r| self.expr(r))
    }

    fn entries(&self, raw: &[RawEntry]) -> Result<Vec<Entry>, String> {
        raw.iter()
            .enumerate()
            .map(|(i, e)| self.entry(e).map_err(|m| format!("entry {i}: {m}")))
            .collect()
    }

    fn name(&self, e: &RawEntry) -> Result<String, String> {
        let name = e.name.clone().ok_or("needs `name`")?;
        if !is_key_path(&name) {
            return Err(format!("bad name `{name}`"));
        }
        Ok(name)
    }

    fn entry(&self, e: &RawEntry) -> Result<Entry, String> {
        let kinds = [
            e.tensor.is_some(),
            e.linear.is_some(),
            e.layernorm.is_some(),
            e.sequential.is_some(),
            e.component.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(
                "needs exactly one of tensor, linear, layernorm, sequential, component".into(),
            );
        }
        if e.bias.is_some() && e.linear.is_none() {
            return Err("`bias` only applies to `linear`".into());
        }
        if e.at.is_some() && e.component.is_none() {
            return Err("`at` only applies to `component`".into());
        }
        let when = e.when.as_ref().map(|w| self.expr(w)).transpose()?;
        let kind = if let Some(shape) = &e.tensor {
            EntryKind::Tensor {
                name: self.name(e)?,
                shape: shape
                    .iter()
                    .map(|d| self.expr(d))
                    .collect::<Result<_, _>>()?,
            }
        } else if let Some(shape) = &e.linear {
            let [o, i] = shape.as_slice() else {
                return Err("`linear` takes [out, in]".into());
            };
            EntryKind::Linear {
                name: self.name(e)?,
                out: self.expr(o)?,
                inp: self.expr(i)?,
                bias: self.opt(&e.bias, 1)?,
            }
        } else if let Some(d) = &e.layernorm {
            EntryKind::LayerNorm {
                name: self.name(e)?,
                dim: self.expr(d)?,
            }
        } else if let Some(layers) = &e.sequential {
            let layers = layers
                .iter()
                .enumerate()
                .map(|(i, l)| self.layer(l).map_err(|m| format!("layer {i}: {m}")))
                .collect::<Result<Vec<_>, _>>()?;
            EntryKind::Sequential {
                name: self.name(e)?,
                layers,
            }
        } else {
            let comp = e.component.as_deref().unwrap_or_default();
            if e.name.is_some() {
                return Err("a `component` entry takes `at`, not `name`".into());
            }
            let index = self
                .components
                .iter()
                .position(|c| c.as_str() == comp)
                .ok_or_else(|| format!("unknown component `{comp}`"))?;
            if let Some(at) = &e.at {
                if !is_key_path(at) {
                    return Err(format!("bad prefix `{at}`"));
                }
            }
            EntryKind::Component {
                index,
                at: e.at.clone(),
            }
        };
        Ok(Entry { when, kind })
    }

    fn layer(&self, l: &RawLayer) -> Result<Layer, String> {
        let [o, i] = l.linear.as_slice() else {
            return Err("`linear` takes [out, in]".into());
        };
        Ok(Layer {
            out: self.expr(o)?,
            inp: self.expr(i)?,
            bias: self.opt(&l.bias, 1)?,
            norm: self.opt(&l.norm, 0)?,
            act: self.opt(&l.act, 0)?,
            dropout: self.opt(&l.dropout, 0)?,
            repeat: self.opt(&l.repeat, 1)?,
            when: l.when.as_ref().map(|w| self.expr(w)).transpose()?,
        })
    }
}
