//! Selection (library): the best checkpoint a config loads, ranked by measured metrics
//! only; the same from the index as from the files; `check --auto-fix` proposes the same.

use std::path::Path;

use tvck::check::{self, CheckOptions};
use tvck::config::TrainingConfig;
use tvck::manager::index::{Index, IndexOptions};
use tvck::manager::select::{self, RankBy, Selection};
use tvck::manager::Query;

use crate::common;

use common::{copy_dir, root, tvck};

/// checkpoints/ (plus a v5.11 → v5.12.4 conversion, never measured) and the upstream
/// configs in a temporary working directory.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("checkpoints"), &dir.path().join("checkpoints"));
    copy_dir(
        &root().join("tests/fixtures/upstream-configs"),
        &dir.path().join("configs"),
    );
    let o = tvck(
        &[
            "convert",
            "checkpoints/v5_11/best.pt",
            "--to",
            "v5_12_4",
            "-o",
            "checkpoints/converted/best.v5_12_4.pt",
        ],
        dir.path(),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    dir
}

const CONFIG: &str = "configs/v5_12_5_relaxed_D_from_scratch.yaml";

fn run(ws: &Path, index: Option<&Index>, by: RankBy, filter: Option<&Query>) -> Selection {
    run_listing(ws, index, by, filter, None)
}

fn run_listing(
    ws: &Path,
    index: Option<&Index>,
    by: RankBy,
    filter: Option<&Query>,
    limit: Option<usize>,
) -> Selection {
    run_config(ws, CONFIG, index, by, filter, limit)
}

fn run_config(
    ws: &Path,
    config: &str,
    index: Option<&Index>,
    by: RankBy,
    filter: Option<&Query>,
    limit: Option<usize>,
) -> Selection {
    let cfg = TrainingConfig::load(ws.join(config)).unwrap();
    let opts = CheckOptions {
        cwd: ws.to_path_buf(),
        ..CheckOptions::default()
    };
    let report = check::check(&cfg, &opts);
    let roots = vec![ws.join("checkpoints")];
    select::select(&cfg, &report, &roots, index, ws, by, limit, filter)
}

/// An index of the workspace's checkpoints/, in it.
fn indexed(ws: &Path) -> Index {
    let mut index = Index::open(&ws.join("index.sqlite"), &IndexOptions::default()).unwrap();
    index
        .update(&[ws.join("checkpoints")], |_| {}, |_| {})
        .unwrap();
    index
}

fn paths(s: &Selection) -> Vec<String> {
    s.candidates.iter().map(|c| c.path.clone()).collect()
}

#[test]
fn the_best_loadable_measured_checkpoint_from_files_and_from_the_index() {
    let ws = workspace();
    let from_files = run(ws.path(), None, RankBy::default(), None);
    assert!(!from_files.from_index);
    assert!(from_files.found());
    let best = from_files.selected.as_ref().unwrap();
    assert_eq!(best.path, "checkpoints/v5_12_4/best_Q.pt");
    assert!(best.exact && best.fits);
    // The conversion carries the source's metrics in its record, never as its own: it
    // ranks after every measured candidate that loads.
    let names = paths(&from_files);
    let conv = names
        .iter()
        .position(|p| p == "checkpoints/converted/best.v5_12_4.pt")
        .unwrap();
    let c = &from_files.candidates[conv];
    assert_eq!(c.metrics, Some("not_measured"));
    assert!(c.coverage.is_none() && c.hierarchy.is_none());
    for earlier in &from_files.candidates[..conv] {
        assert_ne!(earlier.metrics, Some("not_measured"), "{earlier:?}");
    }

    // The index answers the same, once it holds every file.
    let index = indexed(ws.path());
    let from_index = run(ws.path(), Some(&index), RankBy::default(), None);
    assert!(from_index.from_index);
    assert_eq!(
        serde_json::to_value(&from_index.candidates).unwrap(),
        serde_json::to_value(&from_files.candidates).unwrap()
    );
    // A file added since: the index is stale, the files are read.
    std::fs::copy(
        ws.path().join("checkpoints/v5_12_4/best_Q.pt"),
        ws.path().join("checkpoints/v5_12_4/copy.pt"),
    )
    .unwrap();
    let stale = run(ws.path(), Some(&index), RankBy::default(), None);
    assert!(!stale.from_index);
    assert!(paths(&stale).contains(&"checkpoints/v5_12_4/copy.pt".to_string()));

    // Listing the first few: the same selection, the same count ranked, and the first
    // candidates of the whole list, reasons and all (they are written only for the
    // listed ones). With none listed, the selection still has its reasons.
    for n in [0, 1, 3] {
        let few = run_listing(ws.path(), Some(&index), RankBy::default(), None, Some(n));
        assert_eq!(few.ranked, stale.ranked);
        assert_eq!(few.candidates.len(), n.min(stale.ranked));
        assert_eq!(
            serde_json::to_value(&few.candidates).unwrap(),
            serde_json::to_value(&stale.candidates[..n]).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&few.selected).unwrap(),
            serde_json::to_value(&stale.selected).unwrap()
        );
        assert!(!few.selected.as_ref().unwrap().why.is_empty());
    }
}

