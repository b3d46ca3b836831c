//! TensorBoard event files (docs/monitoring.md#tensorboard): `events.out.tfevents.<secs>.<host>`
//! in TFRecord framing (u64 length, masked CRC-32C of the length, the data, masked CRC-32C
//! of the data), each record an `Event` protobuf: the first a `file_version`
//! `brain.Event:2`, then one per metrics.jsonl line with a scalar summary for every metric,
//! loss term, the learning rate and the gradient norm. The protobuf and the CRC are written
//! here by hand (a few field types are all an event needs).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::line::EpochLine;
use super::MonitorError;

/// The prefix TensorBoard looks for in a file name.
pub const FILE_PREFIX: &str = "events.out.tfevents.";
/// The first record's `file_version`.
pub const FILE_VERSION: &str = "brain.Event:2";

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), by a table.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's masked CRC: rotated right by 15 bits plus 0xa282ead8.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its masked CRC, the data, its masked CRC.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The protobuf wire format, as far as an Event needs it.
pub mod pb {
    pub const VARINT: u8 = 0;
    pub const FIXED64: u8 = 1;
    pub const BYTES: u8 = 2;
    pub const FIXED32: u8 = 5;

    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, (u64::from(field) << 3) | u64::from(wire));
    }

    pub fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        key(out, field, BYTES);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    pub fn double(out: &mut Vec<u8>, field: u32, v: f64) {
        key(out, field, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn float(out: &mut Vec<u8>, field: u32, v: f32) {
        key(out, field, FIXED32);
        out.extend_from_slice(&v.to_le_bytes());
    }

    /// An int64 field (negative values take ten bytes, as protobuf writes them).
    pub fn int64(out: &mut Vec<u8>, field: u32, v: i64) {
        key(out, field, VARINT);
        varint(out, v as u64);
    }
}

/// `Event { wall_time = 1, step = 2, file_version = 3 }`.
pub fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut e = Vec::new();
    pb::double(&mut e, 1, wall_time);
    pb::bytes(&mut e, 3, FILE_VERSION.as_bytes());
    e
}

/// `Event { wall_time = 1, step = 2, summary = 5 { value = 1 { tag = 1, simple_value = 2 } } }`.
pub fn scalars_event(wall_time: f64, step: i64, scalars: &[(String, f32)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, v) in scalars {
        let mut value = Vec::new();
        pb::bytes(&mut value, 1, tag.as_bytes());
        pb::float(&mut value, 2, *v);
        pb::bytes(&mut summary, 1, &value);
    }
    let mut e = Vec::new();
    pb::double(&mut e, 1, wall_time);
    pb::int64(&mut e, 2, step);
    pb::bytes(&mut e, 5, &summary);
    e
}

/// The scalars of a metrics.jsonl line: `metrics/NAME` for each metric, `loss/TERM` for
/// each loss term (a `null`, non-finite when tvck wrote it, becomes NaN), `train/lr` and
/// `train/grad_norm` when the epoch trained.
pub fn scalars_of(line: &EpochLine) -> Vec<(String, f32)> {
    let v = |n: Option<f64>| n.map_or(f32::NAN, |x| x as f32);
    let mut out = Vec::new();
    for (k, n) in line.metrics.iter().flatten() {
        out.push((format!("metrics/{k}"), v(*n)));
    }
    for (k, n) in &line.loss {
        out.push((format!("loss/{k}"), v(*n)));
    }
    if line.epoch > 0 {
        for (k, n) in [("lr", line.lr), ("grad_norm", line.grad_norm)] {
            if let Some(n) = n {
                out.push((format!("train/{k}"), n as f32));
            }
        }
    }
    out
}

