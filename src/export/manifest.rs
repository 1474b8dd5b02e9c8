//! `<dataset>.manifest.json` (with `--split`, `<folder>/manifest.json`):
//! what an export read, with which settings, and what it wrote, so a
//! dataset can be traced to its rollouts and re-derived.
//!
//! It holds oclagl's version, the command line, the settings (every flag's
//! value, sources as absolute paths), a SHA-256 digest of each source (the
//! bytes export read of every rollout, in order), the counts (rows, rollouts
//! dropped by reason), each file's digest, and each row's digest with the
//! rollouts it came from. Two exports of unchanged sources write identical
//! manifests but for `created`. `export-sft --verify <manifest>` runs the
//! export again from the same sources and settings into a temporary folder
//! and lists what differs.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::redact::{Level, Redactor};
use super::stats::Stats;
use super::ExportArgs;
use crate::util::clock::now_unix_nanos;

/// One source as export read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceDigest {
    /// The source's path, absolute.
    pub path: String,
    /// Rollouts read from it.
    pub rollouts: u64,
    /// SHA-256 of every rollout's name and bytes, in the order read.
    pub sha256: String,
    /// An AGL v1 server's cursor after the last rollout read: `?after=`
    /// this reads only the rollouts that ended since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// One file written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileDigest {
    /// The file as named on the command line.
    pub path: String,
    /// Rows in it.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its bytes.
    pub sha256: String,
}

/// One row written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowDigest {
    /// Which file (index into `files`).
    pub file: usize,
    /// SHA-256 of the row's JSON (without its newline).
    pub sha256: String,
    /// The rollouts it came from (two for a preference pair: chosen first).
    pub rollouts: Vec<String>,
}

/// What an export counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Rollouts read.
    pub rollouts: u64,
    /// Rows written.
    pub rows: u64,
    /// Of those, to `train.jsonl` and `val.jsonl` (with `--split`).
    pub train_rows: u64,
    /// See `train_rows`.
    pub val_rows: u64,
    /// Rollouts that made no row, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Values redacted, by kind (empty with `--no-redact`).
    pub redacted: BTreeMap<String, u64>,
}

/// The manifest of one export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// oclagl's version.
    pub oclagl: String,
    /// When the export ran (UTC): the one field two exports of the same
    /// sources do not share.
    pub created: String,
    /// The command line, credentials in it redacted.
    pub command: Vec<String>,
    /// Every setting of the export (what `--verify` runs again).
    pub settings: ExportArgs,
    /// The sources, in the order read.
    pub sources: Vec<SourceDigest>,
    /// Rows and drops.
    pub counts: Counts,
    /// The files written.
    pub files: Vec<FileDigest>,
    /// The rows, in the order written.
    pub rows: Vec<RowDigest>,
}

/// Collects the digests while an export runs.
#[derive(Default)]
pub struct Recorder {
    sources: Vec<(SourceDigest, Sha256)>,
    files: Vec<(u64, u64, Sha256)>,
    rows: Vec<RowDigest>,
}

fn length_prefixed(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

impl Recorder {
    /// A recorder for `outputs` output files.
    pub fn new(outputs: usize) -> Recorder {
        Recorder {
            files: (0..outputs).map(|_| (0, 0, Sha256::new())).collect(),
            ..Recorder::default()
        }
    }

    /// The next source export reads.
    pub fn source(&mut self, path: &Path) {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.sources.push((
            SourceDigest {
                path: path.display().to_string(),
                rollouts: 0,
                sha256: String::new(),
                next_after: None,
            },
            Sha256::new(),
        ));
    }

    /// The current source is an AGL v1 server, read up to this cursor.
    pub fn cursor(&mut self, next_after: u64) {
        if let Some((digest, _)) = self.sources.last_mut() {
            digest.next_after = Some(next_after);
        }
    }

    /// One rollout read from the current source: its name and bytes (empty
    /// when it could not be read).
    pub fn read(&mut self, name: &str, bytes: &[u8]) {
        if let Some((digest, hasher)) = self.sources.last_mut() {
            digest.rollouts += 1;
            length_prefixed(hasher, name.as_bytes());
            length_prefixed(hasher, bytes);
        }
    }

    /// One row written to output `file`: `line` with its newline.
    pub fn row(&mut self, file: usize, line: &[u8], rollouts: Vec<String>) {
        if let Some((rows, bytes, hasher)) = self.files.get_mut(file) {
            *rows += 1;
            *bytes += line.len() as u64;
            hasher.update(line);
        }
        let json = line.strip_suffix(b"\n").unwrap_or(line);
        self.rows.push(RowDigest {
            file,
            sha256: hex::encode(Sha256::digest(json)),
            rollouts,
        });
    }

    /// The manifest of the export `settings` ran, which wrote `outputs`.
    pub fn finish(self, settings: &ExportArgs, outputs: &[PathBuf], stats: &Stats) -> Manifest {
        let mut settings = settings.clone();
        settings.input.source = self
            .sources
            .iter()
            .map(|(d, _)| PathBuf::from(&d.path))
            .collect();
        Manifest {
            oclagl: env!("CARGO_PKG_VERSION").to_string(),
            created: crate::agl::trace_file::datetime(now_unix_nanos() as f64 / 1e9),
            command: command_line(std::env::args()),
            settings,
            sources: self
                .sources
                .into_iter()
                .map(|(mut d, h)| {
                    d.sha256 = hex::encode(h.finalize());
                    d
                })
                .collect(),
            counts: Counts {
                rollouts: stats.rollouts,
                rows: stats.rows,
                train_rows: stats.train_rows,
                val_rows: stats.val_rows,
                dropped: stats
                    .dropped
                    .iter()
                    .map(|(why, n)| (why.describe().to_string(), *n))
                    .collect(),
                redacted: stats
                    .redacted
                    .iter()
                    .map(|(kind, n)| (kind.to_string(), *n))
                    .collect(),
            },
            files: self
                .files
                .into_iter()
                .zip(outputs)
                .map(|((rows, bytes, h), path)| FileDigest {
                    path: path.display().to_string(),
                    rows,
                    bytes,
                    sha256: hex::encode(h.finalize()),
                })
                .collect(),
            rows: self.rows,
        }
    }
}

/// Where the manifest of an export that wrote `outputs` goes: beside the
/// dataset file, or in the split's folder; `None` when the dataset is not a
/// regular file (standard output, a device, a FIFO).
pub fn path_for(outputs: &[PathBuf]) -> Option<PathBuf> {
    if !outputs
        .iter()
        .all(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
    {
        return None;
    }
    match outputs {
        [one] => {
            let mut name = one.file_name()?.to_os_string();
            name.push(".manifest.json");
            Some(one.with_file_name(name))
        }
        [train, _] => Some(train.with_file_name("manifest.json")),
        _ => None,
    }
}

/// Writes `manifest` to `path`, atomically.
pub fn write(manifest: &Manifest, path: &Path) -> io::Result<PathBuf> {
    let mut bytes = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("the manifest path has no file name"))?;
    crate::util::fs::write_atomic(dir, &name.to_string_lossy(), &bytes)
}

/// Reads a manifest.
pub fn read(path: &Path) -> Result<Manifest, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not an oclagl export manifest: {e}", path.display()))
}

