//! Version inference: solve the layout parameters from a state_dict's keys and shapes, then
//! score every catalog version's expected layout against it.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Arc;

use serde::Serialize;

use super::catalog::{
    catalog, key_hash, key_hasher, EncoderKind, Layout, LayoutParams, ModelClass, Param, Version,
    VersionId,
};
use super::compare::{KeyComparison, SizeMismatch};
use crate::format::Value;

/// Below this confidence no version is named ([`Inference::best`] is `None`).
pub const MIN_CONFIDENCE: f64 = 0.2;

/// Confidence factor for a version that the metadata's (known) model class does not build.
pub const CLASS_MISMATCH_FACTOR: f64 = 0.75;

// ---------------------------------------------------------------------------------------
// Hints
// ---------------------------------------------------------------------------------------

/// Optional metadata that helps inference: the model class name (`config.model.name`) and
/// config values. Shapes always win over config values; the class name separates versions
/// whose shapes are identical.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Hints {
    pub model_class: Option<String>,
    pub latent_dim: Option<u64>,
    pub hidden_dim: Option<u64>,
    pub projection_layers: Option<u64>,
    pub projection_dropout: Option<bool>,
    pub dual_projection: Option<bool>,
    pub share_direction: Option<bool>,
    pub controller: Option<bool>,
    pub state_net: Option<bool>,
    pub encoder: Option<EncoderKind>,
    pub decoder: Option<EncoderKind>,
}

impl Hints {
    /// Hints with only a model class.
    pub fn class(name: &str) -> Hints {
        Hints {
            model_class: Some(name.to_string()),
            ..Hints::default()
        }
    }

    /// Read a checkpoint's `config.model` (or `config` itself when it has no `model` dict).
    pub fn from_checkpoint(root: &Value) -> Hints {
        match root.get("config") {
            Some(config) => Hints::from_config(config),
            None => Hints::default(),
        }
    }

    /// Read a training config (the YAML as a dict): its `model` section, or the dict itself
    /// when it has no `model` key.
    pub fn from_config(config: &Value) -> Hints {
        Hints::from_model_config(config.get("model").unwrap_or(config))
    }

