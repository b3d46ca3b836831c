//! Tests of the catalog, layout generation and inference against the real fixtures' keys.

use super::*;
use crate::format::Value;

const FIXTURES: &str = include_str!("testdata/fixtures.txt");

/// The key/shape list of one fixture section of testdata/fixtures.txt.
fn fixture(name: &str) -> Vec<KeyShape> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in FIXTURES.lines() {
        if let Some(head) = line.strip_prefix("== ") {
            inside = head.split_whitespace().next() == Some(name);
            continue;
        }
        if !inside || line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, shape) = line.split_once(": ").expect("key: [shape]");
        let shape = shape.trim_start_matches('[').trim_end_matches(']');
        let dims = shape
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u64>().unwrap())
            .collect();
        out.push((key.to_string(), dims));
    }
    assert!(!out.is_empty(), "no fixture {name}");
    out
}

fn params(f: impl FnOnce(&mut LayoutParams)) -> LayoutParams {
    let mut p = LayoutParams::default();
    f(&mut p);
    p
}

fn v5_11_params(f: impl FnOnce(&mut LayoutParams)) -> LayoutParams {
    let mut p = default_params(VersionId::V5_11);
    f(&mut p);
    p
}

fn dict(items: &[(&str, Value)]) -> Value {
    Value::Dict(
        items
            .iter()
            .map(|(k, v)| (Value::Str((*k).into()), v.clone()))
            .collect(),
    )
}

fn s(v: &str) -> Value {
    Value::Str(v.into())
}

fn sorted(mut v: Vec<KeyShape>) -> Vec<KeyShape> {
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// Catalog
// ---------------------------------------------------------------------------------------

#[test]
fn embedded_catalog_parses_and_is_consistent() {
    let cat = Catalog::from_yaml(CATALOG_YAML).expect("catalog.yaml must load");
    assert_eq!(cat.versions().len(), VersionId::ALL.len());
    for id in VersionId::ALL {
        let v = cat.version(id);
        assert_eq!(v.id, id);
        assert!(
            !v.model_classes.is_empty(),
            "{} is built by no model class",
            id.as_str()
        );
        let defaults = v.defaults();
        v.check(&defaults).unwrap();
        let layout = cat.expected_layout(id, &defaults);
        assert!(!layout.is_empty());
        let mut keys: Vec<&str> = layout.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        let n = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), n, "{}: duplicate keys", id.as_str());
    }
    // The static accessor agrees.
    assert_eq!(catalog().versions().len(), VersionId::ALL.len());
}

#[test]
fn version_ids_and_names() {
    for id in VersionId::ALL {
        assert_eq!(id.as_str().parse::<VersionId>().unwrap(), id);
        assert_eq!(id.display_name().parse::<VersionId>().unwrap(), id);
        assert_eq!(id.to_string(), id.display_name());
    }
    assert_eq!(VersionId::V5_5.display_name(), "v5.5");
    assert_eq!(VersionId::V5_11.display_name(), "v5.11");
    assert_eq!(
        VersionId::V5_11PartialFreeze.display_name(),
        "v5.11 (PartialFreeze)"
    );
    assert_eq!(VersionId::V5_12.display_name(), "v5.12");
    assert_eq!(VersionId::V5_12_4.display_name(), "v5.12.4");
    assert!(matches!(
        "v6".parse::<VersionId>(),
        Err(ArchError::UnknownVersion(_))
    ));
    assert_eq!(
        serde_json::to_string(&VersionId::V5_12_4).unwrap(),
        "\"v5_12_4\""
    );
}

/// A minimal valid catalog, to mutate into broken ones.
const MINI: &str = r#"
schema: 1
derived: {L: latent_dim}
components:
  enc:
    layout:
      - {name: fc_mu, linear: [L, 64]}
versions:
  - {id: v5_5, display: a, family: v5_5, params: {latent_dim: {default: 16}}, layout: [{component: enc, at: e}]}
  - {id: v5_11, display: b, family: v5_11, params: {}, layout: []}
  - {id: v5_11_partial_freeze, display: c, family: v5_11, params: {}, layout: []}
  - {id: v5_12, display: d, family: v5_12, params: {}, layout: []}
  - {id: v5_12_4, display: e, family: v5_12_4, params: {}, layout: []}
model_classes:
  - {name: X, builds: [v5_5], requires_frozen: false}
"#;

