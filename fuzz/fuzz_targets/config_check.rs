//! Any text as a training config, then every `tvck check` rule on it (run in an empty
//! folder, so the frozen checkpoint path resolves to nothing): an error or a report, never
//! a panic or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static EMPTY: OnceLock<tempfile::TempDir> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = tvck::config::TrainingConfig::from_str(text, "fuzz.yaml") else {
        return;
    };
    // Absolute paths and parent folders could name a real file (or a device) outside the
    // empty folder: the reader has its own targets.
    let path = cfg
        .frozen_checkpoint
        .as_ref()
        .and_then(|f| f.path.clone())
        .unwrap_or_default();
    if path.contains('/') || path.contains('\\') || path.contains("..") {
        return;
    }
    let dir = EMPTY.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    let opts = tvck::check::CheckOptions {
        checkpoint_roots: Vec::new(),
        cwd: dir.path().to_path_buf(),
        strict: true,
    };
    let report = tvck::check::check(&cfg, &opts);
    let _ = tvck::report::check::render(&report);
});
