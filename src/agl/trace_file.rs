//! The seed's trace file: `traces/rollout_<rollout_id>_<YYYYmmddTHHMMSSZ>.json`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::index::fnv1a;
use super::span::Span;

/// One rollout, in exactly the seed's file shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceFile {
    /// The rollout (`ro-…`).
    pub rollout_id: String,
    /// Its attempt (`at-…`).
    pub attempt_id: String,
    /// `succeeded`, `failed` (the root span failed) or `running` (no root span
    /// yet).
    pub status: String,
    /// The task, from the root span's `oclagl.task_input` (JSON when it parses;
    /// `null` when absent).
    pub task_input: Value,
    /// How many spans follow.
    pub span_count: usize,
    /// The rollout's spans, in the order the store received them.
    pub spans: Vec<Span>,
}

/// The part of a file name that stands for a rollout id. Ids made only of
/// ASCII letters, digits, `-` and `_` (every AGL id) are used as they are;
/// anything else (`/`, `..`, control characters, …) is replaced and a hash of
/// the original keeps distinct ids apart.
pub fn file_stem(rollout_id: &str) -> String {
    let clean = !rollout_id.is_empty()
        && rollout_id.len() <= 128
        && rollout_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if clean {
        return rollout_id.to_string();
    }
    let mut stem: String = rollout_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    stem.push_str(&format!("-{:08x}", fnv1a(rollout_id.as_bytes()) as u32));
    stem
}

/// `YYYYmmddTHHMMSSZ` for a Unix time in nanoseconds (UTC).
pub fn timestamp(unix_nanos: u64) -> String {
    let secs = unix_nanos / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `YYYY-mm-dd HH:MM:SS` (UTC) for Unix seconds, for people.
pub fn datetime(unix_secs: f64) -> String {
    let secs = unix_secs.max(0.0) as u64;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `rollout_<stem>_<UTC time, compact>.json`, the name of a trace file written
/// at `unix_nanos`.
pub fn file_name(stem: &str, unix_nanos: u64) -> String {
    format!("rollout_{stem}_{}.json", timestamp(unix_nanos))
}

/// Splits `rollout_<stem>_<ts>.json` into the stem, if the name has that form.
pub fn parse_file_name(name: &str) -> Option<&str> {
    let inner = name.strip_prefix("rollout_")?.strip_suffix(".json")?;
    let (stem, ts) = inner.rsplit_once('_')?;
    let b = ts.as_bytes();
    let ts_ok = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    (ts_ok && !stem.is_empty()).then_some(stem)
}

/// The trace files already in `dir`, by stem.
pub fn scan(dir: &Path) -> io::Result<HashMap<String, String>> {
    let mut files = HashMap::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(name) = name.to_str() {
            if let Some(stem) = parse_file_name(name) {
                files.insert(stem.to_string(), name.to_string());
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_ids_never_reach_the_file_system_raw() {
        for id in ["../../etc/passwd", "a/b", "..", "x\0y", "ro-\n", "", "é"] {
            let stem = file_stem(id);
            assert!(!stem.contains('/') && !stem.contains(".."), "{stem}");
            assert!(stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            let name = file_name(&stem, 0);
            assert_eq!(parse_file_name(&name), Some(stem.as_str()));
        }
        assert_eq!(file_stem("ro-3f2a9c1b7d4e"), "ro-3f2a9c1b7d4e");
        assert_ne!(file_stem("a/b"), file_stem("a.b"));
        assert!(file_stem(&"x".repeat(10_000)).len() < 80);
    }

    #[test]
    fn timestamps_are_utc_compact() {
        assert_eq!(timestamp(0), "19700101T000000Z");
        assert_eq!(timestamp(1_770_912_433_611_477_000), "20260212T160713Z");
        assert_eq!(timestamp(951_782_400_000_000_000), "20000229T000000Z");
        assert_eq!(datetime(1_770_912_433.6), "2026-02-12 16:07:13");
        assert_eq!(
            file_name("ro-abc", 1_770_912_433_000_000_000),
            "rollout_ro-abc_20260212T160713Z.json"
        );
        assert_eq!(
            parse_file_name("rollout_ro_x_y_20260212T160713Z.json"),
            Some("ro_x_y")
        );
        assert_eq!(parse_file_name("rollout_ro-1_2026.json"), None);
        assert_eq!(
            parse_file_name(".rollout_ro-1_20260212T160713Z.json.tmp"),
            None
        );
    }
}
