//! The trainer's evaluation (`tvck eval`) as the checkers' [`Measure`]: `tvck check
//! --auto-fix --measure` ranks candidates by what their weights do, not by what they say.

use std::path::Path;

use crate::autofix::{Measure, MeasureError};
use crate::metrics::{Provenance, StoredMetrics};

use super::eval_checkpoint;
use super::metrics::EvalMetrics;

/// Evaluates checkpoint files on all 19,683 operations (eval mode, z = mu).
pub struct EvalMeasure {
    pub device: tch::Device,
}

impl Measure for EvalMeasure {
    fn measure(&self, path: &Path) -> Result<StoredMetrics, MeasureError> {
        let r =
            eval_checkpoint(path, None, self.device).map_err(|e| MeasureError(e.to_string()))?;
        Ok(stored(&r.metrics, Provenance::Measured))
    }
}

/// Evaluation metrics in the form checkpoints store and tables show (hierarchy_B is the
/// headline hierarchy, richness that of z_B, dist_corr that of z_A, as the trainer stores them).
pub fn stored(m: &EvalMetrics, provenance: Provenance) -> StoredMetrics {
    StoredMetrics {
        coverage: Some(m.coverage),
        hierarchy: m.hierarchy_b,
        hierarchy_a: m.hierarchy_a,
        richness: m.richness_b,
        r_v0: m.r_v0,
        r_v9: m.r_v9,
        mean_radius: m.mean_radius,
        std_radius: m.std_radius,
        dist_corr: m.dist_corr_a,
        q: m.q,
        coverage_source: None,
        provenance: Some(provenance),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_checkpoint_is_measured_as_eval_measures_it() {
        let m = EvalMeasure {
            device: tch::Device::Cpu,
        };
        let got = m
            .measure(Path::new("checkpoints/v5_12_4/best_Q.pt"))
            .unwrap();
        let want = eval_checkpoint(
            Path::new("checkpoints/v5_12_4/best_Q.pt"),
            None,
            tch::Device::Cpu,
        )
        .unwrap()
        .metrics;
        assert_eq!(got.coverage, Some(want.coverage));
        assert_eq!(got.hierarchy, want.hierarchy_b);
        assert_eq!(got.provenance, Some(Provenance::Measured));
        let err = m.measure(Path::new("Cargo.toml")).unwrap_err();
        assert!(err.0.contains("Cargo.toml"), "{err}");
    }
}

#[cfg(test)]
mod autofix_tests {
    use super::*;
    use crate::autofix;
    use crate::check::{self, CheckOptions};
    use crate::config::TrainingConfig;
    use crate::migrate::{self, ConvertOptions, OutputFormat, SpecSet};

    /// `check --auto-fix --measure`: every candidate is evaluated, the unmeasured conversion
    /// gets its real (low) coverage and ranks after the healthy trained checkpoint.
    #[test]
    fn measured_ranking_uses_what_the_weights_do() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("checkpoints");
        std::fs::create_dir_all(ck.join("v5_12_4")).unwrap();
        std::fs::copy(
            "checkpoints/v5_12_4/best_Q.pt",
            ck.join("v5_12_4/best_Q.pt"),
        )
        .unwrap();
        let converted = ck.join("converted/best.v5_12_4.pt");
        migrate::convert_file(
            Path::new("checkpoints/v5_11/best.pt"),
            &converted,
            &SpecSet::embedded().unwrap(),
            &ConvertOptions {
                to: crate::arch::VersionId::V5_12_4,
                format: OutputFormat::Pt,
                force: false,
                dry_run: false,
                refine: None,
            },
        )
        .unwrap();
        let cfg_path = dir.path().join("c.yaml");
        std::fs::copy(
            "tests/fixtures/upstream-configs/v5_12_5_relaxed_D_from_scratch.yaml",
            &cfg_path,
        )
        .unwrap();
        let cfg = TrainingConfig::load(&cfg_path).unwrap();
        let opts = CheckOptions {
            checkpoint_roots: Vec::new(),
            cwd: dir.path().to_path_buf(),
            strict: false,
        };
        let report = check::check(&cfg, &opts);
        let m = EvalMeasure {
            device: tch::Device::Cpu,
        };
        let fix = autofix::propose(&cfg, &report, &opts, Some(&m));
        let paths: Vec<&str> = fix.candidates.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "checkpoints/v5_12_4/best_Q.pt",
                "checkpoints/converted/best.v5_12_4.pt"
            ]
        );
        for c in &fix.candidates {
            assert_eq!(c.metrics, Some(autofix::MEASURED_NOW), "{c:?}");
            assert!(c.why.contains("(measured now)"), "{}", c.why);
        }
        assert_eq!(fix.candidates[0].coverage, Some(1.0));
        let conv = fix.candidates[1].coverage.unwrap();
        assert!(conv < 0.5, "the structural conversion measured {conv}");
        assert_eq!(fix.edits[0].1, "checkpoints/v5_12_4/best_Q.pt");
    }
}

#[cfg(test)]
mod non_finite_tests {
    use super::*;

    #[test]
    fn eval_refuses_nan_weights_and_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let src = crate::format::Checkpoint::open("checkpoints/v5_12_4/best_Q.pt").unwrap();
        let ms = src.model_state_ref().unwrap();
        let target = ms
            .entries
            .iter()
            .find(|(k, _)| *k == "decoder_A.decoder.8.bias")
            .unwrap()
            .1;
        let tensors: Vec<crate::format::write::TensorData<'_>> = (0..src.tensors.len())
            .map(|i| {
                let mut b = src.tensor_bytes(i).unwrap().into_owned();
                if i == target {
                    b[..4].copy_from_slice(&f32::NAN.to_le_bytes());
                }
                crate::format::write::TensorData::new(
                    src.tensors[i].dtype,
                    src.tensors[i].shape.clone(),
                    b,
                )
            })
            .collect();
        let bad = dir.path().join("nan.pt");
        let f = std::fs::File::create(&bad).unwrap();
        crate::format::write::pt::write_pt(
            &src.root,
            &tensors,
            &crate::format::write::pt::PtOptions::default(),
            std::io::BufWriter::new(f),
        )
        .unwrap();
        let err = eval_checkpoint(&bad, None, tch::Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("NaN or infinite weights: `decoder_A.decoder.8.bias` holds 1 NaN and 0 infinite of 27 values"),
            "{err}"
        );
    }
}
