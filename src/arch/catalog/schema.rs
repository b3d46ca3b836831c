//! The YAML schema of `catalog.yaml`, as parsed before validation.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCatalog {
    pub(super) schema: u32,
    #[serde(default)]
    pub(super) derived: serde_yaml::Mapping,
    pub(super) components: BTreeMap<String, RawComponent>,
    pub(super) versions: Vec<RawVersion>,
    pub(super) model_classes: Vec<RawModelClass>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComponent {
    #[serde(default)]
    #[allow(dead_code)]
    pub(super) doc: Option<String>,
    pub(super) layout: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVersion {
    pub(super) id: String,
    pub(super) display: String,
    pub(super) family: String,
    #[serde(default)]
    pub(super) doc: Option<String>,
    pub(super) params: BTreeMap<String, RawParamSpec>,
    pub(super) layout: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawParamSpec {
    pub(super) default: Option<RawScalar>,
    pub(super) fixed: Option<RawScalar>,
    pub(super) min: Option<i64>,
    pub(super) max: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModelClass {
    pub(super) name: String,
    pub(super) builds: Vec<String>,
    pub(super) requires_frozen: bool,
    #[serde(default)]
    pub(super) accepts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntry {
    pub(super) name: Option<String>,
    pub(super) tensor: Option<Vec<RawScalar>>,
    pub(super) linear: Option<Vec<RawScalar>>,
    pub(super) bias: Option<RawScalar>,
    pub(super) layernorm: Option<RawScalar>,
    pub(super) sequential: Option<Vec<RawLayer>>,
    pub(super) component: Option<String>,
    pub(super) at: Option<String>,
    pub(super) when: Option<RawScalar>,
    #[serde(default)]
    #[allow(dead_code)]
    pub(super) doc: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLayer {
    pub(super) linear: Vec<RawScalar>,
    pub(super) bias: Option<RawScalar>,
    pub(super) norm: Option<RawScalar>,
    pub(super) act: Option<RawScalar>,
    pub(super) dropout: Option<RawScalar>,
    pub(super) repeat: Option<RawScalar>,
    pub(super) when: Option<RawScalar>,
}

/// A YAML scalar that is an expression: a boolean, an integer or expression text.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawScalar {
    Bool(bool),
    Int(i64),
    Str(String),
}