#[test]
fn malformed_catalogs_are_rejected() {
    let cat = Catalog::from_yaml(MINI).expect("the mini catalog is valid");
    assert_eq!(
        cat.expected_layout(VersionId::V5_5, &params(|p| p.latent_dim = 8)),
        vec![
            ("e.fc_mu.weight".to_string(), vec![8, 64]),
            ("e.fc_mu.bias".to_string(), vec![8])
        ]
    );
    let broken = [
        ("not yaml", "schema: [".to_string()),
        ("schema", MINI.replace("schema: 1", "schema: 2")),
        ("unknown variable", MINI.replace("[L, 64]", "[Q, 64]")),
        ("bad expression", MINI.replace("[L, 64]", "[\"L +\", 64]")),
        (
            "unknown component",
            MINI.replace("component: enc", "component: nope"),
        ),
        (
            "cycle",
            MINI.replace("- {name: fc_mu, linear: [L, 64]}", "- {component: enc}"),
        ),
        (
            "two kinds",
            MINI.replace("linear: [L, 64]}", "linear: [L, 64], layernorm: 3}"),
        ),
        ("no kind", MINI.replace("linear: [L, 64]}", "bias: true}")),
        ("linear arity", MINI.replace("[L, 64]", "[L]")),
        (
            "unknown field",
            MINI.replace("{name: fc_mu,", "{name: fc_mu, colour: red,"),
        ),
        ("bad name", MINI.replace("name: fc_mu", "name: \"fc mu\"")),
        (
            "missing version",
            MINI.replace(
                "  - {id: v5_12_4, display: e, family: v5_12_4, params: {}, layout: []}\n",
                "",
            ),
        ),
        (
            "duplicate version",
            MINI.replace("id: v5_12_4", "id: v5_12"),
        ),
        ("unknown version", MINI.replace("id: v5_12_4", "id: v9")),
        (
            "unknown param",
            MINI.replace("latent_dim: {default: 16}", "width: {default: 16}"),
        ),
        (
            "param type",
            MINI.replace("latent_dim: {default: 16}", "latent_dim: {default: true}"),
        ),
        (
            "param default",
            MINI.replace("latent_dim: {default: 16}", "latent_dim: {}"),
        ),
        (
            "default outside domain",
            MINI.replace(
                "latent_dim: {default: 16}",
                "latent_dim: {default: 16, max: 8}",
            ),
        ),
        (
            "class builds unknown",
            MINI.replace("builds: [v5_5]", "builds: [v4]"),
        ),
        (
            "class builds nothing",
            MINI.replace("builds: [v5_5]", "builds: []"),
        ),
        (
            "derived shadows",
            MINI.replace("{L: latent_dim}", "{latent_dim: 3}"),
        ),
    ];
    for (what, src) in broken {
        assert!(
            Catalog::from_yaml(&src).is_err(),
            "{what}: should be rejected"
        );
    }
}