#[test]
fn rank_by_and_where() {
    let ws = workspace();
    // Q: the v5.12.4 sample is the only candidate that loads and stores a Q.
    let by_q = run(ws.path(), None, RankBy::Q, None);
    let top = by_q.selected.unwrap();
    assert_eq!(top.path, "checkpoints/v5_12_4/best_Q.pt");
    assert!(
        top.rank_value.is_some() && top.why.contains("Q "),
        "{top:?}"
    );
    // A filter that excludes it: the converted file is what is left that loads, and it is
    // chosen on its fit alone, its metrics said to be unmeasured.
    let q = Query::parse("path ~ converted").unwrap();
    let only = run(ws.path(), None, RankBy::default(), Some(&q));
    assert_eq!(paths(&only), ["checkpoints/converted/best.v5_12_4.pt"]);
    assert!(only
        .selected
        .unwrap()
        .why
        .contains("not measured since conversion"));
    let none = run(
        ws.path(),
        None,
        RankBy::default(),
        Some(&Query::parse("epoch > 100000").unwrap()),
    );
    assert!(!none.found() && none.selected.is_none());
}

#[test]
fn check_auto_fix_proposes_the_selection() {
    let ws = workspace();
    let index = indexed(ws.path());
    let selection = run(ws.path(), Some(&index), RankBy::default(), None);
    for with_index in [false, true] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tvck"));
        cmd.args(["check", CONFIG, "--auto-fix", "--json"])
            .current_dir(ws.path());
        if with_index {
            cmd.env("TVCK_INDEX", index.path());
        } else {
            cmd.env("TVCK_INDEX", ws.path().join("none.sqlite"));
        }
        let o = cmd.output().unwrap();
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let proposed: Vec<String> = j["auto_fix"]["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["path"].as_str().unwrap().to_string())
            .collect();
        // check searches the config's folder too (no checkpoints there).
        assert_eq!(proposed, paths(&selection), "with_index = {with_index}");
        assert_eq!(
            j["auto_fix"]["edits"][0][1].as_str().unwrap(),
            selection.selected.as_ref().unwrap().path
        );
    }
}

/// With an index that holds the tree, the candidates are ranked and listed from their
/// rows' columns; without one, every candidate file is read and ranked. Each listing of
/// the first (every candidate, or the first N) must be the head of the second, for every
/// metric and filter: the same selection (a conversion's when nothing loads), the same
/// count, the same reasons.
#[test]
fn a_listing_ranked_from_the_index_is_the_head_of_the_whole_ranking() {
    let ws = workspace();
    let index = indexed(ws.path());
    let filters = [
        None,
        Some("version == v5_11"),
        Some("path ~ converted"),
        Some("coverage >= 0.99"),
        Some("not measured"),
        Some("epoch > 100000"),
    ];
    // A config of the V5.12 class too, which loads v5.12.4 files and no v5.11 one: those
    // need a conversion.
    let v5_12 = std::fs::read_to_string(ws.path().join("configs/v5_12_4.yaml"))
        .unwrap()
        .replace(
            "  name: TernaryVAEV5_11_PartialFreeze",
            "  name: TernaryVAEV5_12",
        );
    assert!(v5_12.contains("name: TernaryVAEV5_12\n"));
    std::fs::write(ws.path().join("configs/v5_12_class.yaml"), v5_12).unwrap();
    let mut conversions = 0;
    for (config, by, f) in [CONFIG, "configs/v5_12_class.yaml"]
        .into_iter()
        .flat_map(|c| RankBy::ALL.into_iter().map(move |by| (c, by)))
        .flat_map(|(c, by)| filters.into_iter().map(move |f| (c, by, f)))
    {
        {
            let q = f.map(|f| Query::parse(f).unwrap());
            let run = |limit| run_config(ws.path(), config, Some(&index), by, q.as_ref(), limit);
            // The whole ranking made from what the files say (no index), against which
            // each listing from the index's rows is held.
            let whole = run_config(ws.path(), config, None, by, q.as_ref(), None);
            assert!(!whole.from_index, "{config} {by:?} {f:?}");
            if whole
                .selected
                .as_ref()
                .is_some_and(|s| !s.migration.is_empty())
            {
                conversions += 1;
            }
            for n in [None, Some(0), Some(1), Some(2), Some(5), Some(100)] {
                let few = run(n);
                let n = n.unwrap_or(usize::MAX);
                assert!(few.from_index, "{config} {by:?} {f:?} {n}");
                assert_eq!(few.ranked, whole.ranked, "{config} {by:?} {f:?} {n}");
                assert_eq!(
                    serde_json::to_value(&few.candidates).unwrap(),
                    serde_json::to_value(&whole.candidates[..n.min(whole.ranked)]).unwrap(),
                    "{config} {by:?} {f:?} {n}"
                );
                assert_eq!(
                    serde_json::to_value(&few.selected).unwrap(),
                    serde_json::to_value(&whole.selected).unwrap(),
                    "{config} {by:?} {f:?} {n}"
                );
            }
        }
    }
    // Some filter leaves only files that need a conversion: that selection is compared too.
    assert!(conversions > 0);
    // A file changed since: the index does not answer, with a limit or without.
    let changed = ws.path().join("checkpoints/v5_5/latest.pt");
    let bytes = std::fs::read(&changed).unwrap();
    std::fs::write(&changed, [&bytes[..], b"\0"].concat()).unwrap();
    for limit in [None, Some(3)] {
        let stale = run_listing(ws.path(), Some(&index), RankBy::default(), None, limit);
        assert!(!stale.from_index);
    }
}