    /// Read a `model:` config section: name, latent_dim, hidden_dim (projection_hidden_dim
    /// wins), projection_layers, projection_dropout (> 0), use_dual_projection,
    /// share_direction, use_controller, use_statenet, encoder_type, decoder_type.
    pub fn from_model_config(model: &Value) -> Hints {
        let uint = |k: &str| {
            model
                .get(k)
                .and_then(Value::as_i64)
                .and_then(|v| u64::try_from(v).ok())
                .filter(|v| *v > 0)
        };
        let flag = |k: &str| {
            model
                .get(k)
                .and_then(|v| v.as_bool().or_else(|| v.as_f64().map(|f| f != 0.0)))
        };
        let kind = |k: &str| match model.get(k).and_then(Value::as_str) {
            Some("improved") => Some(EncoderKind::Improved),
            Some("frozen") => Some(EncoderKind::Frozen),
            _ => None,
        };
        Hints {
            model_class: model
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string),
            latent_dim: uint("latent_dim"),
            hidden_dim: uint("projection_hidden_dim").or_else(|| uint("hidden_dim")),
            projection_layers: uint("projection_layers"),
            projection_dropout: flag("projection_dropout"),
            dual_projection: flag("use_dual_projection"),
            share_direction: flag("share_direction"),
            controller: flag("use_controller"),
            state_net: flag("use_statenet"),
            encoder: kind("encoder_type"),
            decoder: kind("decoder_type"),
        }
    }

    /// The hinted value of `param`, as the catalog's integer.
    fn get(&self, param: Param) -> Option<i64> {
        let int = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
        let kind = |k: Option<EncoderKind>| k.map(|k| i64::from(k == EncoderKind::Improved));
        match param {
            Param::LatentDim => int(self.latent_dim),
            Param::HiddenDim => int(self.hidden_dim),
            Param::ProjectionLayers => int(self.projection_layers),
            Param::ProjectionDropout => self.projection_dropout.map(i64::from),
            Param::DualProjection => self.dual_projection.map(i64::from),
            Param::ShareDirection => self.share_direction.map(i64::from),
            Param::Controller => self.controller.map(i64::from),
            Param::StateNet => self.state_net.map(i64::from),
            Param::Encoder => kind(self.encoder),
            Param::Decoder => kind(self.decoder),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

/// One version scored against a state_dict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub version: VersionId,
    /// Display name of `version`.
    pub display: &'static str,
    /// The parameters read back from the shapes, fitted into this version's domain
    /// (parameters the version does not use are 0 / false / frozen).
    pub params: LayoutParams,
    /// 0..=1: share of keys that agree ([`KeyComparison::agreement`]), times
    /// [`CLASS_MISMATCH_FACTOR`] when the metadata's model class does not build this
    /// version. 1.0 = exact fit.
    pub confidence: f64,
    /// The layout's keys against the state_dict's: missing in layout order, unexpected in
    /// input order, mismatched in layout order.
    #[serde(flatten)]
    pub keys: KeyComparison,
}

impl Candidate {
    /// True when the layout fits the keys exactly (whatever the class hint says).
    pub fn is_exact(&self) -> bool {
        self.keys.is_exact()
    }

    /// `params.summary()`: `L16 H64 dual 2L drop ctrl improved`.
    pub fn summary(&self) -> String {
        self.params.summary()
    }
}

/// The result of [`infer`].
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Inference {
    /// The best candidate, when its confidence reaches [`MIN_CONFIDENCE`].
    pub best: Option<Candidate>,
    /// Every catalog version, best first (empty when no key of any layout is present).
    pub candidates: Vec<Candidate>,
    /// Versions whose layouts are shape-identical to `best` for these keys (e.g. v5.11 and
    /// v5.11 (PartialFreeze)): the shapes cannot tell them apart.
    pub ambiguous_with: Vec<VersionId>,
    /// A prefix stripped from every key before matching (`module.` from DataParallel).
    pub stripped_prefix: Option<String>,
    /// Human-readable remarks: ambiguity, metadata that disagrees with the weights, …
    pub notes: Vec<String>,
}

impl Inference {
    /// The notes joined into one line (None when there are none).
    pub fn note(&self) -> Option<String> {
        (!self.notes.is_empty()).then(|| self.notes.join("; "))
    }

    /// The best version, if any.
    pub fn version(&self) -> Option<VersionId> {
        self.best.as_ref().map(|c| c.version)
    }
}

// ---------------------------------------------------------------------------------------
// Comparing layouts
// ---------------------------------------------------------------------------------------

/// Actual keys indexed once: key → first position, in an open-addressing table over
/// [`key_hash`] (layouts carry their keys' hashes, so a lookup hashes nothing).
struct Actual<'a> {
    keys: Vec<(&'a str, &'a [u64])>,
    hashes: Vec<u64>,
    /// Position + 1 of the first occurrence of a key; 0 = empty slot.
    slots: Vec<u32>,
    /// Whether `keys[i]` is the first occurrence of its key.
    first: Vec<bool>,
}

impl<'a> Actual<'a> {
    fn new(keys: Vec<(&'a str, &'a [u64])>) -> Self {
        let hasher = key_hasher();
        let hashes: Vec<u64> = keys.iter().map(|(k, _)| hasher.hash_one(*k)).collect();
        let size = (keys.len() * 2).next_power_of_two().max(8);
        let mut a = Actual {
            keys,
            hashes,
            slots: vec![0; size],
            first: Vec::new(),
        };
        let mut first = Vec::with_capacity(a.keys.len());
        for i in 0..a.keys.len() {
            let (k, h) = (a.keys[i].0, a.hashes[i]);
            let slot = a.slot(k, h);
            let fresh = a.slots[slot] == 0;
            if fresh {
                a.slots[slot] = i as u32 + 1;
            }
            first.push(fresh);
        }
        a.first = first;
        a
    }

