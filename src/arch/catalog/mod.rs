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
pub const CATALOG_YAML: &str = include_str!("../catalog.yaml");

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

mod compiled;
mod emit;
mod load;
mod params;
mod schema;

pub use compiled::*;
pub use load::CatalogError;
use load::*;
pub use params::*;
use schema::*;
