//! Parsing and validating `catalog.yaml` into a [`Catalog`]: every expression compiled,
//! every name resolved, parameter domains checked, component cycles rejected.

use super::*;
use crate::arch::expr::ExprError;

/// Why a catalog does not validate. Messages name the place (`version \`v5_11\`: entry 3:
/// layer 0`) through [`CatalogError::In`].
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The error `source`, inside the part `at` of the catalog.
    #[error("{at}: {source}")]
    In {
        at: String,
        #[source]
        source: Box<CatalogError>,
    },
    #[error("unsupported schema {0}")]
    Schema(u32),
    #[error("unknown version id `{0}`")]
    UnknownVersionId(String),
    #[error("unknown parameter `{0}`")]
    UnknownParameter(String),
    #[error("unknown component `{0}`")]
    UnknownComponent(String),
    #[error("{what} `{name}` defined twice")]
    DefinedTwice { what: &'static str, name: String },
    #[error("version `{0}` is not defined")]
    NotDefined(&'static str),
    #[error("model class `{0}` builds nothing")]
    BuildsNothing(String),
    #[error("component cycle (or nesting deeper than {max_nesting}): {}", path.join(" -> "))]
    Cycle {
        /// The components of the cycle, the repeated one last.
        path: Vec<String>,
        max_nesting: usize,
    },
    #[error("expression `{text}`: {source}")]
    Expression {
        text: String,
        #[source]
        source: ExprError,
    },
    #[error("default {0} is outside its own domain")]
    DefaultOutsideDomain(i64),
    #[error("bad name `{0}`")]
    BadName(String),
    #[error("bad prefix `{0}`")]
    BadPrefix(String),
    /// A rule of the schema that the text breaks (the rule is the message).
    #[error("{0}")]
    Rule(&'static str),
}

impl CatalogError {
    /// This error, inside the part `at`.
    fn within(self, at: impl Into<String>) -> CatalogError {
        CatalogError::In {
            at: at.into(),
            source: Box::new(self),
        }
    }
}

pub(super) const MAX_NESTING: usize = 32;

impl Catalog {
    /// Parse and validate a catalog. Every expression is compiled, every component and
    /// version reference resolved, component cycles rejected, and each [`VersionId`] must be
    /// defined exactly once.
    pub fn from_yaml(src: &str) -> Result<Catalog, ArchError> {
        let raw: RawCatalog = serde_yaml::from_str(src)?;
        if raw.schema != 1 {
            return Err(bad(CatalogError::Schema(raw.schema)));
        }

        // Variables: the parameters, then the derived names in order.
        let mut vars: Vec<String> = Param::ALL.iter().map(|p| p.var().to_string()).collect();
        let mut derived = Vec::new();
        for (k, v) in &raw.derived {
            let name = k
                .as_str()
                .ok_or_else(|| bad(CatalogError::Rule("names must be strings").within("derived")))?
                .to_string();
            if !is_ident(&name) || vars.contains(&name) {
                return Err(bad(
                    CatalogError::Rule("not a new identifier").within(format!("derived `{name}`"))
                ));
            }
            let rawx: RawScalar = serde_yaml::from_value(v.clone())?;
            let e =
                compile(&rawx, &vars).map_err(|m| bad(m.within(format!("derived `{name}`"))))?;
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
                .map_err(|m| bad(m.within(format!("component `{name}`"))))?;
            components.push(Component {
                name: name.clone(),
                layout,
            });
        }

        let mut versions: Vec<Version> = Vec::new();
        for v in &raw.versions {
            let id = parse_id(&v.id).map_err(|m| bad(m.within("versions")))?;
            if versions.iter().any(|o| o.id == id) {
                return Err(bad(CatalogError::DefinedTwice {
                    what: "version",
                    name: v.id.clone(),
                }));
            }
            let family = parse_id(&v.family)
                .map_err(|m| bad(m.within("family").within(format!("version `{}`", v.id))))?;
            let mut params = Vec::new();
            for (pname, spec) in &v.params {
                let param = Param::from_name(pname).ok_or_else(|| {
                    bad(CatalogError::UnknownParameter(pname.clone())
                        .within(format!("version `{}`", v.id)))
                })?;
                params.push(domain(param, spec).map_err(|m| {
                    bad(m
                        .within(pname.as_str())
                        .within(format!("version `{}`", v.id)))
                })?);
            }
            params.sort_by_key(|d| Param::ALL.iter().position(|p| *p == d.param));
            let layout = ctx
                .entries(&v.layout)
                .map_err(|m| bad(m.within(format!("version `{}`", v.id))))?;
            if v.display.trim().is_empty() {
                return Err(bad(
                    CatalogError::Rule("empty display name").within(format!("version `{}`", v.id))
                ));
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
            return Err(bad(CatalogError::NotDefined(missing.as_str())));
        }

        let mut model_classes: Vec<ModelClass> = Vec::new();
        for mc in &raw.model_classes {
            if model_classes.iter().any(|o| o.name == mc.name) {
                return Err(bad(CatalogError::DefinedTwice {
                    what: "model class",
                    name: mc.name.clone(),
                }));
            }
            let ids = |list: &[String], what: &str| -> Result<Vec<VersionId>, ArchError> {
                list.iter()
                    .map(|s| {
                        parse_id(s).map_err(|m| {
                            bad(m.within(what).within(format!("model class `{}`", mc.name)))
                        })
                    })
                    .collect()
            };
            let builds = ids(&mc.builds, "builds")?;
            if builds.is_empty() {
                return Err(bad(CatalogError::BuildsNothing(mc.name.clone())));
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

    pub(super) fn check_acyclic(&self) -> Result<(), ArchError> {
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
                        let path = path
                            .iter()
                            .chain([&index])
                            .map(|i| cat.components[*i].name.clone())
                            .collect();
                        return Err(bad(CatalogError::Cycle {
                            path,
                            max_nesting: MAX_NESTING,
                        }));
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
}

pub(super) fn bad(msg: CatalogError) -> ArchError {
    ArchError::Catalog(msg)
}

pub(super) fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn is_key_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|seg| {
            !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

pub(super) fn parse_id(s: &str) -> Result<VersionId, CatalogError> {
    VersionId::ALL
        .iter()
        .copied()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| CatalogError::UnknownVersionId(s.to_string()))
}

pub(super) fn compile(raw: &RawScalar, vars: &[String]) -> Result<Expr, CatalogError> {
    match raw {
        RawScalar::Bool(b) => Ok(Expr::Int(i64::from(*b))),
        RawScalar::Int(i) => Ok(Expr::Int(*i)),
        RawScalar::Str(s) => {
            expr::parse(s, &|name| vars.iter().position(|v| v == name)).map_err(|source| {
                CatalogError::Expression {
                    text: s.clone(),
                    source,
                }
            })
        }
    }
}

pub(super) fn domain(param: Param, spec: &RawParamSpec) -> Result<ParamDomain, CatalogError> {
    let value = |raw: &RawScalar| -> Result<i64, CatalogError> {
        match (param.ty(), raw) {
            (ParamType::Int, RawScalar::Int(i)) => Ok(*i),
            (ParamType::Bool, RawScalar::Bool(b)) => Ok(i64::from(*b)),
            (ParamType::Kind, RawScalar::Str(s)) if s == "frozen" => Ok(0),
            (ParamType::Kind, RawScalar::Str(s)) if s == "improved" => Ok(1),
            (ParamType::Int, _) => Err(CatalogError::Rule("expected an integer")),
            (ParamType::Bool, _) => Err(CatalogError::Rule("expected true or false")),
            (ParamType::Kind, _) => Err(CatalogError::Rule("expected `frozen` or `improved`")),
        }
    };
    let fixed = spec.fixed.as_ref().map(value).transpose()?;
    let default = spec.default.as_ref().map(value).transpose()?;
    if (spec.min.is_some() || spec.max.is_some()) && param.ty() != ParamType::Int {
        return Err(CatalogError::Rule(
            "min/max only apply to integer parameters",
        ));
    }
    let d = ParamDomain {
        param,
        default: match (default, fixed) {
            (Some(d), _) => d,
            (None, Some(f)) => f,
            (None, None) => return Err(CatalogError::Rule("needs `default` or `fixed`")),
        },
        fixed,
        min: spec.min,
        max: spec.max,
    };
    if !d.admits(d.default) {
        return Err(CatalogError::DefaultOutsideDomain(d.default));
    }
    Ok(d)
}

pub(super) struct Ctx<'a> {
    pub(super) vars: &'a [String],
    pub(super) components: &'a [&'a String],
}

impl Ctx<'_> {
    pub(super) fn expr(&self, raw: &RawScalar) -> Result<Expr, CatalogError> {
        compile(raw, self.vars)
    }

    pub(super) fn opt(&self, raw: &Option<RawScalar>, default: i64) -> Result<Expr, CatalogError> {
        raw.as_ref()
            .map_or(Ok(Expr::Int(default)), |r| self.expr(r))
    }

    pub(super) fn entries(&self, raw: &[RawEntry]) -> Result<Vec<Entry>, CatalogError> {
        raw.iter()
            .enumerate()
            .map(|(i, e)| self.entry(e).map_err(|m| m.within(format!("entry {i}"))))
            .collect()
    }

    pub(super) fn name(&self, e: &RawEntry) -> Result<String, CatalogError> {
        let name = e.name.clone().ok_or(CatalogError::Rule("needs `name`"))?;
        if !is_key_path(&name) {
            return Err(CatalogError::BadName(name));
        }
        Ok(name)
    }

    pub(super) fn entry(&self, e: &RawEntry) -> Result<Entry, CatalogError> {
        let kinds = [
            e.tensor.is_some(),
            e.linear.is_some(),
            e.layernorm.is_some(),
            e.sequential.is_some(),
            e.component.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(CatalogError::Rule(
                "needs exactly one of tensor, linear, layernorm, sequential, component",
            ));
        }
        if e.bias.is_some() && e.linear.is_none() {
            return Err(CatalogError::Rule("`bias` only applies to `linear`"));
        }
        if e.at.is_some() && e.component.is_none() {
            return Err(CatalogError::Rule("`at` only applies to `component`"));
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
                return Err(CatalogError::Rule("`linear` takes [out, in]"));
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
                .map(|(i, l)| self.layer(l).map_err(|m| m.within(format!("layer {i}"))))
                .collect::<Result<Vec<_>, _>>()?;
            EntryKind::Sequential {
                name: self.name(e)?,
                layers,
            }
        } else {
            let comp = e.component.as_deref().unwrap_or_default();
            if e.name.is_some() {
                return Err(CatalogError::Rule(
                    "a `component` entry takes `at`, not `name`",
                ));
            }
            let index = self
                .components
                .iter()
                .position(|c| c.as_str() == comp)
                .ok_or_else(|| CatalogError::UnknownComponent(comp.to_string()))?;
            if let Some(at) = &e.at {
                if !is_key_path(at) {
                    return Err(CatalogError::BadPrefix(at.clone()));
                }
            }
            EntryKind::Component {
                index,
                at: e.at.clone(),
            }
        };
        Ok(Entry { when, kind })
    }

    pub(super) fn layer(&self, l: &RawLayer) -> Result<Layer, CatalogError> {
        let [o, i] = l.linear.as_slice() else {
            return Err(CatalogError::Rule("`linear` takes [out, in]"));
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