    /// The slot holding `key`, or the empty slot where it would go.
    fn slot(&self, key: &str, hash: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut s = hash as usize & mask;
        loop {
            match self.slots[s] {
                0 => return s,
                i => {
                    let i = i as usize - 1;
                    if self.hashes[i] == hash && self.keys[i].0 == key {
                        return s;
                    }
                }
            }
            s = (s + 1) & mask;
        }
    }

    /// First position of `key` (whose [`key_hash`] is `hash`) and its shape.
    fn get(&self, key: &str, hash: u64) -> Option<(usize, &'a [u64])> {
        match self.slots[self.slot(key, hash)] {
            0 => None,
            i => {
                let i = i as usize - 1;
                Some((i, self.keys[i].1))
            }
        }
    }

    /// [`diff`](Self::diff) against a shared layout (its duplicates already marked), as
    /// positions rather than copies; `used` is scratch space.
    fn fit_layout(&self, layout: &Layout, used: &mut Vec<bool>) -> Fit {
        used.clear();
        used.resize(self.keys.len(), false);
        let mut d = Fit::default();
        for (j, ((k, s), first)) in layout.keys.iter().zip(&layout.first).enumerate() {
            if !first {
                continue;
            }
            match self.get(k, layout.hashes[j]) {
                Some((i, a)) => {
                    used[i] = true;
                    if a == s.as_slice() {
                        d.matched += 1;
                    } else {
                        d.mismatched.push((j, i));
                    }
                }
                None => d.missing.push(j),
            }
        }
        for (i, used) in used.iter().enumerate() {
            if self.first[i] && !used {
                d.unexpected.push(i);
            }
        }
        d
    }

    fn diff<K: AsRef<str>, S: AsRef<[u64]>>(&self, expected: &[(K, S)]) -> KeyComparison {
        let mut d = KeyComparison::default();
        let mut seen: HashSet<&str> = HashSet::with_capacity(expected.len());
        for (k, s) in expected {
            let (k, s) = (k.as_ref(), s.as_ref());
            if !seen.insert(k) {
                continue;
            }
            match self.get(k, key_hash(k)) {
                Some((_, a)) if a == s => d.matched += 1,
                Some((_, a)) => d
                    .mismatched
                    .push(SizeMismatch::new(k, s.to_vec(), a.to_vec())),
                None => d.missing.push((k.to_string(), s.to_vec())),
            }
        }
        for (i, (k, s)) in self.keys.iter().enumerate() {
            if !seen.contains(k) && self.first[i] {
                d.unexpected.push((k.to_string(), s.to_vec()));
            }
        }
        d
    }
}

/// A [`KeyComparison`] by position: in the layout (`missing`), in the actual keys
/// (`unexpected`), or both (`mismatched`).
#[derive(Default, Clone)]
struct Fit {
    matched: usize,
    missing: Vec<usize>,
    unexpected: Vec<usize>,
    mismatched: Vec<(usize, usize)>,
}

impl Fit {
    fn agreement(&self) -> f64 {
        let total =
            self.matched + self.missing.len() + self.unexpected.len() + self.mismatched.len();
        if total == 0 {
            0.0
        } else {
            self.matched as f64 / total as f64
        }
    }
}

/// One version scored, before its differences are written out.
struct Scored {
    version: VersionId,
    params: LayoutParams,
    confidence: f64,
    layout: Arc<Layout>,
    fit: Fit,
    deviations: usize,
    order: usize,
}

