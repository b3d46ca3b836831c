//! Helpers shared by the integration tests that run the `tvck` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copy a folder tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Run the tvck binary with `args` in `cwd`.
pub fn tvck(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tvck"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run tvck")
}

/// [`tvck`], killed after `secs` seconds: `None` when it had to be (it hung).
pub fn tvck_within(args: &[&str], cwd: &Path, secs: u64) -> Option<Output> {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tvck"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tvck");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait for tvck").is_some() {
            return Some(child.wait_with_output().expect("tvck output"));
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Make a FIFO at `path` (Unix).
#[cfg(unix)]
pub fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo")
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("tvck prints UTF-8")
}

/// The project's Python with PyTorch: `TVCK_PYTHON`, else `.venv/bin/python` (made by
/// scripts/test). Panics when absent: the tests that need it must never pass silently.
pub fn python() -> PathBuf {
    let p = std::env::var_os("TVCK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "Python with PyTorch not found at {}: set TVCK_PYTHON or run scripts/test (it creates .venv)",
        p.display()
    );
    p
}

/// Run the generator `tests/python/SCRIPT` (with the PyTorch environment) into a fresh
/// folder `NAME` of Cargo's per-target temp dir, and read the `manifest.json` it writes.
/// `why` says what a failure usually means. Panics when the script fails.
pub fn python_cases(script: &str, name: &str, why: &str) -> (PathBuf, serde_json::Value) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(python())
        .arg(root().join("tests/python").join(script))
        .arg(&dir)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{script} failed{why}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    (dir, manifest)
}

/// A whole run as the snapshots record it: the exit code, then stdout and stderr, each
/// with the literal `(from, to)` replacements of `filters` applied (temporary paths become
/// stable names).
pub fn run_text(o: &Output, filters: &[(&str, &str)]) -> String {
    let code = o
        .status
        .code()
        .map_or_else(|| "killed by a signal".to_string(), |c| c.to_string());
    let mut text = format!(
        "exit code: {code}\n----- stdout -----\n{}----- stderr -----\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for (from, to) in filters {
        if !from.is_empty() {
            text = text.replace(from, to);
        }
    }
    text
}

/// Snapshot a whole run (exit code, stdout, stderr: [`run_text`]) into snapshots/:
/// `snap_run!(name, output)` or `snap_run!(name, output, &[(temp_path, "[TMP]")])`.
#[macro_export]
macro_rules! snap_run {
    ($name:expr, $output:expr) => {
        $crate::snap_run!($name, $output, &[])
    };
    ($name:expr, $output:expr, $filters:expr) => {
        $crate::snap!($name, $crate::common::run_text(&$output, $filters))
    };
}

/// Snapshot into snapshots/ at the repository root.
#[macro_export]
macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::with_settings!({snapshot_path => "../../snapshots", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

/// Copy the checkpoint `src` to `dst` (tvck's .pt writer) with NaN and +inf written into
/// the first two values of the model-state tensor `key`.
pub fn write_with_non_finite(src: &Path, dst: &Path, key: &str) {
    use tvck::format::write::{pt, TensorData};
    let c = tvck::format::Checkpoint::open(src).expect("sample reads");
    let ms = c.model_state_ref().expect("a model state");
    let target = ms
        .entries
        .iter()
        .find(|(k, _)| *k == key)
        .unwrap_or_else(|| panic!("no {key}"))
        .1;
    let tensors: Vec<TensorData<'_>> = (0..c.tensors.len())
        .map(|i| {
            let t = &c.tensors[i];
            let mut bytes = c.tensor_bytes(i).expect("tensor bytes").into_owned();
            if i == target {
                bytes[..4].copy_from_slice(&f32::NAN.to_le_bytes());
                bytes[4..8].copy_from_slice(&f32::INFINITY.to_le_bytes());
            }
            TensorData::new(t.dtype, t.shape.clone(), bytes)
        })
        .collect();
    let f = std::fs::File::create(dst).expect("create");
    pt::write_pt(
        &c.root,
        &tensors,
        &pt::PtOptions::default(),
        std::io::BufWriter::new(f),
    )
    .expect("write");
}

/// A tmpfs of `kib` KiB mounted on a fresh folder, unmounted on drop: a small disk to
/// fill. Mounting needs root (CI runs as root); without it a test prints why it did not
/// run and returns, and with `CI` set it fails instead, so CI cannot pass without it.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (after saying why) when this process may not mount.
    pub fn new(kib: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(Tmpfs { dir });
        }
        let why = "mounting a tmpfs failed (needs root): the full-disk test did not run";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("{why}");
        None
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fill what is left with a file `filler`.
    pub fn fill(&self) {
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        let block = vec![0u8; 4096];
        use std::io::Write;
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
