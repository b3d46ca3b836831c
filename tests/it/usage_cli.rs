//! Every usage error of every command, pinned whole: exit code, stdout and stderr (the
//! `error:` / `hint:` lines the CLI edge renders once), as snapshots in snapshots/usage_*.

use crate::common;

use common::{root, tvck};

/// (snapshot name, arguments); each run from the repository root.
const CASES: &[(&str, &[&str])] = &[
    ("no_command", &[]),
    ("unknown_command", &["frobnicate"]),
    ("scan_missing_path", &["scan", "does-not-exist"]),
    ("inspect_missing_file", &["inspect", "does-not-exist.pt"]),
    ("inspect_a_folder", &["inspect", "checkpoints"]),
    (
        "diff_missing_file",
        &["diff", "checkpoints/v5_11/best.pt", "nope.pt"],
    ),
    (
        "diff_needs_two_sides",
        &["diff", "checkpoints/v5_11/best.pt"],
    ),
    ("check_missing_config", &["check", "configs/nope.yaml"]),
    ("check_no_config", &["check"]),
    (
        "convert_unknown_version",
        &[
            "convert",
            "checkpoints/v5_11/best.pt",
            "--to",
            "v9",
            "-o",
            "x.pt",
        ],
    ),
    (
        "convert_output_exists",
        &[
            "convert",
            "checkpoints/v5_11/best.pt",
            "--to",
            "v5_12_4",
            "-o",
            "checkpoints/v5_12_4/best_Q.pt",
        ],
    ),
    (
        "convert_onto_its_input",
        &[
            "convert",
            "checkpoints/v5_11/best.pt",
            "--to",
            "v5_12_4",
            "-o",
            "checkpoints/v5_11/best.pt",
            "--force",
        ],
    ),
    (
        "convert_missing_input",
        &["convert", "nope.pt", "--to", "v5_12_4", "-o", "x.pt"],
    ),
    ("index_missing_dir", &["index", "does-not-exist"]),
    ("ls_missing_dir", &["ls", "does-not-exist"]),
    (
        "ls_bad_where",
        &["ls", "checkpoints", "--where", "coverage >> 1"],
    ),
    (
        "ls_unknown_field",
        &["ls", "checkpoints", "--where", "covrage >= 0.9"],
    ),
    ("ls_bad_sort", &["ls", "checkpoints", "--sort", "bogus"]),
    ("select_no_config", &["select", "checkpoints"]),
    (
        "select_missing_config",
        &["select", "--for", "configs/nope.yaml", "checkpoints"],
    ),
    (
        "select_unknown_metric",
        &[
            "select",
            "--for",
            "tests/fixtures/configs/train_v5_12_4_partial.yaml",
            "--by",
            "nope",
            "checkpoints",
        ],
    ),
    ("tag_missing_file", &["tag", "nope.pt", "production"]),
    ("tag_no_name", &["tag", "checkpoints/v5_11/best.pt"]),
    ("untag_no_name", &["untag"]),
    ("lineage_missing_file", &["lineage", "nope.pt"]),
    ("lineage_of_a_folder", &["lineage", "checkpoints"]),
    ("init_no_template", &["init", "-o", "never-written.yaml"]),
    (
        "init_unknown_template",
        &["init", "--template", "fast", "-o", "never-written.yaml"],
    ),
    ("init_no_output", &["init", "--template", "quick-test"]),
    (
        "init_missing_from",
        &[
            "init",
            "--template",
            "from-checkpoint",
            "--from",
            "nope.pt",
            "-o",
            "never-written.yaml",
        ],
    ),
    ("watch_no_run", &["watch"]),
    ("watch_missing_run", &["watch", "--once", "runs/nope"]),
    (
        "watch_a_file",
        &["watch", "--once", "checkpoints/v5_11/best.pt"],
    ),
    (
        "watch_missing_alerts_file",
        &["watch", "--once", "checkpoints", "--alerts", "nope.yaml"],
    ),
    ("export_tb_missing_run", &["export-tb", "runs/nope"]),
    ("serve_missing_dir", &["serve", "does-not-exist"]),
    ("serve_a_file", &["serve", "Cargo.toml", "--port", "0"]),
    ("serve_bad_address", &["serve", "--bind", "localhost"]),
    (
        "report_missing_dir",
        &["report", "does-not-exist", "-o", "r.html"],
    ),
    ("report_no_output", &["report", "checkpoints"]),
    (
        "report_not_a_run",
        &["report", "checkpoints", "-o", "r.html"],
    ),
];

#[test]
fn usage_errors_are_pinned_whole() {
    for (name, args) in CASES {
        let o = tvck(args, &root());
        assert_eq!(o.status.code(), Some(2), "{name}: {args:?}");
        snap_run!(format!("usage_{name}"), o);
    }
}

/// Without the `train` feature, the trainer's commands are usage errors that say how to
/// get them.
#[cfg(not(feature = "train"))]
#[test]
fn trainer_commands_without_the_feature() {
    let cases: &[(&str, &[&str])] = &[
        ("eval_without_train", &["eval", "checkpoints/v5_11/best.pt"]),
        (
            "train_without_train",
            &[
                "train",
                "--config",
                "tests/fixtures/configs/train_v5_11_smoke.yaml",
            ],
        ),
    ];
    for (name, args) in cases {
        let o = tvck(args, &root());
        assert_eq!(o.status.code(), Some(2), "{name}");
        snap_run!(format!("usage_{name}"), o);
    }
}