impl Scored {
    /// Whether both versions fit the keys alike: the same number matched and the same
    /// missing, unexpected and mismatched keys and shapes (compared in place).
    fn same_fit(&self, other: &Scored, actual: &Actual<'_>) -> bool {
        let (a, b) = (&self.fit, &other.fit);
        fn key(l: &Layout, j: usize) -> (&str, &[u64]) {
            (l.keys[j].0.as_str(), l.keys[j].1.as_slice())
        }
        a.matched == b.matched
            && a.unexpected == b.unexpected
            && a.missing.len() == b.missing.len()
            && a.mismatched.len() == b.mismatched.len()
            && a.missing
                .iter()
                .zip(&b.missing)
                .all(|(x, y)| key(&self.layout, *x) == key(&other.layout, *y))
            && a.mismatched.iter().zip(&b.mismatched).all(|(x, y)| {
                key(&self.layout, x.0) == key(&other.layout, y.0)
                    && actual.keys[x.1].1 == actual.keys[y.1].1
            })
    }

    fn candidate(&self, actual: &Actual<'_>) -> Candidate {
        let f = &self.fit;
        let l = &self.layout.keys;
        Candidate {
            version: self.version,
            display: &catalog().version(self.version).display,
            params: self.params,
            confidence: self.confidence,
            keys: KeyComparison {
                matched: f.matched,
                missing: f.missing.iter().map(|j| l[*j].clone()).collect(),
                unexpected: f
                    .unexpected
                    .iter()
                    .map(|i| (actual.keys[*i].0.to_string(), actual.keys[*i].1.to_vec()))
                    .collect(),
                mismatched: f
                    .mismatched
                    .iter()
                    .map(|(j, i)| {
                        SizeMismatch::new(
                            l[*j].0.clone(),
                            l[*j].1.clone(),
                            actual.keys[*i].1.to_vec(),
                        )
                    })
                    .collect(),
            },
        }
    }
}

/// Compare an expected layout with actual keys: which keys are missing, unexpected, or
/// have another shape. Linear in the number of keys. Duplicate keys count once (first wins).
pub fn compare_layout<K1, S1, K2, S2>(expected: &[(K1, S1)], actual: &[(K2, S2)]) -> KeyComparison
where
    K1: AsRef<str>,
    S1: AsRef<[u64]>,
    K2: AsRef<str>,
    S2: AsRef<[u64]>,
{
    Actual::new(
        actual
            .iter()
            .map(|(k, s)| (k.as_ref(), s.as_ref()))
            .collect(),
    )
    .diff(expected)
}

// ---------------------------------------------------------------------------------------
// Solving the parameters from shapes
// ---------------------------------------------------------------------------------------

/// Value votes (a handful of distinct values at most).
#[derive(Default)]
struct Votes(Vec<(u64, u32)>);

impl Votes {
    fn add(&mut self, v: u64) {
        match self.0.iter_mut().find(|(x, _)| *x == v) {
            Some((_, n)) => *n += 1,
            None => self.0.push((v, 1)),
        }
    }

    /// The most voted value (ties: the first seen).
    fn winner(&self) -> Option<u64> {
        let mut best: Option<(u64, u32)> = None;
        for &(v, n) in &self.0 {
            if best.is_none_or(|(_, m)| n > m) {
                best = Some((v, n));
            }
        }
        best.map(|(v, _)| v)
    }
}

/// Sequential indices seen under one network.
#[derive(Default, Clone, Copy)]
struct Indices {
    bits: u128,
    max: Option<u64>,
}

impl Indices {
    fn add(&mut self, i: u64) {
        if i < 128 {
            self.bits |= 1 << i;
        }
        self.max = Some(self.max.map_or(i, |m| m.max(i)));
    }

    fn has(&self, i: u64) -> bool {
        i < 128 && self.bits & (1 << i) != 0
    }

    fn is_empty(&self) -> bool {
        self.max.is_none()
    }
}

/// Evidence gathered in one pass over the keys.
#[derive(Default)]
struct Evidence {
    latent: Votes,
    hidden: Votes,
    enc_improved: u32,
    enc_frozen: u32,
    dec_improved: u32,
    dec_frozen: u32,
    proj_single: u32,
    proj_dual: u32,
    proj_shared: u32,
    direction: Indices,
    radius: Indices,
    controller: bool,
    state_net: bool,
}

