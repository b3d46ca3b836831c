//! A migration spec from any text, then planned against the sample v5.11 and v5.5
//! checkpoints: the expression languages (shape dimensions, key-pattern indices, `for`
//! ranges, `when` conditions) are evaluated over real layouts. A plan or an error, never a
//! panic (integer overflow included) or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

use tvck::format::Checkpoint;
use tvck::migrate::{plan_checkpoint, Spec, SpecSet};

static SAMPLES: OnceLock<Vec<Checkpoint>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = Spec::parse(text, "fuzz") else {
        return;
    };
    let samples = SAMPLES.get_or_init(|| {
        [
            &include_bytes!("../../checkpoints/v5_11/best.pt")[..],
            &include_bytes!("../../checkpoints/v5_5/latest.pt")[..],
        ]
        .iter()
        .map(|b| Checkpoint::from_bytes("sample.pt", b.to_vec()).expect("sample reads"))
        .collect()
    });
    let to = spec.to;
    let set = SpecSet { specs: vec![spec] };
    for ckpt in samples {
        let _ = plan_checkpoint(ckpt, to, &set);
    }
});