/// `events.out.tfevents.<secs>.<host>` (the host's characters that are not safe in a file
/// name become `_`).
pub fn file_name(secs: u64, host: &str) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let host = if host.is_empty() {
        "localhost".into()
    } else {
        host
    };
    format!("{FILE_PREFIX}{secs}.{host}")
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> MonitorError + '_ {
    move |source| MonitorError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A new event file in `dir`, named for `secs` and this host; never an existing file (a
/// name taken gets `.1`, `.2`, … appended).
fn create_new(dir: &Path, secs: u64) -> Result<(PathBuf, File), MonitorError> {
    let base = file_name(secs, &super::run::hostname());
    for n in 0..1000u32 {
        let name = if n == 0 {
            base.clone()
        } else {
            format!("{base}.{n}")
        };
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Err(MonitorError::Io {
        path: dir.join(base),
        source: std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "every event file name for this second is taken",
        ),
    })
}

/// An event file written as training goes (one record per epoch, flushed).
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// A new event file in `dir` starting with the `file_version` record.
    pub fn create(dir: &Path, wall_time: f64) -> Result<EventWriter, MonitorError> {
        let (path, file) = create_new(dir, wall_time.max(0.0) as u64)?;
        let mut w = EventWriter {
            path,
            file: BufWriter::new(file),
        };
        w.write(&file_version_event(wall_time))?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, event: &[u8]) -> Result<(), MonitorError> {
        self.file
            .write_all(&record(event))
            .and_then(|_| self.file.flush())
            .map_err(io(&self.path))
    }

    /// The scalars of one metrics.jsonl line at its epoch.
    pub fn line(&mut self, line: &EpochLine, wall_time: f64) -> Result<(), MonitorError> {
        let step = i64::try_from(line.epoch).unwrap_or(i64::MAX);
        self.write(&scalars_event(wall_time, step, &scalars_of(line)))
    }

    /// Flush and sync.
    pub fn finish(mut self) -> Result<PathBuf, MonitorError> {
        self.file.flush().map_err(io(&self.path))?;
        self.file.get_ref().sync_all().map_err(io(&self.path))?;
        Ok(self.path)
    }
}

/// What `export` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exported {
    pub file: PathBuf,
    /// Lines (epochs) written.
    pub epochs: usize,
    /// Scalars written, over all epochs.
    pub scalars: usize,
    /// metrics.jsonl lines that were not metrics lines.
    pub skipped: usize,
}