/// `"<digits>.<rest>"` → (index, rest).
fn split_index(s: &str) -> Option<(u64, &str)> {
    let (num, rest) = s.split_once('.')?;
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((num.parse().ok()?, rest))
}

impl Evidence {
    fn gather(keys: &[(&str, &[u64])]) -> Evidence {
        let mut ev = Evidence::default();
        for &(key, shape) in keys {
            ev.key(key, shape);
        }
        ev
    }

    fn key(&mut self, key: &str, shape: &[u64]) {
        let rows = shape.first().copied();
        let cols = if shape.len() == 2 {
            Some(shape[1])
        } else {
            None
        };
        if let Some(rest) = key
            .strip_prefix("encoder_A.")
            .or_else(|| key.strip_prefix("encoder_B."))
        {
            match rest {
                "fc_mu.weight" | "fc_logvar.weight" if shape.len() == 2 => {
                    self.latent.add(shape[0])
                }
                "fc_mu.bias" | "fc_logvar.bias" if shape.len() == 1 => self.latent.add(shape[0]),
                _ => match rest.strip_prefix("encoder.").and_then(split_index) {
                    Some((1 | 5 | 8 | 9, _)) => self.enc_improved += 1,
                    Some((2, _)) => self.enc_frozen += 1,
                    _ => {}
                },
            }
        } else if let Some(rest) = key.strip_prefix("decoder_A.") {
            match rest.strip_prefix("decoder.").and_then(split_index) {
                Some((0, "weight")) => {
                    if let Some(c) = cols {
                        self.latent.add(c);
                    }
                }
                Some((1 | 5 | 8, _)) => self.dec_improved += 1,
                Some((2, _)) => self.dec_frozen += 1,
                _ => {}
            }
        } else if key == "decoder_B.fc_in.weight" {
            if let Some(c) = cols {
                self.latent.add(c);
            }
        } else if let Some(rest) = key.strip_prefix("projection.") {
            let sub = if let Some(sub) = rest
                .strip_prefix("proj_A.")
                .or_else(|| rest.strip_prefix("proj_B."))
            {
                self.proj_dual += 1;
                sub
            } else if rest.starts_with("proj_B_radius.") {
                self.proj_dual += 1;
                self.proj_shared += 1;
                return;
            } else {
                self.proj_single += 1;
                rest
            };
            if let Some((i, what)) = sub.strip_prefix("direction_net.").and_then(split_index) {
                self.direction.add(i);
                if i == 0 {
                    match (what, rows, cols) {
                        ("weight", Some(r), Some(c)) => {
                            self.hidden.add(r);
                            self.latent.add(c);
                        }
                        ("bias", Some(r), None) => self.hidden.add(r),
                        _ => {}
                    }
                } else if i == 1 && shape.len() == 1 {
                    self.hidden.add(shape[0]);
                }
            } else if let Some((i, what)) = sub.strip_prefix("radius_net.").and_then(split_index) {
                self.radius.add(i);
                if i == 0 && what == "weight" {
                    if let Some(c) = cols {
                        self.latent.add(c);
                    }
                }
            }
        } else if key.starts_with("controller.") {
            self.controller = true;
        } else if key.starts_with("state_net.") {
            self.state_net = true;
        }
    }

    /// (projection_dropout, projection_layers) from the Sequential indices.
    ///
    /// direction_net blocks are Linear, LayerNorm, SiLU (, Dropout): 3 or 4 indices, the
    /// output Linear at n_layers × block; radius_net blocks are Linear, SiLU (, Dropout).
    /// Index 3 is a Linear/LayerNorm only without dropout; with dropout it is the Dropout.
    fn projection_shape(&self) -> (Option<bool>, Option<u64>) {
        let dropout =
            if !self.direction.is_empty() && (self.direction.has(3) || self.direction.has(4)) {
                Some(!self.direction.has(3))
            } else if !self.radius.is_empty() && (self.radius.has(2) || self.radius.has(3)) {
                Some(!self.radius.has(2))
            } else {
                None
            };
        let layers = dropout.and_then(|d| {
            let per = |net: &Indices, block: u64| {
                net.max
                    .filter(|m| *m > 0 && m % block == 0)
                    .map(|m| m / block)
            };
            per(&self.direction, 3 + u64::from(d)).or_else(|| per(&self.radius, 2 + u64::from(d)))
        });
        (dropout, layers)
    }

