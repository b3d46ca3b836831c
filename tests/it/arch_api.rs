//! The arch API as other modules use it: borrowed keys, JSON output, config resolution.

use tvck::arch::{self, Hints, VersionId};

#[test]
fn borrowed_keys_and_round_trip() {
    let params = arch::default_params(VersionId::V5_12_4);
    let owned = arch::expected_layout(VersionId::V5_12_4, &params);
    // Callers holding (path, shape) pairs can pass borrowed slices.
    let borrowed: Vec<(&str, &[u64])> = owned
        .iter()
        .map(|(k, s)| (k.as_str(), s.as_slice()))
        .collect();
    let inf = arch::infer(&borrowed, &Hints::class("TernaryVAEV5_11_PartialFreeze"));
    let best = inf.best.expect("a version");
    assert_eq!(best.version, VersionId::V5_12_4);
    assert_eq!(best.confidence, 1.0);
    assert_eq!(best.summary(), "L16 H64 dual 2L drop ctrl improved");
    assert!(arch::compare_layout(&owned, &borrowed).is_exact());

    let json = serde_json::to_string(&best).unwrap();
    assert!(json.contains("\"version\":\"v5_12_4\""), "{json}");
}

#[test]
fn matrix_and_resolution() {
    assert!(arch::required_frozen("TernaryVAEV5_11_PartialFreeze"));
    assert_eq!(
        arch::compatible_sources("TernaryVAEV5_12"),
        &[VersionId::V5_12, VersionId::V5_12_4]
    );
    let hints = Hints {
        model_class: Some("TernaryVAEV5_11".into()),
        latent_dim: Some(8),
        hidden_dim: Some(32),
        ..Hints::default()
    };
    let layout = arch::resolve_config(&hints).unwrap();
    assert_eq!(layout.version, VersionId::V5_11);
    assert_eq!(layout.params.to_string(), "L8 H32 single 1L");
    assert_eq!(
        "v5.11 (PartialFreeze)".parse::<VersionId>().unwrap(),
        VersionId::V5_11PartialFreeze
    );
}
