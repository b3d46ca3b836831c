//! Executing a plan: the new state, the output tree (model state under the same root key,
//! other entries kept / dropped / rewritten, numpy scalars as plain numbers, a `migration`
//! record), written atomically and verified against the plan before it takes OUT's name.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ops;
use super::plan::{Action, Plan};
use super::refine::{MetricsStatus, Refine, RefineInput, Refined};
use super::{plan_checkpoint, MigrateError, SpecSet};
use crate::arch::VersionId;
use crate::format::write::{self, pt, safetensors as st, TensorData, WriteError};
use crate::format::{Checkpoint, Value};
use crate::metrics::MIGRATION;

/// Output container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Pt,
    Safetensors,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Pt => "pt",
            OutputFormat::Safetensors => "safetensors",
        }
    }

    /// The format a path's extension names, if any.
    pub fn from_path(p: &Path) -> Option<OutputFormat> {
        match p.extension()?.to_str()? {
            "safetensors" => Some(OutputFormat::Safetensors),
            "pt" | "pth" | "ckpt" | "bin" => Some(OutputFormat::Pt),
            _ => None,
        }
    }
}

/// Options of [`convert_file`].
#[derive(Clone, Copy)]
pub struct ConvertOptions<'r> {
    pub to: VersionId,
    pub format: OutputFormat,
    pub force: bool,
    pub dry_run: bool,
    /// Measure (and fit) the converted model before it is written; without one the file is
    /// written with its metrics marked not measured.
    pub refine: Option<&'r dyn Refine>,
}

impl std::fmt::Debug for ConvertOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvertOptions")
            .field("to", &self.to)
            .field("format", &self.format)
            .field("force", &self.force)
            .field("dry_run", &self.dry_run)
            .field("refine", &self.refine.is_some())
            .finish()
    }
}

/// A tensor the output must hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expected {
    pub key: String,
    pub shape: Vec<u64>,
    pub dtype: crate::format::DType,
    /// SHA-256 (hex) of the logical bytes: the source tensor's for copies.
    pub sha256: String,
}

/// The result of converting one file.
#[derive(Debug, Clone, Serialize)]
pub struct Converted {
    pub plan: Plan,
    /// Where the output was written (None for a dry run or when nothing had to change).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<PathBuf>,
    pub format: OutputFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Tensors re-read from the output and checked (hash, shape, dtype).
    pub verified: usize,
    /// Whether the written file's metrics were measured on its weights (not for a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_status: Option<MetricsStatus>,
    /// What the measurement or fit reported (the source / structural / fitted values…), or
    /// for a dry run what it would do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refinement: Option<serde_json::Value>,
}

/// The output of a plan, ready to write.
pub struct Output<'a> {
    pub root: Value,
    pub tensors: Vec<TensorData<'a>>,
    /// Safetensors names, one per tensor.
    pub names: Vec<String>,
    /// The model state the file must hold, in order.
    pub expected: Vec<Expected>,
    /// Safetensors metadata carried over from a bare safetensors input.
    pub carried_metadata: BTreeMap<String, String>,
    /// The migration record (also inside `root` unless the state is bare).
    pub record: Value,
    pub metrics_status: MetricsStatus,
    /// The refiner's report, when there was one.
    pub refinement: Option<serde_json::Value>,
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch.
pub fn utc_text(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn s(v: &str) -> Value {
    Value::Str(v.to_string())
}

fn migration_record(
    plan: &Plan,
    status: MetricsStatus,
    refined: Option<&Refined>,
    source_metrics: Vec<(Value, Value)>,
) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let specs = plan
        .steps
        .iter()
        .map(|st| {
            Value::Dict(vec![
                (s("name"), s(&st.spec)),
                (s("sha256"), s(&st.spec_sha256)),
                (s("from_version"), s(st.from_version)),
                (s("to_version"), s(st.to_version)),
            ])
        })
        .collect();
    let mut metrics = vec![(s("status"), s(status.as_str()))];
    if let Some(Value::Dict(items)) = refined.map(|r| Value::from_json(&r.report)) {
        metrics.extend(items.into_iter().filter(|(k, _)| k != &s("status")));
    }
    let mut record = vec![
        (s("from_version"), s(plan.source_version)),
        (s("to_version"), s(plan.target_version)),
        (s("specs"), Value::List(specs)),
        (s("tool"), s(&format!("tvck {}", env!("CARGO_PKG_VERSION")))),
        (s("utc"), s(&utc_text(now))),
        (s(crate::metrics::MIGRATION_METRICS), Value::Dict(metrics)),
    ];
    if !source_metrics.is_empty() {
        record.push((
            s(crate::metrics::SOURCE_METRICS),
            Value::Dict(source_metrics),
        ));
    }
    Value::Dict(record)
}