    /// The solved value of each parameter (None = the shapes do not say).
    fn solve(&self) -> [Option<i64>; Param::ALL.len()] {
        let int = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
        let has_proj = self.proj_single + self.proj_dual > 0;
        let (dropout, layers) = self.projection_shape();
        let kind = |improved: u32, frozen: u32| {
            (improved + frozen > 0).then(|| i64::from(improved > frozen))
        };
        let mut out = [None; Param::ALL.len()];
        for (slot, p) in Param::ALL.iter().enumerate() {
            out[slot] = match p {
                Param::LatentDim => int(self.latent.winner()),
                Param::HiddenDim => int(self.hidden.winner()),
                Param::ProjectionLayers => int(layers),
                Param::ProjectionDropout => dropout.map(i64::from),
                Param::DualProjection => {
                    has_proj.then(|| i64::from(self.proj_dual > self.proj_single))
                }
                Param::ShareDirection => has_proj.then(|| i64::from(self.proj_shared > 0)),
                Param::Controller => Some(i64::from(self.controller)),
                Param::StateNet => Some(i64::from(self.state_net)),
                Param::Encoder => kind(self.enc_improved, self.enc_frozen),
                Param::Decoder => kind(self.dec_improved, self.dec_frozen),
            };
        }
        out
    }
}

/// Fit solved values (then hints, then defaults) into a version's domain.
fn fit(version: &Version, solved: &[Option<i64>], hints: &Hints) -> LayoutParams {
    let mut p = LayoutParams::default();
    for d in &version.params {
        let slot = Param::ALL.iter().position(|x| *x == d.param).unwrap_or(0);
        let v = solved[slot]
            .or_else(|| hints.get(d.param))
            .unwrap_or(d.default);
        d.param.set(&mut p, d.conform(v));
    }
    p
}

// ---------------------------------------------------------------------------------------
// Inference
// ---------------------------------------------------------------------------------------

/// Infer the model version and layout parameters of a state_dict from its keys and shapes.
///
/// The parameters are solved from the shapes (latent_dim from `fc_mu` rows and friends,
/// hidden_dim from `direction_net.0`, n_layers / dropout from the Sequential indices, dual
/// from `proj_A`/`proj_B`, controller from `controller.net.*`, encoder kind from the
/// LayerNorm at `encoder.1`; majority votes where several keys say the same thing), then
/// every catalog version's layout is generated with those parameters (fitted into its
/// domain) and scored. Candidates rank by confidence, then by how close the parameters are
/// to the version's canonical configuration, then by catalog order. `hints` (metadata) fill
/// parameters the shapes do not determine and, through the model class, separate
/// shape-identical versions.
///
/// Linear in the number of keys; no allocation proportional to anything else.
pub fn infer<K: AsRef<str>, S: AsRef<[u64]>>(keys: &[(K, S)], hints: &Hints) -> Inference {
    infer_impl(keys, hints, true)
}

/// [`infer`] without `candidates` (only `best`, `ambiguous_with`, `stripped_prefix` and
/// `notes`), which spares writing out every other version's differences.
pub(crate) fn infer_best<K: AsRef<str>, S: AsRef<[u64]>>(
    keys: &[(K, S)],
    hints: &Hints,
) -> Inference {
    infer_impl(keys, hints, false)
}

