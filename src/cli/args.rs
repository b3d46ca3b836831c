//! Argument types shared by several commands.

use tvck::arch::VersionId;

/// A model version, as the catalog names it (`v5_11_partial_freeze`): clap lists the
/// catalog's ids as the possible values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version(pub VersionId);

static VERSIONS: [Version; VersionId::ALL.len()] = {
    let mut out = [Version(VersionId::V5_5); VersionId::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = Version(VersionId::ALL[i]);
        i += 1;
    }
    out
};

impl clap::ValueEnum for Version {
    fn value_variants<'a>() -> &'a [Self] {
        &VERSIONS
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.0.as_str()))
    }
}

/// The output format of `convert`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    Pt,
    Safetensors,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn every_catalog_version_is_a_value() {
        for id in VersionId::ALL {
            assert_eq!(Version::from_str(id.as_str(), false), Ok(Version(id)));
        }
        assert!(Version::from_str("v9", false).is_err());
    }
}