/// The source's metric entries (`metrics`, `best_Q`, …), taken out of the output tree: a
/// converted file never carries them as its own. They go into the migration record, which
/// [`carry`] then copies like the rest of the tree (numpy scalars as plain numbers).
fn take_source_metrics(root: &mut Value) -> Vec<(Value, Value)> {
    let mut taken = Vec::new();
    if let Value::Dict(items) = root {
        items.retain(|(k, v)| match k {
            Value::Str(name) if crate::metrics::SOURCE_METRIC_ENTRIES.contains(&name.as_str()) => {
                taken.push((k.clone(), v.clone()));
                false
            }
            _ => true,
        });
    }
    taken
}

/// Run the plan's tensor operations on `ckpt`'s model state, let `refine` measure (and fit)
/// the result, and build the output tree.
pub fn execute<'a>(
    ckpt: &'a Checkpoint,
    plan: &Plan,
    refine: Option<&dyn Refine>,
) -> Result<Output<'a>, MigrateError> {
    // The source state.
    let mut state: Vec<(String, TensorData<'a>)> = Vec::new();
    if let Some(ms) = ckpt.model_state_ref() {
        for &(k, i) in &ms.entries {
            let t = &ckpt.tensors[i];
            state.push((
                k.to_string(),
                TensorData {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    bytes: ckpt.tensor_bytes(i)?,
                    requires_grad: t.requires_grad,
                },
            ));
        }
    }
    for step in &plan.steps {
        let by_key: HashMap<&str, &TensorData<'a>> =
            state.iter().map(|(k, t)| (k.as_str(), t)).collect();
        let mut next = Vec::new();
        for row in &step.rows {
            let Some((key, shape)) = &row.to else {
                continue;
            };
            let src = row
                .from
                .as_ref()
                .and_then(|(k, _)| by_key.get(k.as_str()).copied());
            let op_err = |source: ops::OpError| MigrateError::Op {
                rule: row.rule,
                key: key.clone(),
                source,
            };
            let data = match (&row.action, src) {
                (Action::Same, Some(t)) => TensorData {
                    dtype: t.dtype,
                    shape: shape.clone(),
                    bytes: t.bytes.clone(),
                    requires_grad: t.requires_grad,
                },
                (Action::Init(init), _) => TensorData {
                    dtype: row.dtype,
                    shape: shape.clone(),
                    bytes: Cow::Owned(
                        ops::init_tensor(init, row.dtype, shape, key).map_err(op_err)?,
                    ),
                    requires_grad: true,
                },
                (Action::Slice(r), Some(t)) => {
                    let (sh, b) = ops::slice(t.dtype, &t.shape, &t.bytes, r).map_err(op_err)?;
                    TensorData {
                        dtype: t.dtype,
                        shape: sh,
                        bytes: Cow::Owned(b),
                        requires_grad: t.requires_grad,
                    }
                }
                (Action::Pad(p, value), Some(t)) => {
                    let (sh, b) =
                        ops::pad(t.dtype, &t.shape, &t.bytes, p, *value).map_err(op_err)?;
                    TensorData {
                        dtype: t.dtype,
                        shape: sh,
                        bytes: Cow::Owned(b),
                        requires_grad: t.requires_grad,
                    }
                }
                (Action::Transpose(perm), Some(t)) => {
                    let (sh, b) =
                        ops::transpose(t.dtype, &t.shape, &t.bytes, perm).map_err(op_err)?;
                    TensorData {
                        dtype: t.dtype,
                        shape: sh,
                        bytes: Cow::Owned(b),
                        requires_grad: t.requires_grad,
                    }
                }
                (_, None) => return Err(op_err(ops::OpError::SourceMissing)),
                (Action::Drop, _) => continue,
            };
            if data.shape != *shape {
                return Err(op_err(ops::OpError::ShapeDiffers {
                    produced: data.shape.clone(),
                    planned: shape.clone(),
                }));
            }
            next.push((key.clone(), data));
        }
        state = next;
    }

    let refined = match refine {
        Some(r) => {
            let refined = r.refine(RefineInput {
                source: ckpt,
                plan,
                state: &state,
            })?;
            if let Some(new) = &refined.state {
                replace_state(&mut state, new)?;
            }
            Some(refined)
        }
        None => None,
    };
    let status = refined
        .as_ref()
        .map_or(crate::metrics::Provenance::NotMeasured, |r| r.status);

    let bytes: Vec<&[u8]> = state.iter().map(|(_, t)| &t.bytes[..]).collect();
    let hashes = crate::fingerprint::many::sha256_many(&bytes);
    let expected: Vec<Expected> = state
        .iter()
        .zip(hashes)
        .map(|((k, t), h)| Expected {
            key: k.clone(),
            shape: t.shape.clone(),
            dtype: t.dtype,
            sha256: crate::fingerprint::hex(&h),
        })
        .collect();
    // A bare state_dict has no entries besides the state: only the record's own fields.
    let mut source_root = plan.model_state_key.as_ref().map(|_| ckpt.root.clone());
    let source_metrics = source_root
        .as_mut()
        .map(take_source_metrics)
        .unwrap_or_default();
    let mut record = migration_record(plan, status, refined.as_ref(), source_metrics);

    // The rest of the tree.
    let n_state = state.len();
    let state_keys: Vec<String> = state.iter().map(|(k, _)| k.clone()).collect();
    let mut tensors: Vec<TensorData<'a>> = state.into_iter().map(|(_, t)| t).collect();
    let state_dict = Value::Dict(
        state_keys
            .iter()
            .enumerate()
            .map(|(i, k)| (Value::Str(k.clone()), Value::Tensor(i)))
            .collect(),
    );
    let mut carried_metadata = BTreeMap::new();
    let root = match &plan.model_state_key {
        None => {
            if let Some(Value::Dict(meta)) = ckpt.root.get(crate::format::safetensors::METADATA_KEY)
            {
                for (k, v) in meta {
                    if let (Value::Str(k), Value::Str(v)) = (k, v) {
                        if k != st::TREE_KEY {
                            carried_metadata.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            state_dict
        }
        Some(msk) => {
            let mut root = source_root.take().unwrap_or_else(|| ckpt.root.clone());
            if let Some(r) = &refined {
                if let Value::Dict(items) = &mut root {
                    items.push((
                        s("metrics"),
                        Value::Dict(
                            r.metrics
                                .iter()
                                .map(|(k, v)| (s(k), Value::Float(*v)))
                                .collect(),
                        ),
                    ));
                }
            }
            for step in &plan.steps {
                super::tree::apply_entries(&mut root, &step.entries);
            }
            super::tree::set_path(&mut root, msk, Value::None);
            if let Value::Dict(items) = &mut root {
                items.retain(|(k, _)| !matches!(k, Value::Str(s) if s == MIGRATION));
                items.push((s(MIGRATION), record));
            }
            let mut root = carry(ckpt, root, &mut tensors, &mut HashMap::new())?;
            super::tree::set_path(&mut root, msk, state_dict);
            // The record as written (the source's metrics carried like the rest).
            record = root.get(MIGRATION).cloned().unwrap_or(Value::None);
            root
        }
    };
    // Safetensors names: the model state by its keys, the other tensors by their path.
    let paths = crate::format::torch::tensor_paths(&root, tensors.len());
    let names = state_keys
        .into_iter()
        .chain(
            paths
                .into_iter()
                .enumerate()
                .skip(n_state)
                .map(|(i, p)| p.unwrap_or_else(|| format!("<tensor #{i}>"))),
        )
        .collect();
    Ok(Output {
        root,
        tensors,
        names,
        expected,
        carried_metadata,
        record,
        metrics_status: status,
        refinement: refined.map(|r| r.report),
    })
}

/// Put a refiner's new bytes in place of the structural state, checking that each has its
/// tensor's size.
fn replace_state(
    state: &mut [(String, TensorData<'_>)],
    new: &[Vec<u8>],
) -> Result<(), MigrateError> {
    if new.len() != state.len() {
        return Err(MigrateError::Refine {
            message: format!(
                "the fitted model has {} tensors, the converted state {}",
                new.len(),
                state.len()
            ),
        });
    }
    for ((key, t), bytes) in state.iter_mut().zip(new) {
        if bytes.len() != t.bytes.len() {
            return Err(MigrateError::Refine {
                message: format!(
                    "the fitted `{key}` has {} bytes, {} {:?} needs {}",
                    bytes.len(),
                    t.dtype.torch_name(),
                    t.shape,
                    t.bytes.len()
                ),
            });
        }
        t.bytes = Cow::Owned(bytes.clone());
    }
    Ok(())
}

/// Copy the non-model tree: its tensors appended after the model state (a tensor the tree
/// shares stays one tensor), numpy scalars as plain numbers.
fn carry<'a>(
    ckpt: &'a Checkpoint,
    v: Value,
    tensors: &mut Vec<TensorData<'a>>,
    carried: &mut HashMap<usize, usize>,
) -> Result<Value, MigrateError> {
    Ok(match v {
        Value::Tensor(i) => {
            if let Some(&j) = carried.get(&i) {
                return Ok(Value::Tensor(j));
            }
            let t = &ckpt.tensors[i];
            tensors.push(TensorData {
                dtype: t.dtype,
                shape: t.shape.clone(),
                bytes: ckpt.tensor_bytes(i)?,
                requires_grad: t.requires_grad,
            });
            carried.insert(i, tensors.len() - 1);
            Value::Tensor(tensors.len() - 1)
        }
        Value::NumpyScalar { value, .. } => *value,
        Value::List(items) => Value::List(
            items
                .into_iter()
                .map(|v| carry(ckpt, v, tensors, carried))
                .collect::<Result<_, _>>()?,
        ),
        Value::Tuple(items) => Value::Tuple(
            items
                .into_iter()
                .map(|v| carry(ckpt, v, tensors, carried))
                .collect::<Result<_, _>>()?,
        ),
        Value::Dict(items) => Value::Dict(
            items
                .into_iter()
                .map(|(k, v)| Ok((k, carry(ckpt, v, tensors, carried)?)))
                .collect::<Result<_, MigrateError>>()?,
        ),
        Value::Blocked { global } => {
            return Err(MigrateError::Tree(format!(
                "the checkpoint holds the result of the unsafe call `{global}`"
            )))
        }
        other => other,
    })
}

/// Write `out` to `path` and verify it before it takes the name.
pub fn write_output(
    out: &Output<'_>,
    path: &Path,
    format: OutputFormat,
    force: bool,
    bare: bool,
) -> Result<(u64, usize), MigrateError> {
    let verify = |tmp: &Path| verify_file(tmp, &out.expected);
    let bytes = match format {
        OutputFormat::Pt => write::write_atomic_verified(
            path,
            force,
            |w| pt::write_pt(&out.root, &out.tensors, &pt::PtOptions::default(), w),
            verify,
        )?,
        OutputFormat::Safetensors => {
            let mut meta = out.carried_metadata.clone();
            meta.insert("format".into(), "pt".into());
            if bare {
                meta.insert(
                    "tvck.migration".into(),
                    st::tree_json(&out.record, &[]).map_err(MigrateError::Write)?,
                );
            } else {
                meta.insert(st::TREE_KEY.into(), st::tree_json(&out.root, &out.names)?);
            }
            let named: Vec<(String, TensorData<'_>)> = out
                .names
                .iter()
                .cloned()
                .zip(out.tensors.iter().map(TensorData::borrowed))
                .collect();
            write::write_atomic_verified(
                path,
                force,
                |w| st::write_safetensors(&named, &meta, w),
                verify,
            )?
        }
    };
    Ok((bytes, out.expected.len()))
}

/// Re-read a written file: its model state must be exactly `expected` (keys, order, shapes,
/// dtypes, SHA-256 of every tensor).
pub fn verify_file(path: &Path, expected: &[Expected]) -> Result<(), WriteError> {
    let fail =
        |m: String| WriteError::Invalid(format!("verification of the written file failed: {m}"));
    let ckpt = Checkpoint::open(path).map_err(|e| fail(e.to_string()))?;
    let ms = ckpt
        .model_state_ref()
        .ok_or_else(|| fail("no model state in the written file".into()))?;
    let mut problems = Vec::new();
    let written: HashMap<&str, usize> = ms.entries.iter().map(|&(k, i)| (k, i)).collect();
    if ms.entries.len() != expected.len() {
        problems.push(format!(
            "{} tensors written, {} planned",
            ms.entries.len(),
            expected.len()
        ));
    }
    // The tensors whose shape and dtype match, their bytes hashed together.
    let fits = |e: &Expected, i: usize| {
        let t = &ckpt.tensors[i];
        t.shape == e.shape && t.dtype == e.dtype
    };
    let to_hash: Vec<usize> = expected
        .iter()
        .filter_map(|e| written.get(e.key.as_str()).copied().filter(|&i| fits(e, i)))
        .collect();
    let mut hashes = crate::fingerprint::tensor_hashes(&ckpt, &to_hash).into_iter();
    for e in expected {
        let k = &e.key;
        let Some(&i) = written.get(k.as_str()) else {
            problems.push(format!("`{k}` is missing"));
            continue;
        };
        if !fits(e, i) {
            let t = &ckpt.tensors[i];
            problems.push(format!(
                "`{k}` is {} {:?}, the plan says {} {:?}",
                t.dtype, t.shape, e.dtype, e.shape
            ));
            continue;
        }
        match hashes.next().expect("one hash per fitting tensor") {
            Ok(h) if crate::fingerprint::hex(&h) == e.sha256 => {}
            Ok(_) => problems.push(format!("`{k}`: SHA-256 differs from the planned bytes")),
            Err(err) => problems.push(format!("`{k}`: {err}")),
        }
    }
    if problems.len() > 8 {
        let more = problems.len() - 8;
        problems.truncate(8);
        problems.push(format!("… and {more} more"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(fail(problems.join("; ")))
    }
}

/// The default output path: `<dir>/<stem>.<version>.<ext>` next to the input.
pub fn default_output(input: &Path, to: VersionId, format: OutputFormat) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    input.with_file_name(format!("{stem}.{}.{}", to.as_str(), format.extension()))
}

/// Whether `b` names the file `a` is: the same path once links are resolved, or (a hard
/// link) the same inode on the same device.
fn same_file(a: &Path, b: &Path) -> bool {
    if let (Ok(x), Ok(y)) = (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        if x == y {
            return true;
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    false
}

/// Plan, and unless `dry_run`, convert `input` into `output`.
pub fn convert_file(
    input: &Path,
    output: &Path,
    specs: &SpecSet,
    opts: &ConvertOptions,
) -> Result<Converted, MigrateError> {
    if same_file(input, output) {
        return Err(MigrateError::SameFile {
            path: output.to_path_buf(),
        });
    }
    // Replacing a link would write where the link does not say (or drop the link).
    if std::fs::symlink_metadata(output).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(MigrateError::OutputIsLink {
            path: output.to_path_buf(),
        });
    }
    let ckpt = Checkpoint::open(input)?;
    let plan = plan_checkpoint(&ckpt, opts.to, specs)?;
    if opts.dry_run || plan.is_noop() {
        let refinement = match opts.refine {
            Some(r) if !plan.is_noop() => Some(r.describe(&ckpt, &plan)?),
            _ => None,
        };
        return Ok(Converted {
            plan,
            output: None,
            format: opts.format,
            bytes: None,
            verified: 0,
            metrics_status: None,
            refinement,
        });
    }
    let out = execute(&ckpt, &plan, opts.refine)?;
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| WriteError::File {
            action: "create the output folder",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let (bytes, verified) = write_output(
        &out,
        output,
        opts.format,
        opts.force,
        plan.model_state_key.is_none(),
    )?;
    Ok(Converted {
        plan,
        output: Some(output.to_path_buf()),
        format: opts.format,
        bytes: Some(bytes),
        verified,
        metrics_status: Some(out.metrics_status),
        refinement: out.refinement,
    })
}

/// What happened to one file of a folder conversion.
#[derive(Debug, Clone, Serialize)]
pub struct FileOutcome {
    pub input: PathBuf,
    pub output: PathBuf,
    /// converted, planned (dry run), unchanged (already the target), failed.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Converted>,
}

/// A folder conversion.
#[derive(Debug, Clone, Serialize)]
pub struct TreeReport {
    pub input: PathBuf,
    pub output: PathBuf,
    pub files: Vec<FileOutcome>,
    /// Folder entries that could not be read.
    pub walk_errors: Vec<String>,
}

impl TreeReport {
    pub fn failed(&self) -> usize {
        self.files.iter().filter(|f| f.status == "failed").count()
    }
}

/// Convert every checkpoint under `input` into the same relative place under `output`
/// (extension set by the format). A file that fails is reported and skipped; the rest convert.
/// `on_total` gets the file count, `on_file` each outcome as it is done.
pub fn convert_tree(
    input: &Path,
    output: &Path,
    specs: &SpecSet,
    opts: &ConvertOptions,
    on_total: impl FnOnce(usize),
    mut on_file: impl FnMut(&FileOutcome),
) -> TreeReport {
    let crate::discover::Discovered {
        files,
        errors: walk_errors,
        ..
    } = crate::discover::discover(input, crate::discover::Walk::everything());
    // Never descend into the output folder when it lies inside the input.
    let out_abs = std::fs::canonicalize(output).ok();
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| {
            out_abs
                .as_ref()
                .is_none_or(|o| std::fs::canonicalize(f).map_or(true, |c| !c.starts_with(o)))
        })
        .collect();
    on_total(files.len());
    let mut outcomes = Vec::new();
    for f in files {
        let rel = f.strip_prefix(input).unwrap_or(&f);
        let target = output.join(rel).with_extension(opts.format.extension());
        // convert_file creates the target's folder when it writes.
        let outcome = match convert_file(&f, &target, specs, opts).map_err(|e| e.to_string()) {
            Ok(r) => FileOutcome {
                input: f.clone(),
                output: target,
                status: if r.plan.is_noop() {
                    "unchanged"
                } else if opts.dry_run {
                    "planned"
                } else {
                    "converted"
                },
                source_version: Some(r.plan.source_version),
                error: None,
                result: Some(r),
            },
            Err(e) => FileOutcome {
                input: f.clone(),
                output: target,
                status: "failed",
                source_version: None,
                error: Some(e),
                result: None,
            },
        };
        on_file(&outcome);
        outcomes.push(outcome);
    }
    TreeReport {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        files: outcomes,
        walk_errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_tensor_output(sha256: String) -> Output<'static> {
        let bytes: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        Output {
            root: Value::Dict(vec![
                (s("epoch"), Value::Int(3)),
                (
                    s("model_state_dict"),
                    Value::Dict(vec![(s("w"), Value::Tensor(0))]),
                ),
            ]),
            tensors: vec![TensorData::new(crate::format::DType::F32, vec![2], bytes)],
            names: vec!["w".into()],
            expected: vec![Expected {
                key: "w".into(),
                shape: vec![2],
                dtype: crate::format::DType::F32,
                sha256,
            }],
            carried_metadata: BTreeMap::new(),
            record: Value::None,
            metrics_status: crate::metrics::Provenance::NotMeasured,
            refinement: None,
        }
    }

    #[test]
    fn a_file_that_fails_verification_never_takes_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let good = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        for format in [OutputFormat::Pt, OutputFormat::Safetensors] {
            let out = dir.path().join(format!("ok.{}", format.extension()));
            let (_, n) =
                write_output(&one_tensor_output(good.clone()), &out, format, false, false).unwrap();
            assert_eq!(n, 1);
            assert!(out.exists());

            let bad = dir.path().join(format!("bad.{}", format.extension()));
            let err = write_output(
                &one_tensor_output("00".repeat(32)),
                &bad,
                format,
                false,
                false,
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("verification") && err.contains("SHA-256"),
                "{err}"
            );
            assert!(!bad.exists());
        }
        // Only the two good files: no temporary file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // A missing or reshaped tensor is named too.
        let out = dir.path().join("ok.pt");
        let mut e = one_tensor_output(good).expected;
        e[0].shape = vec![1, 2];
        let err = verify_file(&out, &e).unwrap_err().to_string();
        assert!(
            err.contains("`w` is float32 [2], the plan says float32 [1, 2]"),
            "{err}"
        );
        e[0].key = "v".into();
        let err = verify_file(&out, &e).unwrap_err().to_string();
        assert!(err.contains("`v` is missing"), "{err}");
    }

    #[test]
    fn utc_text_is_civil_time() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_text(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_text(1_796_045_045), "2026-11-30T13:24:05Z");
    }
}