/// Write an event file of a run's metrics.jsonl into `out` (default: the run folder). The
/// wall times are the run's (run.json's start plus its epoch time per epoch) when run.json
/// says, else now. Written to a temporary name, synced, then renamed: no partial event
/// file is ever left under TensorBoard's name.
pub fn export(run_dir: &Path, out: Option<&Path>) -> Result<Exported, MonitorError> {
    let metrics = run_dir.join(super::METRICS_FILE);
    let meta = std::fs::metadata(&metrics).map_err(io(&metrics))?;
    if !meta.is_file() {
        return Err(MonitorError::NotAFile(metrics));
    }
    let mut f = super::Follower::new(&metrics);
    let lines = f.poll()?.lines;
    let out = out.unwrap_or(run_dir);
    std::fs::create_dir_all(out).map_err(io(out))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let info = super::RunInfo::read(run_dir);
    let wall = |epoch: u64| match &info {
        Some(i) => i.started as f64 + epoch as f64 * i.epoch_seconds.unwrap_or(0.0),
        None => now,
    };
    let start = info.as_ref().map_or(now, |i| i.started as f64);
    let mut bytes = record(&file_version_event(start));
    let mut scalars = 0;
    for l in &lines {
        let s = scalars_of(l);
        scalars += s.len();
        let step = i64::try_from(l.epoch).unwrap_or(i64::MAX);
        bytes.extend_from_slice(&record(&scalars_event(wall(l.epoch), step, &s)));
    }
    // The final name is reserved first (create_new), then the content replaces it.
    let (path, reserved) = create_new(out, start as u64)?;
    drop(reserved);
    let tmp = out.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let written = (|| {
        let mut t = File::create(&tmp)?;
        t.write_all(&bytes)?;
        t.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_file(&path);
        return Err(io(&path)(e));
    }
    Ok(Exported {
        file: path,
        epochs: lines.len(),
        scalars,
        skipped: f.skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_vectors() {
        // RFC 3720 B.4 and the usual check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&inc), 0x46DD_794E);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    // Written as TensorFlow writes it, to check the rotation.
    #[allow(clippy::manual_rotate)]
    fn masked_crc_is_tensorflows() {
        // tensorflow/core/lib/hash/crc32c.h: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
        let c = crc32c(b"abc");
        assert_eq!(
            masked_crc(b"abc"),
            ((c >> 15) | (c << 17)).wrapping_add(0xa282ead8)
        );
        assert_eq!(masked_crc(b""), 0xa282_ead8);
    }

    #[test]
    fn varints_and_fields() {
        let enc = |v: u64| {
            let mut o = Vec::new();
            pb::varint(&mut o, v);
            o
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(1), [1]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
        let mut o = Vec::new();
        pb::int64(&mut o, 2, -1);
        assert_eq!(o.len(), 11, "a negative int64 is ten varint bytes");
        let mut o = Vec::new();
        pb::bytes(&mut o, 1, b"hi");
        assert_eq!(o, [0x0a, 2, b'h', b'i']);
        let mut o = Vec::new();
        pb::float(&mut o, 2, 1.0);
        assert_eq!(o, [0x15, 0, 0, 0x80, 0x3f]);
        let mut o = Vec::new();
        pb::double(&mut o, 1, 0.5);
        assert_eq!(o, [0x09, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f]);
    }

    #[test]
    fn events_byte_for_byte() {
        let e = file_version_event(2.0);
        let mut want = vec![0x09];
        want.extend_from_slice(&2.0f64.to_le_bytes());
        want.extend_from_slice(&[0x1a, 13]);
        want.extend_from_slice(b"brain.Event:2");
        assert_eq!(e, want);
        let e = scalars_event(1.0, 3, &[("a".into(), 1.0)]);
        let mut want = vec![0x09];
        want.extend_from_slice(&1.0f64.to_le_bytes());
        want.extend_from_slice(&[
            0x10, 3, 0x2a, 10, 0x0a, 8, 0x0a, 1, b'a', 0x15, 0, 0, 0x80, 0x3f,
        ]);
        assert_eq!(e, want);
    }

    #[test]
    fn record_framing() {
        let r = record(b"xyz");
        assert_eq!(r.len(), 8 + 4 + 3 + 4);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[8..12], &masked_crc(&3u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&r[12..15], b"xyz");
        assert_eq!(&r[15..], &masked_crc(b"xyz").to_le_bytes());
    }

    #[test]
    fn scalars_of_a_line() {
        let l = EpochLine::parse(
            r#"{"epoch":2,"lr":0.5,"grad_norm":null,"loss":{"total":1.5,"rank":null},"metrics":{"coverage":1.0,"Q":0.25}}"#,
        )
        .unwrap();
        let s = scalars_of(&l);
        let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "metrics/Q",
                "metrics/coverage",
                "loss/rank",
                "loss/total",
                "train/lr"
            ]
        );
        assert!(s[2].1.is_nan());
        assert_eq!(s[3].1, 1.5);
        let l0 =
            EpochLine::parse(r#"{"epoch":0,"lr":null,"loss":null,"metrics":{"coverage":0.5}}"#)
                .unwrap();
        assert_eq!(scalars_of(&l0), [("metrics/coverage".to_string(), 0.5)]);
    }

    #[test]
    fn file_names_are_tensorboards() {
        assert_eq!(
            file_name(17, "gpu-1.lab"),
            "events.out.tfevents.17.gpu-1.lab"
        );
        assert_eq!(file_name(17, "a/b c"), "events.out.tfevents.17.a_b_c");
        assert_eq!(file_name(17, ""), "events.out.tfevents.17.localhost");
    }

    #[test]
    fn export_never_takes_an_existing_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(super::super::METRICS_FILE),
            "{\"epoch\":0,\"metrics\":{\"coverage\":1.0}}\n{\"epoch\":1,\"lr\":0.1,\"loss\":{\"total\":2.0},\"metrics\":null}\nnot json\n",
        )
        .unwrap();
        let a = export(d.path(), None).unwrap();
        let b = export(d.path(), None).unwrap();
        assert_ne!(a.file, b.file);
        assert_eq!((a.epochs, a.scalars, a.skipped), (2, 3, 1));
        let bytes = std::fs::read(&a.file).unwrap();
        // Without run.json the wall times are the export's: only those differ.
        assert_eq!(bytes.len(), std::fs::read(&b.file).unwrap().len());
        // Records: file_version, then one per line; every CRC checks.
        let mut at = 0;
        let mut n = 0;
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            let dcrc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(dcrc, masked_crc(data));
            at += 16 + len;
            n += 1;
        }
        assert_eq!(n, 3);
        let leftovers: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