fn infer_impl<K: AsRef<str>, S: AsRef<[u64]>>(
    keys: &[(K, S)],
    hints: &Hints,
    all_candidates: bool,
) -> Inference {
    let mut out = Inference::default();
    let mut pairs: Vec<(&str, &[u64])> =
        keys.iter().map(|(k, s)| (k.as_ref(), s.as_ref())).collect();
    if pairs.is_empty() {
        out.notes.push("no tensors".into());
        return out;
    }
    // DataParallel / DDP wrappers save every key under `module.`.
    const WRAPPER: &str = "module.";
    if pairs.iter().all(|(k, _)| k.starts_with(WRAPPER)) {
        for p in &mut pairs {
            p.0 = &p.0[WRAPPER.len()..];
        }
        out.stripped_prefix = Some(WRAPPER.into());
        out.notes.push(format!(
            "every key starts with `{WRAPPER}` (a DataParallel wrapper): matched without it"
        ));
    }

    let cat = catalog();
    let actual = Actual::new(pairs);
    let solved = Evidence::gather(&actual.keys).solve();
    let class: Option<&ModelClass> = hints
        .model_class
        .as_deref()
        .and_then(|c| cat.model_class(c));

    let mut ranked: Vec<Scored> = Vec::with_capacity(cat.versions().len());
    let mut used = Vec::new();
    for (order, v) in cat.versions().iter().enumerate() {
        let params = fit(v, &solved, hints);
        let layout = cat.layout(v.id, &params);
        // Versions sharing a layout fit alike.
        let f = match ranked.iter().find(|r| Arc::ptr_eq(&r.layout, &layout)) {
            Some(r) => r.fit.clone(),
            None => actual.fit_layout(&layout, &mut used),
        };
        let mut confidence = f.agreement();
        if class.is_some_and(|c| !c.builds.contains(&v.id)) {
            confidence *= CLASS_MISMATCH_FACTOR;
        }
        ranked.push(Scored {
            version: v.id,
            params,
            confidence,
            layout,
            fit: f,
            deviations: v.deviations(&params),
            order,
        });
    }
    if ranked.iter().all(|c| c.fit.matched == 0) {
        out.notes
            .push("no key of any catalog layout is present".into());
        return out;
    }
    ranked.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then(a.deviations.cmp(&b.deviations))
            .then(a.order.cmp(&b.order))
    });
    if all_candidates {
        out.candidates = ranked.iter().map(|r| r.candidate(&actual)).collect();
    }

    let top = &ranked[0];
    if top.confidence < MIN_CONFIDENCE {
        out.notes.push(format!(
            "no catalog layout fits: closest is {} at {:.0}%",
            top.version.display_name(),
            top.confidence * 100.0
        ));
        return out;
    }
    let best = match out.candidates.first() {
        Some(c) => c.clone(),
        None => top.candidate(&actual),
    };
    out.ambiguous_with = ranked[1..]
        .iter()
        .filter(|c| c.same_fit(top, &actual))
        .map(|c| c.version)
        .collect();
    let ranked_versions: Vec<(VersionId, usize)> =
        ranked.iter().map(|r| (r.version, r.deviations)).collect();
    notes_for(
        &mut out.notes,
        &best,
        &out.ambiguous_with,
        &ranked_versions,
        hints,
        class,
    );
    out.best = Some(best);
    out
}