#[test]
fn catalog_errors_say_where_and_what() {
    let src = MINI.replace("builds: [v5_5]", "builds: [v4]");
    let e = Catalog::from_yaml(&src).unwrap_err();
    let ArchError::Catalog(CatalogError::In { at, source }) = &e else {
        panic!("{e:?}");
    };
    assert!(at.starts_with("model class `"), "{at}");
    assert!(
        matches!(&**source, CatalogError::In { at, source } if at == "builds"
            && matches!(&**source, CatalogError::UnknownVersionId(v) if v == "v4")),
        "{source:?}"
    );
    assert!(
        e.to_string().ends_with(": builds: unknown version id `v4`"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------
// Layouts
// ---------------------------------------------------------------------------------------

#[test]
fn layout_reproduces_v5_5_fixtures_in_order() {
    let p = default_params(VersionId::V5_5);
    assert_eq!(
        p,
        params(|p| {
            p.latent_dim = 16;
            p.state_net = true;
        })
    );
    let layout = expected_layout(VersionId::V5_5, &p);
    assert_eq!(layout, fixture("v5_5"));
    assert_eq!(layout, fixture("v5_5_early"));
}

#[test]
fn layout_reproduces_v5_11_single_in_order() {
    let p = default_params(VersionId::V5_11);
    assert_eq!(p.summary(), "L16 H64 single 1L");
    assert_eq!(expected_layout(VersionId::V5_11, &p), fixture("v5_11"));
    assert_eq!(
        expected_layout(VersionId::V5_11PartialFreeze, &p),
        fixture("v5_11")
    );
}

#[test]
fn layout_reproduces_v5_11_partial_freeze_dual_in_order() {
    let p = v5_11_params(|p| {
        p.dual_projection = true;
        p.projection_layers = 1;
        p.projection_dropout = true;
        p.controller = true;
    });
    assert_eq!(p.summary(), "L16 H64 dual 1L drop ctrl");
    assert_eq!(
        expected_layout(VersionId::V5_11PartialFreeze, &p),
        fixture("v5_11_homeostasis")
    );
}

#[test]
fn layout_reproduces_v5_12_4_in_order() {
    let p = default_params(VersionId::V5_12_4);
    assert_eq!(p.summary(), "L16 H64 dual 2L drop ctrl improved");
    let layout = expected_layout(VersionId::V5_12_4, &p);
    assert_eq!(layout, fixture("v5_12_4_state_dict"));
    assert_eq!(layout, fixture("v5_12_4_best_q"));
    assert_eq!(layout, fixture("v5_12_4_legacy"));
}

#[test]
fn projection_table_of_domain_md() {
    // domain.md §2: indices per (n_layers, dropout), R = max(32, H/2).
    let keys = |layers, dropout, hidden| {
        let p = v5_11_params(|p| {
            p.projection_layers = layers;
            p.projection_dropout = dropout;
            p.hidden_dim = hidden;
        });
        expected_layout(VersionId::V5_11, &p)
            .into_iter()
            .filter(|(k, _)| {
                k.ends_with(".weight") && !k.starts_with("encoder") && !k.starts_with("decoder")
            })
            .collect::<Vec<_>>()
    };
    let w = |k: &str, s: &[u64]| (format!("projection.{k}.weight"), s.to_vec());
    assert_eq!(
        keys(1, false, 64),
        vec![
            w("direction_net.0", &[64, 16]),
            w("direction_net.1", &[64]),
            w("direction_net.3", &[16, 64]),
            w("radius_net.0", &[32, 16]),
            w("radius_net.2", &[1, 32]),
        ]
    );
    assert_eq!(
        keys(1, true, 64),
        vec![
            w("direction_net.0", &[64, 16]),
            w("direction_net.1", &[64]),
            w("direction_net.4", &[16, 64]),
            w("radius_net.0", &[32, 16]),
            w("radius_net.3", &[1, 32]),
        ]
    );
    assert_eq!(
        keys(2, false, 128),
        vec![
            w("direction_net.0", &[128, 16]),
            w("direction_net.1", &[128]),
            w("direction_net.3", &[128, 128]),
            w("direction_net.4", &[128]),
            w("direction_net.6", &[16, 128]),
            w("radius_net.0", &[64, 16]),
            w("radius_net.2", &[64, 64]),
            w("radius_net.4", &[1, 64]),
        ]
    );
    assert_eq!(
        keys(3, true, 64),
        vec![
            w("direction_net.0", &[64, 16]),
            w("direction_net.1", &[64]),
            w("direction_net.4", &[64, 64]),
            w("direction_net.5", &[64]),
            w("direction_net.8", &[64, 64]),
            w("direction_net.9", &[64]),
            w("direction_net.12", &[16, 64]),
            w("radius_net.0", &[32, 16]),
            w("radius_net.3", &[32, 32]),
            w("radius_net.6", &[32, 32]),
            w("radius_net.9", &[1, 32]),
        ]
    );
}

#[test]
fn projection_strides_name_the_layout_indices() {
    // The derived `direction_stride` / `radius_stride` (migration specs index with them)
    // agree with the Sequentials the catalog emits, for every layer count and dropout.
    let cat = catalog();
    let slot = |n: &str| cat.var_slot(n).expect(n);
    for layers in 1u64..=4 {
        for dropout in [false, true] {
            for share in [false, true] {
                let p = v5_11_params(|p| {
                    p.projection_layers = layers;
                    p.projection_dropout = dropout;
                    p.dual_projection = true;
                    p.share_direction = share;
                });
                let env = cat.env(&p);
                let stride = |n: &str| u64::try_from(env[slot(n)]).expect("positive");
                let (ds, rs) = (stride("direction_stride"), stride("radius_stride"));
                let layout = expected_layout(VersionId::V5_11, &p);
                let has = |k: String, s: &[u64]| {
                    assert!(
                        layout.iter().any(|(key, shape)| *key == k && shape == s),
                        "{k} {s:?} missing for {layers} layers, dropout {dropout}"
                    )
                };
                let linears = layout
                    .iter()
                    .filter(|(k, _)| k.starts_with("projection.proj_A.") && k.ends_with(".weight"))
                    .count();
                assert_eq!(linears, 3 * layers as usize + 2);
                for k in 0..layers {
                    let (i, o) = if k == 0 { (16, 64) } else { (64, 64) };
                    let d = k * ds;
                    has(
                        format!("projection.proj_A.direction_net.{d}.weight"),
                        &[o, i],
                    );
                    has(
                        format!("projection.proj_A.direction_net.{}.weight", d + 1),
                        &[64],
                    );
                    let (i, o) = if k == 0 { (16, 32) } else { (32, 32) };
                    has(
                        format!("projection.proj_A.radius_net.{}.weight", k * rs),
                        &[o, i],
                    );
                }
                has(
                    format!("projection.proj_A.direction_net.{}.weight", layers * ds),
                    &[16, 64],
                );
                has(
                    format!("projection.proj_A.radius_net.{}.weight", layers * rs),
                    &[1, 32],
                );
                if share {
                    has(format!("projection.proj_B_radius.{rs}.weight"), &[1, 32]);
                }
            }
        }
    }
}

#[test]
fn share_direction_layout() {
    let p = v5_11_params(|p| {
        p.dual_projection = true;
        p.share_direction = true;
    });
    let proj: Vec<KeyShape> = expected_layout(VersionId::V5_11, &p)
        .into_iter()
        .filter(|(k, _)| k.starts_with("projection.proj_B"))
        .collect();
    let k = |k: &str, s: &[u64]| (k.to_string(), s.to_vec());
    assert_eq!(
        proj,
        vec![
            k("projection.proj_B_radius.0.weight", &[32, 16]),
            k("projection.proj_B_radius.0.bias", &[32]),
            k("projection.proj_B_radius.2.weight", &[1, 32]),
            k("projection.proj_B_radius.2.bias", &[1]),
        ]
    );
    let p = LayoutParams {
        projection_dropout: true,
        ..p
    };
    assert!(expected_layout(VersionId::V5_11, &p)
        .iter()
        .any(|(k, s)| k == "projection.proj_B_radius.3.weight" && s == &[1, 32]));
    assert_eq!(p.summary(), "L16 H64 dual-shared 1L drop");
}

#[test]
fn unused_params_are_ignored_and_domains_checked() {
    // v5.5 ignores the projection parameters.
    let mut p = default_params(VersionId::V5_12_4);
    p.state_net = true;
    let a = expected_layout(VersionId::V5_5, &p);
    let b = expected_layout(VersionId::V5_5, &default_params(VersionId::V5_5));
    assert_eq!(a, b);
    assert_eq!(
        version(VersionId::V5_5).restrict(&p).summary(),
        "L16 statenet"
    );

    check_params(VersionId::V5_12, &default_params(VersionId::V5_12)).unwrap();
    let bad = LayoutParams {
        projection_layers: 1,
        ..default_params(VersionId::V5_12)
    };
    let err = check_params(VersionId::V5_12, &bad).unwrap_err();
    assert!(
        matches!(
            err,
            ArchError::ParamOutOfDomain {
                param: "projection_layers",
                ..
            }
        ),
        "{err}"
    );
    let bad = LayoutParams {
        projection_layers: 0,
        ..default_params(VersionId::V5_11)
    };
    assert!(check_params(VersionId::V5_11, &bad).is_err());
    let bad = LayoutParams {
        encoder: EncoderKind::Improved,
        ..default_params(VersionId::V5_11)
    };
    assert!(check_params(VersionId::V5_11, &bad).is_err());
}

#[test]
fn summaries() {
    assert_eq!(default_params(VersionId::V5_5).summary(), "L16 statenet");
    assert_eq!(
        default_params(VersionId::V5_12).summary(),
        "L16 H64 dual 2L drop ctrl"
    );
    assert_eq!(
        default_params(VersionId::V5_12_4).to_string(),
        "L16 H64 dual 2L drop ctrl improved"
    );
    let p = LayoutParams {
        decoder: EncoderKind::Frozen,
        ..default_params(VersionId::V5_12_4)
    };
    assert_eq!(p.summary(), "L16 H64 dual 2L drop ctrl improved-enc");
}

// ---------------------------------------------------------------------------------------
// Inference on the fixtures
// ---------------------------------------------------------------------------------------

fn best(inf: &Inference) -> &Candidate {
    inf.best
        .as_ref()
        .unwrap_or_else(|| panic!("no best: {:?}", inf.notes))
}

#[test]
fn infers_v5_5() {
    for name in ["v5_5", "v5_5_early"] {
        for hints in [Hints::default(), Hints::class("DualNeuralVAEV5")] {
            let inf = infer(&fixture(name), &hints);
            let b = best(&inf);
            assert_eq!(b.version, VersionId::V5_5);
            assert_eq!(b.confidence, 1.0);
            assert!(b.is_exact());
            assert_eq!(b.params, default_params(VersionId::V5_5));
            assert_eq!(b.summary(), "L16 statenet");
            assert!(inf.ambiguous_with.is_empty());
            assert!(inf.notes.is_empty(), "{:?}", inf.notes);
        }
    }
}

#[test]
fn infers_v5_11_single_and_notes_the_ambiguity() {
    let keys = fixture("v5_11");
    let inf = infer(&keys, &Hints::default());
    let b = best(&inf);
    assert_eq!(b.version, VersionId::V5_11);
    assert_eq!(b.confidence, 1.0);
    assert_eq!(b.summary(), "L16 H64 single 1L");
    assert_eq!(inf.ambiguous_with, vec![VersionId::V5_11PartialFreeze]);
    let note = inf.note().unwrap();
    assert!(note.contains("cannot distinguish"), "{note}");

    // The fixture's own config names the class.
    let root = dict(&[(
        "config",
        dict(&[(
            "model",
            dict(&[
                ("name", s("TernaryVAEV5_11")),
                ("latent_dim", Value::Int(16)),
                ("hidden_dim", Value::Int(64)),
                ("use_controller", Value::Bool(false)),
                ("use_dual_projection", Value::Bool(false)),
            ]),
        )]),
    )]);
    let hints = Hints::from_checkpoint(&root);
    assert_eq!(hints.model_class.as_deref(), Some("TernaryVAEV5_11"));
    assert_eq!(hints.latent_dim, Some(16));
    assert_eq!(hints.dual_projection, Some(false));
    let inf = infer(&keys, &hints);
    let b = best(&inf);
    assert_eq!(b.version, VersionId::V5_11);
    assert_eq!(b.confidence, 1.0);
    assert!(
        inf.note().unwrap().contains("selects v5.11"),
        "{:?}",
        inf.notes
    );

    // The PartialFreeze class picks the other, shape-identical version.
    let inf = infer(&keys, &Hints::class("TernaryVAEV5_11_PartialFreeze"));
    assert_eq!(best(&inf).version, VersionId::V5_11PartialFreeze);
    assert_eq!(best(&inf).confidence, 1.0);
}

#[test]
fn infers_v5_11_partial_freeze_dual_with_hints() {
    let keys = fixture("v5_11_homeostasis");
    let expect = v5_11_params(|p| {
        p.dual_projection = true;
        p.projection_dropout = true;
        p.controller = true;
    });

    // No metadata: v5.11, with a note.
    let inf = infer(&keys, &Hints::default());
    let b = best(&inf);
    assert_eq!(b.version, VersionId::V5_11);
    assert_eq!(b.params, expect);
    assert_eq!(b.confidence, 1.0);
    assert_eq!(b.summary(), "L16 H64 dual 1L drop ctrl");
    assert_eq!(inf.ambiguous_with, vec![VersionId::V5_11PartialFreeze]);
    assert!(inf.note().unwrap().contains("cannot distinguish"));

    // The fixture's config.
    let model = dict(&[
        ("name", s("TernaryVAEV5_11_PartialFreeze")),
        ("use_dual_projection", Value::Bool(true)),
        ("projection_layers", Value::Int(1)),
        ("projection_dropout", Value::Float(0.1)),
        ("learnable_curvature", Value::Bool(true)),
        ("use_controller", Value::Bool(true)),
    ]);
    let hints = Hints::from_config(&dict(&[("model", model)]));
    assert_eq!(hints.projection_dropout, Some(true));
    assert_eq!(hints.projection_layers, Some(1));
    let inf = infer(&keys, &hints);
    let b = best(&inf);
    assert_eq!(b.version, VersionId::V5_11PartialFreeze);
    assert_eq!(b.params, expect);
    assert_eq!(b.confidence, 1.0);
    // v5.11 is shape-identical but not built by that class: lower confidence, ranked after.
    assert!(inf.ambiguous_with.contains(&VersionId::V5_11));
    let v511 = inf
        .candidates
        .iter()
        .find(|c| c.version == VersionId::V5_11)
        .unwrap();
    assert!(v511.is_exact() && v511.confidence < 1.0);
}

#[test]
fn infers_v5_12_4() {
    let hints = Hints {
        model_class: Some("TernaryVAEV5_11_PartialFreeze".into()),
        latent_dim: Some(16),
        hidden_dim: Some(64),
        projection_layers: Some(2),
        projection_dropout: Some(true),
        dual_projection: Some(true),
        controller: Some(true),
        encoder: Some(EncoderKind::Improved),
        decoder: Some(EncoderKind::Improved),
        ..Hints::default()
    };
    for name in ["v5_12_4_state_dict", "v5_12_4_best_q", "v5_12_4_legacy"] {
        for h in [&Hints::default(), &hints, &Hints::class("TernaryVAEV5_12")] {
            let inf = infer(&fixture(name), h);
            let b = best(&inf);
            assert_eq!(b.version, VersionId::V5_12_4, "{name}");
            assert_eq!(b.confidence, 1.0);
            assert_eq!(b.params, default_params(VersionId::V5_12_4));
            assert_eq!(b.summary(), "L16 H64 dual 2L drop ctrl improved");
            assert!(inf.ambiguous_with.is_empty());
            assert!(inf.notes.is_empty(), "{:?}", inf.notes);
        }
    }
}

#[test]
fn v5_12_shapes_equal_v5_11_dual_two_layers() {
    let keys = expected_layout(VersionId::V5_12, &default_params(VersionId::V5_12));
    // No metadata: the canonical v5.12, with a note naming the shape-identical versions.
    let inf = infer(&keys, &Hints::default());
    assert_eq!(best(&inf).version, VersionId::V5_12);
    assert_eq!(best(&inf).confidence, 1.0);
    assert_eq!(
        inf.ambiguous_with,
        vec![VersionId::V5_11, VersionId::V5_11PartialFreeze]
    );
    assert!(inf.note().unwrap().contains("canonical"), "{:?}", inf.notes);
    // PartialFreeze (which v5.12.x configs name) still gives v5.12.
    let inf = infer(&keys, &Hints::class("TernaryVAEV5_11_PartialFreeze"));
    assert_eq!(best(&inf).version, VersionId::V5_12);
    assert_eq!(best(&inf).confidence, 1.0);
    // The V5_11 class gives v5.11 with those parameters.
    let inf = infer(&keys, &Hints::class("TernaryVAEV5_11"));
    let b = best(&inf);
    assert_eq!(b.version, VersionId::V5_11);
    assert_eq!(b.confidence, 1.0);
    assert_eq!(b.summary(), "L16 H64 dual 2L drop ctrl");
    let inf = infer(&keys, &Hints::class("TernaryVAEV5_12"));
    assert_eq!(best(&inf).version, VersionId::V5_12);
}

// ---------------------------------------------------------------------------------------
// Partial fits
// ---------------------------------------------------------------------------------------

#[test]
fn mutated_sets_still_infer_and_list_exactly_the_changes() {
    let cases: [(&str, VersionId, &str, &str); 4] = [
        (
            "v5_12_4_state_dict",
            VersionId::V5_12_4,
            "projection.proj_B.radius_net.3.bias",
            "encoder_A.fc_mu.weight",
        ),
        (
            "v5_11",
            VersionId::V5_11,
            "decoder_A.decoder.2.weight",
            "encoder_B.fc_mu.bias",
        ),
        (
            "v5_11_homeostasis",
            VersionId::V5_11,
            "controller.net.5.bias",
            "projection.proj_A.direction_net.0.weight",
        ),
        (
            "v5_5",
            VersionId::V5_5,
            "state_net.decoder.2.weight",
            "encoder_A.fc_logvar.weight",
        ),
    ];
    for (name, version, dropped, changed) in cases {
        let mut keys = fixture(name);
        let pos = keys.iter().position(|(k, _)| k == dropped).unwrap();
        let dropped_entry = keys.remove(pos);
        let c = keys.iter_mut().find(|(k, _)| k == changed).unwrap();
        let original = c.1.clone();
        c.1 = c.1.iter().map(|d| d + 1).collect();
        let changed_shape = c.1.clone();
        keys.push(("ema.shadow_step".into(), vec![]));

        let inf = infer(&keys, &Hints::default());
        let b = best(&inf);
        assert_eq!(b.version, version, "{name}");
        assert!(
            b.confidence < 1.0 && b.confidence > 0.9,
            "{name}: {}",
            b.confidence
        );
        assert_eq!(b.keys.missing, vec![dropped_entry], "{name}");
        assert_eq!(
            b.keys.unexpected,
            vec![("ema.shadow_step".to_string(), vec![])],
            "{name}"
        );
        assert_eq!(
            b.keys.mismatched,
            vec![SizeMismatch::new(changed, original, changed_shape)],
            "{name}"
        );
        assert!(
            inf.note().unwrap().contains("partial fit"),
            "{:?}",
            inf.notes
        );
        // The parameters were still read correctly (majority votes over the shapes).
        let exact = infer(&fixture(name), &Hints::default());
        assert_eq!(b.params, best(&exact).params, "{name}");
    }
}

#[test]
fn audit_case_v5_11_dual_one_layer_into_v5_12() {
    // domain.md §3: a v5.11 checkpoint with n_layers 1 + dropout loaded into a v5.12 model
    // (n_layers 2 + dropout) fails at projection.proj_A.direction_net.4.weight.
    let keys = fixture("v5_11_homeostasis");
    let v512 = expected_layout(VersionId::V5_12, &default_params(VersionId::V5_12));
    let diff = compare_layout(&v512, &keys);
    assert!(diff.mismatched.contains(&SizeMismatch::new(
        "projection.proj_A.direction_net.4.weight",
        vec![64, 64],
        vec![16, 64]
    )));
    assert!(diff.mismatched.contains(&SizeMismatch::new(
        "projection.proj_B.direction_net.4.weight",
        vec![64, 64],
        vec![16, 64]
    )));
    assert!(diff
        .missing
        .iter()
        .any(|(k, _)| k == "projection.proj_A.direction_net.8.weight"));

    // Inference shows the same in its v5.12 candidate, and reports the config disagreement.
    let hints = Hints {
        model_class: Some("TernaryVAEV5_12".into()),
        projection_layers: Some(2),
        ..Hints::default()
    };
    let inf = infer(&keys, &hints);
    let b = best(&inf);
    assert_eq!(b.version, VersionId::V5_11);
    assert_eq!(b.params.projection_layers, 1);
    let c = inf
        .candidates
        .iter()
        .find(|c| c.version == VersionId::V5_12)
        .unwrap();
    assert_eq!(c.params.projection_layers, 2);
    assert!(c.keys.mismatched.contains(&SizeMismatch::new(
        "projection.proj_A.direction_net.4.weight",
        vec![64, 64],
        vec![16, 64]
    )));
    let note = inf.note().unwrap();
    assert!(
        note.contains("config says projection_layers = 2, the weights have 1"),
        "{note}"
    );
    assert!(note.contains("model class TernaryVAEV5_12"), "{note}");
}

// ---------------------------------------------------------------------------------------
// Parameters read back from shapes
// ---------------------------------------------------------------------------------------

#[test]
fn latent_dim_8_variants() {
    // ternary_fast_test.yaml: TernaryVAEV5_11, latent 8, hidden 32 (R = max(32, 16) = 32).
    let quick = v5_11_params(|p| {
        p.latent_dim = 8;
        p.hidden_dim = 32;
    });
    let keys = expected_layout(VersionId::V5_11, &quick);
    assert!(keys.contains(&("encoder_A.fc_mu.weight".to_string(), vec![8, 64])));
    assert!(keys.contains(&("projection.radius_net.0.weight".to_string(), vec![32, 8])));
    let inf = infer(&keys, &Hints::class("TernaryVAEV5_11"));
    assert_eq!(best(&inf).params, quick);
    assert_eq!(best(&inf).summary(), "L8 H32 single 1L");

    for id in VersionId::ALL {
        let p = LayoutParams {
            latent_dim: 8,
            ..default_params(id)
        };
        let keys = expected_layout(id, &p);
        let inf = infer(&keys, &Hints::default());
        let b = best(&inf);
        assert!(
            b.version == id || inf.ambiguous_with.contains(&id),
            "{}",
            id.as_str()
        );
        assert_eq!(b.params, p);
        assert_eq!(b.confidence, 1.0);
        assert!(b.summary().starts_with("L8"));
    }
}

#[test]
fn every_parameter_combination_round_trips() {
    let mut checked = 0;
    for id in VersionId::ALL {
        let v = version(id);
        let class = v.model_classes[0].clone();
        for latent in [8, 16, 32] {
            for hidden in [32, 64, 100, 256] {
                for layers in 1..=4 {
                    for bits in 0..32u32 {
                        let flag = |i: u32| bits & (1 << i) != 0;
                        let p = v.restrict(&LayoutParams {
                            latent_dim: latent,
                            hidden_dim: hidden,
                            projection_layers: layers,
                            projection_dropout: flag(0),
                            dual_projection: flag(1),
                            share_direction: flag(1) && flag(2),
                            controller: flag(3),
                            state_net: flag(4),
                            encoder: v.defaults().encoder,
                            decoder: v.defaults().decoder,
                        });
                        if v.check(&p).is_err() {
                            continue;
                        }
                        let keys = expected_layout(id, &p);
                        let inf = infer(&keys, &Hints::class(&class));
                        let b = best(&inf);
                        assert!(
                            b.version == id || inf.ambiguous_with.contains(&id),
                            "{} {p}: got {}",
                            id.as_str(),
                            b.display
                        );
                        assert_eq!(b.params, p, "{}", id.as_str());
                        assert_eq!(b.confidence, 1.0);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 1000, "{checked}");
}

#[test]
fn hints_fill_what_shapes_cannot_say() {
    // A projection-less export of a v5.11 model (encoders and decoder only): the projection
    // parameters come from the config.
    let full = expected_layout(
        VersionId::V5_11,
        &v5_11_params(|p| {
            p.hidden_dim = 128;
            p.projection_layers = 3;
        }),
    );
    let keys: Vec<KeyShape> = full
        .into_iter()
        .filter(|(k, _)| !k.starts_with("projection."))
        .collect();
    let hints = Hints {
        model_class: Some("TernaryVAEV5_11".into()),
        hidden_dim: Some(128),
        projection_layers: Some(3),
        ..Hints::default()
    };
    let inf = infer(&keys, &hints);
    let b = best(&inf);
    assert_eq!(b.version, VersionId::V5_11);
    assert_eq!(b.params.hidden_dim, 128);
    assert_eq!(b.params.projection_layers, 3);
    assert!(b.confidence < 1.0);
    assert!(b.keys.unexpected.is_empty() && b.keys.mismatched.is_empty());
    assert!(b
        .keys
        .missing
        .iter()
        .all(|(k, _)| k.starts_with("projection.")));
}

// ---------------------------------------------------------------------------------------
// Degenerate inputs
// ---------------------------------------------------------------------------------------

#[test]
fn empty_and_unrelated_inputs_name_no_version() {
    let empty: Vec<KeyShape> = Vec::new();
    let inf = infer(&empty, &Hints::default());
    assert!(inf.best.is_none());
    assert!(inf.candidates.is_empty());

    let resnet: Vec<(&str, Vec<u64>)> = vec![
        ("conv1.weight", vec![64, 3, 7, 7]),
        ("bn1.weight", vec![64]),
        ("bn1.running_mean", vec![64]),
        ("fc.weight", vec![1000, 512]),
        ("fc.bias", vec![1000]),
    ];
    let inf = infer(&resnet, &Hints::class("TernaryVAEV5_11"));
    assert!(inf.best.is_none());
    assert!(inf.candidates.is_empty());

    // A lone shared key is not enough to name a version.
    let lone = vec![
        ("encoder_A.fc_mu.weight", vec![16u64, 64]),
        ("x", vec![1]),
        ("y", vec![1]),
    ];
    let inf = infer(&lone, &Hints::default());
    assert!(inf.best.is_none(), "{:?}", inf.best);
    assert!(!inf.candidates.is_empty());
    assert!(inf.note().unwrap().contains("no catalog layout fits"));
}

#[test]
fn data_parallel_prefix_is_stripped() {
    let keys: Vec<KeyShape> = fixture("v5_12_4_state_dict")
        .into_iter()
        .map(|(k, s)| (format!("module.{k}"), s))
        .collect();
    let inf = infer(&keys, &Hints::default());
    assert_eq!(inf.stripped_prefix.as_deref(), Some("module."));
    assert_eq!(best(&inf).version, VersionId::V5_12_4);
    assert_eq!(best(&inf).confidence, 1.0);
}

#[test]
fn order_and_duplicates_do_not_matter() {
    let mut keys = fixture("v5_11_homeostasis");
    keys.reverse();
    keys.push(keys[0].clone());
    let inf = infer(&keys, &Hints::class("TernaryVAEV5_11_PartialFreeze"));
    assert_eq!(best(&inf).version, VersionId::V5_11PartialFreeze);
    assert_eq!(best(&inf).confidence, 1.0);
    assert_eq!(
        sorted(keys[..keys.len() - 1].to_vec()),
        sorted(fixture("v5_11_homeostasis"))
    );
}

#[test]
fn unknown_or_contradicting_class() {
    let inf = infer(
        &fixture("v5_12_4_state_dict"),
        &Hints::class("SomethingElse"),
    );
    assert_eq!(best(&inf).version, VersionId::V5_12_4);
    assert_eq!(best(&inf).confidence, 1.0);
    assert!(inf.note().unwrap().contains("not in the catalog"));

    let inf = infer(
        &fixture("v5_12_4_state_dict"),
        &Hints::class("DualNeuralVAEV5"),
    );
    let b = best(&inf);
    assert_eq!(b.version, VersionId::V5_12_4);
    assert!(b.is_exact());
    assert!((b.confidence - CLASS_MISMATCH_FACTOR).abs() < 1e-12);
    assert!(
        inf.note().unwrap().contains("which builds v5.5"),
        "{:?}",
        inf.notes
    );
    // A module path is matched by its last component.
    assert_eq!(
        model_class("src.models.TernaryVAEV5_12").unwrap().name,
        "TernaryVAEV5_12"
    );
}

#[test]
fn inference_is_fast_and_linear() {
    let keys = fixture("v5_12_4_state_dict");
    let start = std::time::Instant::now();
    for _ in 0..500 {
        let inf = infer(&keys, &Hints::default());
        assert_eq!(inf.version(), Some(VersionId::V5_12_4));
    }
    let per_call = start.elapsed() / 500;
    // Generous (debug build, shared CI machine): hundreds of files per second need < 5 ms.
    assert!(per_call.as_millis() < 5, "{per_call:?} per inference");

    // 200k keys: linear time.
    let mut big = keys.clone();
    big.extend((0..200_000).map(|i| (format!("extra.{i}.weight"), vec![4, 4])));
    let start = std::time::Instant::now();
    let inf = infer(&big, &Hints::default());
    assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
    assert_eq!(inf.version(), None, "overwhelmed by unrelated keys");
    assert_eq!(inf.candidates[0].version, VersionId::V5_12_4);
    assert_eq!(inf.candidates[0].keys.matched, keys.len());
}

// ---------------------------------------------------------------------------------------
// Compatibility matrix and configs
// ---------------------------------------------------------------------------------------

#[test]
fn compatibility_matrix() {
    use VersionId::*;
    assert!(required_frozen("TernaryVAEV5_11"));
    assert!(required_frozen("TernaryVAEV5_11_PartialFreeze"));
    assert!(!required_frozen("TernaryVAEV5_12"));
    assert!(!required_frozen("DualNeuralVAEV5"));
    assert!(!required_frozen("Unknown"));
    assert_eq!(compatible_sources("TernaryVAEV5_11"), &[V5_5, V5_11]);
    assert_eq!(
        compatible_sources("TernaryVAEV5_11_PartialFreeze"),
        &[V5_5, V5_11, V5_12]
    );
    assert_eq!(compatible_sources("TernaryVAEV5_12"), &[V5_12, V5_12_4]);
    assert!(compatible_sources("DualNeuralVAEV5").is_empty());
    assert!(compatible_sources("Unknown").is_empty());

    assert!(accepts_source("TernaryVAEV5_11", V5_11PartialFreeze));
    assert!(accepts_source("TernaryVAEV5_11_PartialFreeze", V5_11));
    assert!(accepts_source("TernaryVAEV5_11_PartialFreeze", V5_12));
    // v5.12.4 is of the v5.12.x family: the production configs load it into PartialFreeze.
    assert!(accepts_source("TernaryVAEV5_11_PartialFreeze", V5_12_4));
    assert!(!accepts_source("TernaryVAEV5_11", V5_12_4));
    assert!(!accepts_source("TernaryVAEV5_11", V5_12));
    assert!(!accepts_source("TernaryVAEV5_12", V5_11));
    assert!(accepts_source("TernaryVAEV5_12", V5_12_4));

    assert_eq!(
        model_class("TernaryVAEV5_12").unwrap().builds,
        vec![V5_12, V5_12_4]
    );
    assert_eq!(
        version(V5_12).model_classes,
        vec!["TernaryVAEV5_11_PartialFreeze", "TernaryVAEV5_12"]
    );
}

fn model(items: &[(&str, Value)]) -> Hints {
    Hints::from_config(&dict(&[("model", dict(items))]))
}

#[test]
fn resolve_upstream_configs() {
    use VersionId::*;
    // ternary_fast_test.yaml
    let h = model(&[
        ("name", s("TernaryVAEV5_11")),
        ("latent_dim", Value::Int(8)),
        ("hidden_dim", Value::Int(32)),
        ("use_controller", Value::Bool(false)),
        ("use_dual_projection", Value::Bool(false)),
    ]);
    let r = resolve_config(&h).unwrap();
    assert_eq!(
        (r.version, r.params.summary().as_str()),
        (V5_11, "L8 H32 single 1L")
    );
    assert!(r.conflicts.is_empty());

    // v5_12.yaml (PartialFreeze, dual, 2 layers, dropout 0.1, controller, frozen encoders)
    let v512 = [
        ("name", s("TernaryVAEV5_11_PartialFreeze")),
        ("latent_dim", Value::Int(16)),
        ("hidden_dim", Value::Int(64)),
        ("use_controller", Value::Bool(true)),
        ("use_dual_projection", Value::Bool(true)),
        ("projection_layers", Value::Int(2)),
        ("projection_dropout", Value::Float(0.1)),
    ];
    let r = resolve_config(&model(&v512)).unwrap();
    assert_eq!((r.version, r.params), (V5_12, default_params(V5_12)));

    // v5_12_4.yaml: the same plus improved encoder/decoder.
    let mut v5124 = v512.to_vec();
    v5124.push(("encoder_type", s("improved")));
    v5124.push(("decoder_type", s("improved")));
    let r = resolve_config(&model(&v5124)).unwrap();
    assert_eq!((r.version, r.params), (V5_12_4, default_params(V5_12_4)));
    assert!(r.conflicts.is_empty());

    // The homeostasis fixture's config: PartialFreeze, dual, 1 layer, dropout, controller.
    let r = resolve_config(&model(&[
        ("name", s("TernaryVAEV5_11_PartialFreeze")),
        ("use_dual_projection", Value::Bool(true)),
        ("projection_layers", Value::Int(1)),
        ("projection_dropout", Value::Float(0.1)),
        ("use_controller", Value::Bool(true)),
    ]))
    .unwrap();
    assert_eq!(r.version, V5_11PartialFreeze);
    assert_eq!(r.params.summary(), "L16 H64 dual 1L drop ctrl");
    assert_eq!(
        expected_layout(r.version, &r.params),
        fixture("v5_11_homeostasis")
    );

    // v5.5
    let r = resolve_config(&model(&[
        ("name", s("DualNeuralVAEV5")),
        ("use_statenet", Value::Bool(true)),
    ]))
    .unwrap();
    assert_eq!(r.version, V5_5);

    // A TernaryVAEV5_12 config asking for 3 layers: kept, but listed as a conflict.
    let r = resolve_config(&model(&[
        ("name", s("TernaryVAEV5_12")),
        ("projection_layers", Value::Int(3)),
    ]))
    .unwrap();
    assert_eq!(r.version, V5_12);
    assert_eq!(r.params.projection_layers, 3);
    assert_eq!(r.conflicts.len(), 1, "{:?}", r.conflicts);
    assert!(r.conflicts[0].contains("projection_layers = 3"));

    // projection_hidden_dim wins over hidden_dim.
    let h = model(&[
        ("hidden_dim", Value::Int(64)),
        ("projection_hidden_dim", Value::Int(96)),
    ]);
    assert_eq!(h.hidden_dim, Some(96));
    assert!(resolve_config(&Hints::class("Nope")).is_none());
}

#[test]
fn serializes_to_json() {
    let inf = infer(&fixture("v5_11"), &Hints::default());
    let json = serde_json::to_value(&inf).unwrap();
    assert_eq!(json["best"]["version"], "v5_11");
    assert_eq!(json["best"]["display"], "v5.11");
    assert_eq!(json["best"]["params"]["encoder"], "frozen");
    assert_eq!(json["best"]["confidence"], 1.0);
}