/// What differs between the manifest of an export and that of the same
/// export run again (nothing when the dataset is re-derived exactly).
pub fn differences(recorded: &Manifest, again: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    for (a, b) in recorded.sources.iter().zip(&again.sources) {
        if a != b {
            out.push(format!(
                "source {} changed: {} rollouts then, {} now",
                a.path, a.rollouts, b.rollouts
            ));
        }
    }
    if recorded.counts != again.counts {
        out.push(format!(
            "counts differ: {} rows from {} rollouts then, {} from {} now",
            recorded.counts.rows,
            recorded.counts.rollouts,
            again.counts.rows,
            again.counts.rollouts
        ));
    }
    for (a, b) in recorded.files.iter().zip(&again.files) {
        if (a.rows, a.bytes, &a.sha256) != (b.rows, b.bytes, &b.sha256) {
            out.push(format!(
                "{} differs: {} rows, sha256 {} then; {} rows, sha256 {} now",
                a.path, a.rows, a.sha256, b.rows, b.sha256
            ));
        }
    }
    let changed: Vec<String> = recorded
        .rows
        .iter()
        .zip(&again.rows)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(n, (a, _))| format!("row {} ({})", n + 1, a.rollouts.join(", ")))
        .take(5)
        .collect();
    if !changed.is_empty() {
        out.push(format!("rows that differ: {}", changed.join("; ")));
    }
    out
}

/// `args` with any credential in them replaced by its placeholder, as in
/// the rows.
fn command_line(args: impl Iterator<Item = String>) -> Vec<String> {
    let redactor = Redactor::new(Level::Secrets);
    args.map(|a| redactor.redact_text(&a, &mut super::redact::Counts::new()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_keeps_no_credential() {
        let args = ["oclagl", "export-sft", "--session", "AKIAPGRYGR6KG2JMO37K"];
        let got = command_line(args.iter().map(|a| a.to_string()));
        assert_eq!(
            got,
            [
                "oclagl",
                "export-sft",
                "--session",
                "<REDACTED:aws_access_key>"
            ]
        );
    }

    #[test]
    fn digests_follow_the_bytes() {
        let run = |rollout: &[u8]| {
            let mut r = Recorder::new(1);
            r.source(Path::new("/nonexistent/traces"));
            r.read("rollout_ro-1_x.json", rollout);
            r.row(0, b"{\"messages\":[]}\n", vec!["ro-1".into()]);
            r
        };
        let (a, b) = (run(b"{}"), run(b"{ }"));
        assert_ne!(
            a.sources[0].1.clone().finalize(),
            b.sources[0].1.clone().finalize()
        );
        assert_eq!(a.rows, b.rows);
        assert_eq!(
            a.rows[0].sha256,
            hex::encode(Sha256::digest(b"{\"messages\":[]}"))
        );
        assert_eq!(a.files[0].1, 16);
    }

    #[test]
    fn manifests_go_beside_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.jsonl");
        std::fs::write(&file, "").unwrap();
        assert_eq!(
            path_for(std::slice::from_ref(&file)),
            Some(dir.path().join("data.jsonl.manifest.json"))
        );
        let (train, val) = (dir.path().join("train.jsonl"), dir.path().join("val.jsonl"));
        std::fs::write(&train, "").unwrap();
        std::fs::write(&val, "").unwrap();
        assert_eq!(
            path_for(&[train, val]),
            Some(dir.path().join("manifest.json"))
        );
        assert_eq!(path_for(&[PathBuf::from("/dev/null")]), None);
        assert_eq!(path_for(&[PathBuf::from("-")]), None);
    }
}