fn names(ids: &[VersionId]) -> String {
    ids.iter()
        .map(|v| v.display_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `ranked`: every version with its deviations from canonical, best first.
fn notes_for(
    notes: &mut Vec<String>,
    best: &Candidate,
    ambiguous: &[VersionId],
    ranked: &[(VersionId, usize)],
    hints: &Hints,
    class: Option<&ModelClass>,
) {
    let cat = catalog();
    if !ambiguous.is_empty() {
        let others = names(ambiguous);
        let canonical = ranked
            .iter()
            .filter(|(v, _)| ambiguous.contains(v))
            .all(|(_, d)| *d > ranked[0].1);
        let why = if canonical {
            format!("the canonical layout for {}", best.summary())
        } else {
            "the first in catalog order".into()
        };
        match (&hints.model_class, class) {
            (None, _) => notes.push(format!(
                "shapes cannot distinguish {} from {others}; no model class in the metadata: reporting {}, {why}",
                best.display, best.display
            )),
            (Some(name), Some(c)) if c.builds.contains(&best.version) && ambiguous.iter().any(|v| !c.builds.contains(v)) => {
                let same: Vec<VersionId> = ambiguous.iter().copied().filter(|v| c.builds.contains(v)).collect();
                if same.is_empty() {
                    notes.push(format!(
                        "shapes are identical for {} and {others}; model class {name} selects {}",
                        best.display, best.display
                    ));
                } else {
                    notes.push(format!(
                        "shapes are identical for {} and {others}; model class {name} builds {} and {}: reporting {}, {why}",
                        best.display,
                        best.display,
                        names(&same),
                        best.display
                    ));
                }
            }
            (Some(name), _) => notes.push(format!(
                "shapes are identical for {} and {others}, and model class {name} does not separate them: reporting {}, {why}",
                best.display, best.display
            )),
        }
    }
    match (&hints.model_class, class) {
        (Some(name), None) => notes.push(format!("model class {name} is not in the catalog")),
        (Some(name), Some(c)) if !c.builds.contains(&best.version) => notes.push(format!(
            "metadata names model class {name}, which builds {}; the weights fit {} better",
            names(&c.builds),
            best.display
        )),
        _ => {}
    }
    // Config values that disagree with the weights (the audit's failure mode).
    let v = cat.version(best.version);
    for d in &v.params {
        if let Some(h) = hints.get(d.param) {
            let actual = d.param.get(&best.params);
            if h != actual {
                notes.push(format!(
                    "config says {} = {}, the weights have {}",
                    d.param.name(),
                    d.param.format_value(h),
                    d.param.format_value(actual)
                ));
            }
        }
    }
    if !best.is_exact() {
        notes.push(format!(
            "partial fit to {}: {} missing, {} unexpected, {} with another shape",
            best.display,
            best.keys.missing.len(),
            best.keys.unexpected.len(),
            best.keys.mismatched.len()
        ));
    }
}

// ---------------------------------------------------------------------------------------
// From a config to a layout
// ---------------------------------------------------------------------------------------

/// The layout a training config describes (see [`resolve_config`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigLayout {
    pub version: VersionId,
    /// The config's values (defaults of `version` where the config is silent). Values
    /// outside the version's domain are kept as configured and listed in `conflicts`.
    pub params: LayoutParams,
    /// Parameters outside `version`'s domain, e.g. `projection_layers = 3 (v5.12 needs = 2)`.
    pub conflicts: Vec<String>,
}

/// Resolve a config (as [`Hints`], e.g. from [`Hints::from_config`]) to the version and
/// parameters it builds: among the versions its model class builds (every version when the
/// config names none), the one with the fewest conflicts, then closest to canonical, then
/// first in catalog order. `None` for a model class the catalog does not know.
pub fn resolve_config(hints: &Hints) -> Option<ConfigLayout> {
    let cat = catalog();
    let builds: Vec<VersionId> = match &hints.model_class {
        Some(name) => cat.model_class(name)?.builds.clone(),
        None => cat.versions().iter().map(|v| v.id).collect(),
    };
    builds
        .iter()
        .enumerate()
        .map(|(order, id)| {
            let v = cat.version(*id);
            let mut params = LayoutParams::default();
            let mut conflicts = Vec::new();
            for d in &v.params {
                let value = hints.get(d.param).unwrap_or(d.default);
                if !d.admits(value) {
                    conflicts.push(format!(
                        "{} = {} ({} needs {})",
                        d.param.name(),
                        d.param.format_value(value),
                        v.display,
                        d.describe()
                    ));
                }
                d.param.set(&mut params, value);
            }
            let key = (conflicts.len(), v.deviations(&params), order);
            (
                key,
                ConfigLayout {
                    version: *id,
                    params,
                    conflicts,
                },
            )
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, c)| c)
}
