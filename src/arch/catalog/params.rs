//! Version identifiers, layout parameters and their domains.

use super::*;

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

    pub(super) fn ordinal(self) -> usize {
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
    pub(super) fn as_str(self) -> &'static str {
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
pub(super) enum ParamType {
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
    pub(super) fn var(self) -> &'static str {
        match self {
            Param::Encoder => "improved_encoder",
            Param::Decoder => "improved_decoder",
            p => p.name(),
        }
    }

    pub(super) fn ty(self) -> ParamType {
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
