//! Segmented, checksummed write-ahead log.
//!
//! A log is a folder of segment files `<20-digit id>.wal`. Each segment starts
//! with an 8-byte magic and holds frames: `u32` payload length, `u32` CRC-32 of
//! the payload (both little endian), then the payload. A batch of frames is
//! written with one `write` and made durable with one `fdatasync` (group
//! commit). On open, every segment is scanned; a frame whose length or checksum
//! does not hold ends the segment, and in the last segment the torn tail is cut
//! off so that later appends never follow garbage.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"OCLAGLW1";
const FRAME_HEADER: usize = 8;
/// Frames larger than this are treated as corruption (a length field that
/// survived a torn write can claim anything).
pub const MAX_PAYLOAD: usize = 512 << 20;

/// Where a record lives: segment id and byte offset of its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// The segment's id (its file's number).
    pub segment: u64,
    /// The frame's byte offset in the segment.
    pub offset: u64,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}

/// What opening a log found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Segment files found.
    pub segments: usize,
    /// Whole records found.
    pub records: u64,
    /// Bytes cut from the end of the last segment (a torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Segments other than the last that ended in a bad frame.
    pub damaged_segments: usize,
}

/// The append side of the log. Only one exists per folder.
pub struct Wal {
    dir: PathBuf,
    active: File,
    active_id: u64,
    active_len: u64,
    segment_bytes: u64,
    /// `fdatasync` each batch (durable); off only for benchmarks and scratch use.
    sync: bool,
    buf: Vec<u8>,
    /// A failed append left bytes past `active_len` that could not be cut
    /// yet; nothing is appended until they are (a record must never follow
    /// a partial frame, or recovery would stop there).
    torn_tail: bool,
    /// The active segment was created and not yet synced, nor its directory
    /// entry: its first batch does both.
    fresh: bool,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name
            .strip_suffix(".wal")
            .and_then(|s| s.parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads one frame at `offset`; `Ok(None)` when the bytes there are not a
/// whole, intact frame (end of segment, torn write or corruption).
fn read_frame(file: &File, offset: u64, file_len: u64) -> io::Result<Option<Vec<u8>>> {
    if offset + FRAME_HEADER as u64 > file_len {
        return Ok(None);
    }
    let mut header = [0u8; FRAME_HEADER];
    file.read_exact_at(&mut header, offset)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_PAYLOAD || offset + (FRAME_HEADER + len) as u64 > file_len {
        return Ok(None);
    }
    let mut payload = vec![0u8; len];
    file.read_exact_at(&mut payload, offset + FRAME_HEADER as u64)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(None);
    }
    Ok(Some(payload))
}

/// Where the intact frames of a segment end.
struct SegmentEnd {
    file_len: u64,
    magic_ok: bool,
    /// Offset just past the last intact frame.
    offset: u64,
    records: u64,
}

/// Calls `on_record` for each intact frame of segment `id` from its start,
/// stopping at the first frame that is not whole and intact.
fn read_segment(
    file: &File,
    id: u64,
    on_record: &mut impl FnMut(Pos, Vec<u8>),
) -> io::Result<SegmentEnd> {
    let file_len = file.metadata()?.len();
    let mut magic = [0u8; 8];
    let magic_ok = file_len >= 8 && {
        file.read_exact_at(&mut magic, 0)?;
        &magic == MAGIC
    };
    let mut offset = MAGIC.len() as u64;
    let mut records = 0;
    if magic_ok {
        while let Some(payload) = read_frame(file, offset, file_len)? {
            let next = offset + (FRAME_HEADER + payload.len()) as u64;
            on_record(
                Pos {
                    segment: id,
                    offset,
                },
                payload,
            );
            records += 1;
            offset = next;
        }
    }
    Ok(SegmentEnd {
        file_len,
        magic_ok,
        offset,
        records,
    })
}

/// Reads every intact record of the log in `dir`, in log order, without
/// writing anything: safe while `oclagl serve` appends to the same log. As on
/// open, a frame that is torn or fails its checksum ends its segment; here
/// nothing is cut off, and `truncated_bytes` counts what the last segment
/// holds past its last intact frame (a write in progress, or a torn tail the
/// next open will cut).
pub fn scan(dir: &Path, mut on_record: impl FnMut(Pos, Vec<u8>)) -> io::Result<RecoveryStats> {
    let ids = list_segments(dir)?;
    let mut stats = RecoveryStats {
        segments: ids.len(),
        ..Default::default()
    };
    for (i, &id) in ids.iter().enumerate() {
        let file = File::open(segment_path(dir, id))?;
        let end = read_segment(&file, id, &mut on_record)?;
        stats.records += end.records;
        if end.offset < end.file_len || !end.magic_ok {
            if i + 1 == ids.len() {
                stats.truncated_bytes = end.file_len.saturating_sub(end.offset);
            } else {
                stats.damaged_segments += 1;
            }
        }
    }
    Ok(stats)
}

/// Creates a segment with its header, unsynced: nothing in it is acknowledged
/// before its first batch syncs the file and the directory (a crash before
/// then leaves no segment, or one without a header, and `open` handles both).
/// A command's store so starts without waiting on the disk.
fn create_segment(dir: &Path, id: u64) -> io::Result<File> {
    let path = segment_path(dir, id);
    let mut file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .append(true)
        .open(&path)?;
    file.write_all(MAGIC)?;
    Ok(file)
}

impl Wal {
    /// Opens (or creates) the log in `dir`, calling `on_record` for every
    /// intact record in log order, and cuts a torn tail off the last segment.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        sync: bool,
        mut on_record: impl FnMut(Pos, Vec<u8>),
    ) -> io::Result<(Wal, RecoveryStats)> {
        fs::create_dir_all(dir)?;
        let ids = list_segments(dir)?;
        let mut stats = RecoveryStats {
            segments: ids.len(),
            ..Default::default()
        };
        let mut last: Option<(u64, u64)> = None;
        for (i, &id) in ids.iter().enumerate() {
            let is_last = i + 1 == ids.len();
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(segment_path(dir, id))?;
            let SegmentEnd {
                file_len,
                magic_ok,
                offset,
                records,
            } = read_segment(&file, id, &mut on_record)?;
            stats.records += records;
            if offset < file_len || !magic_ok {
                if is_last {
                    stats.truncated_bytes = file_len.saturating_sub(offset);
                    if !magic_ok {
                        file.set_len(0)?;
                        let mut f = &file;
                        f.write_all(MAGIC)?;
                    } else {
                        file.set_len(offset)?;
                    }
                    file.sync_all()?;
                } else {
                    stats.damaged_segments += 1;
                }
            }
            if is_last {
                last = Some((id, offset));
            }
        }
        let (active_id, active_len, active, fresh) = match last {
            Some((id, len)) => {
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(segment_path(dir, id))?;
                (id, len, file, false)
            }
            None => (1, MAGIC.len() as u64, create_segment(dir, 1)?, true),
        };
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                active,
                active_id,
                active_len,
                segment_bytes,
                sync,
                buf: Vec::new(),
                torn_tail: false,
                fresh,
            },
            stats,
        ))
    }

    /// Appends one frame per payload, each built by `encode` into the buffer,
    /// and makes them durable with a single `fdatasync`. On error nothing of the
    /// batch is kept.
    pub fn append_batch<T>(
        &mut self,
        items: &[T],
        mut encode: impl FnMut(&T, &mut Vec<u8>),
    ) -> io::Result<Vec<Pos>> {
        if self.torn_tail {
            self.active.set_len(self.active_len)?;
            self.torn_tail = false;
        }
        if self.active_len >= self.segment_bytes {
            self.roll()?;
        }
        self.buf.clear();
        let mut positions = Vec::with_capacity(items.len());
        for item in items {
            let start = self.buf.len();
            positions.push(Pos {
                segment: self.active_id,
                offset: self.active_len + start as u64,
            });
            self.buf.extend_from_slice(&[0u8; FRAME_HEADER]);
            encode(item, &mut self.buf);
            let payload = &self.buf[start + FRAME_HEADER..];
            if payload.len() > MAX_PAYLOAD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "record larger than the log's frame limit",
                ));
            }
            let len = (payload.len() as u32).to_le_bytes();
            let crc = crc32fast::hash(payload).to_le_bytes();
            self.buf[start..start + 4].copy_from_slice(&len);
            self.buf[start + 4..start + 8].copy_from_slice(&crc);
        }
        let written =
            self.active
                .write_all(&self.buf)
                .and_then(|()| match (self.sync, self.fresh) {
                    (false, _) => Ok(()),
                    (true, false) => self.active.sync_data(),
                    (true, true) => self.active.sync_all().and_then(|()| sync_dir(&self.dir)),
                });
        if let Err(e) = written {
            // Cut whatever part of the batch reached the file, so that a later
            // append does not follow a partial frame.
            self.torn_tail = self.active.set_len(self.active_len).is_err();
            return Err(e);
        }
        self.active_len += self.buf.len() as u64;
        self.fresh = false;
        if self.buf.capacity() > 64 << 20 {
            self.buf = Vec::new();
        }
        Ok(positions)
    }

    fn roll(&mut self) -> io::Result<()> {
        self.active.sync_all()?;
        let id = self.active_id + 1;
        self.active = create_segment(&self.dir, id)?;
        self.fresh = true;
        self.active_id = id;
        self.active_len = MAGIC.len() as u64;
        Ok(())
    }

    /// The position the next record will get.
    pub fn end(&self) -> Pos {
        Pos {
            segment: self.active_id,
            offset: self.active_len,
        }
    }
}

/// Random access to records by position; each reader keeps its own handles.
pub struct WalReader {
    dir: PathBuf,
    files: HashMap<u64, File>,
    /// Lengths of sealed segments (they never change once sealed).
    sealed_len: HashMap<u64, u64>,
}

impl WalReader {
    /// A reader of the log in `dir`; it opens segments as they are read.
    pub fn new(dir: &Path) -> WalReader {
        WalReader {
            dir: dir.to_path_buf(),
            files: HashMap::new(),
            sealed_len: HashMap::new(),
        }
    }

    fn file(&mut self, segment: u64) -> io::Result<&mut File> {
        Ok(match self.files.entry(segment) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(File::open(segment_path(&self.dir, segment))?)
            }
        })
    }

    /// The first record at or after `pos` and before `end` (moving on to the
    /// next segment when one is used up), with the position just after it.
    /// `end` must be a committed position ([`Wal::end`] after a commit), so
    /// that every frame before it is whole.
    pub fn next(&mut self, pos: Pos, end: Pos) -> io::Result<Option<(Pos, Vec<u8>, Pos)>> {
        let mut pos = Pos {
            segment: pos.segment,
            offset: pos.offset.max(MAGIC.len() as u64),
        };
        while pos < end {
            let found = match self.file(pos.segment) {
                Ok(file) => {
                    let len = file.metadata()?.len();
                    read_frame(file, pos.offset, len)?
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            if let Some(payload) = found {
                let next = Pos {
                    segment: pos.segment,
                    offset: pos.offset + (FRAME_HEADER + payload.len()) as u64,
                };
                return Ok(Some((pos, payload, next)));
            }
            // This segment is used up: go on with the next one.
            self.files.remove(&pos.segment);
            match list_segments(&self.dir)?
                .into_iter()
                .find(|&id| id > pos.segment)
            {
                Some(id) => {
                    pos = Pos {
                        segment: id,
                        offset: MAGIC.len() as u64,
                    }
                }
                None => break,
            }
        }
        Ok(None)
    }

    /// Bytes of log between `from` and `to` (frames included, segment
    /// headers not), for `from <= to`.
    pub fn bytes_between(&mut self, from: Pos, to: Pos) -> io::Result<u64> {
        if from >= to {
            return Ok(0);
        }
        if from.segment == to.segment {
            return Ok(to.offset.saturating_sub(from.offset));
        }
        let mut total = to.offset.saturating_sub(MAGIC.len() as u64);
        for id in list_segments(&self.dir)? {
            if id < from.segment || id >= to.segment {
                continue;
            }
            let len = match self.sealed_len.get(&id) {
                Some(&len) => len,
                None => {
                    let len = match fs::metadata(segment_path(&self.dir, id)) {
                        Ok(m) => m.len(),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    self.sealed_len.insert(id, len);
                    len
                }
            };
            let start = if id == from.segment {
                from.offset.max(MAGIC.len() as u64)
            } else {
                MAGIC.len() as u64
            };
            total += len.saturating_sub(start);
        }
        Ok(total)
    }

    /// The payload of the record at `pos`.
    pub fn read(&mut self, pos: Pos) -> io::Result<Vec<u8>> {
        let file = self.file(pos.segment)?;
        let len = file.metadata()?.len();
        read_frame(file, pos.offset, len)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no intact record at {pos}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (Wal, Vec<(Pos, Vec<u8>)>, RecoveryStats) {
        let mut seen = Vec::new();
        let (wal, stats) = Wal::open(dir, 1 << 20, true, |p, b| seen.push((p, b))).unwrap();
        (wal, seen, stats)
    }

    fn append(wal: &mut Wal, items: &[&[u8]]) -> Vec<Pos> {
        wal.append_batch(items, |b, out| out.extend_from_slice(b))
            .unwrap()
    }

    #[test]
    fn records_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, seen, _) = open(dir.path());
        assert!(seen.is_empty());
        let p1 = append(&mut wal, &[b"one", b"two"]);
        let p2 = append(&mut wal, &[b"three"]);
        drop(wal);
        let (_, seen, stats) = open(dir.path());
        let got: Vec<_> = seen.iter().map(|(_, b)| b.as_slice()).collect();
        assert_eq!(got, vec![&b"one"[..], b"two", b"three"]);
        assert_eq!(seen[2].0, p2[0]);
        assert_eq!(seen[1].0, p1[1]);
        assert_eq!(stats.truncated_bytes, 0);
        let mut reader = WalReader::new(dir.path());
        assert_eq!(reader.read(p1[1]).unwrap(), b"two");
    }

    /// A new segment is synced by its first batch, so a crash before that
    /// may leave it without its header, or leave no file at all.
    #[test]
    fn a_new_segment_lost_before_its_first_batch_is_made_again() {
        for lose_file in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (wal, _, _) = open(dir.path());
            drop(wal);
            let path = segment_path(dir.path(), 1);
            match lose_file {
                true => fs::remove_file(&path).unwrap(),
                false => OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(0)
                    .unwrap(),
            }
            let (mut wal, seen, _) = open(dir.path());
            assert!(seen.is_empty());
            append(&mut wal, &[b"after the crash"]);
            drop(wal);
            let (_, seen, stats) = open(dir.path());
            assert_eq!(seen.len(), 1, "lose_file={lose_file}");
            assert_eq!(seen[0].1, b"after the crash");
            assert_eq!(stats.truncated_bytes, 0);
        }
    }

    #[test]
    fn torn_tail_is_dropped_not_half_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(dir.path());
        append(&mut wal, &[b"kept"]);
        let torn = append(&mut wal, &[b"torn record payload"]);
        drop(wal);
        let path = segment_path(dir.path(), torn[0].segment);
        let len = fs::metadata(&path).unwrap().len();
        // Cut the last frame in the middle of its payload.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let (mut wal, seen, stats) = open(dir.path());
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].1, b"kept");
        assert_eq!(stats.truncated_bytes, (FRAME_HEADER + 19 - 5) as u64);
        // New appends land where the torn frame was and read back intact.
        let p = append(&mut wal, &[b"after"]);
        assert_eq!(p[0], torn[0]);
        drop(wal);
        let (_, seen, _) = open(dir.path());
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].1, b"after");
    }

    #[test]
    fn corrupt_checksum_ends_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(dir.path());
        append(&mut wal, &[b"good"]);
        let bad = append(&mut wal, &[b"flipped"]);
        append(&mut wal, &[b"after the bad one"]);
        drop(wal);
        let path = segment_path(dir.path(), bad[0].segment);
        let mut bytes = fs::read(&path).unwrap();
        bytes[bad[0].offset as usize + FRAME_HEADER] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let (_, seen, stats) = open(dir.path());
        assert_eq!(seen.len(), 1);
        assert!(stats.truncated_bytes > 0);
    }

    #[test]
    fn segments_roll_and_replay_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), 64, true, |_, _| {}).unwrap().0;
        for i in 0..10u8 {
            append(&mut wal, &[&[i; 40]]);
        }
        drop(wal);
        assert!(list_segments(dir.path()).unwrap().len() > 3);
        let (_, seen, stats) = open(dir.path());
        assert_eq!(stats.records, 10);
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(seen[9].1, vec![9u8; 40]);
    }

    #[test]
    fn scan_reads_without_cutting_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(dir.path());
        append(&mut wal, &[b"one", b"two"]);
        let torn = append(&mut wal, &[b"being written"]);
        drop(wal);
        let path = segment_path(dir.path(), torn[0].segment);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let mut seen = Vec::new();
        let stats = scan(dir.path(), |p, b| seen.push((p, b))).unwrap();
        let got: Vec<_> = seen.iter().map(|(_, b)| b.as_slice()).collect();
        assert_eq!(got, vec![&b"one"[..], b"two"]);
        assert_eq!(stats.records, 2);
        assert_eq!(stats.truncated_bytes, (FRAME_HEADER + 13 - 3) as u64);
        // Nothing was written: the torn bytes are still there for `open`.
        assert_eq!(fs::metadata(&path).unwrap().len(), len - 3);
        assert!(scan(&dir.path().join("missing"), |_, _| {}).is_err());
    }

    #[test]
    fn garbage_length_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _, _) = open(dir.path());
        append(&mut wal, &[b"x"]);
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&u32::MAX.to_le_bytes()).unwrap();
        f.write_all(&[1, 2, 3, 4, 5, 6]).unwrap();
        drop(f);
        let (_, seen, stats) = open(dir.path());
        assert_eq!(seen.len(), 1);
        assert_eq!(stats.truncated_bytes, 10);
    }

    #[test]
    fn reader_walks_records_across_segments_up_to_the_end_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 40, true, |_, _| {}).unwrap();
        let mut all = Vec::new();
        for i in 0..6u8 {
            all.extend(append(&mut wal, &[&[i; 20][..]]));
        }
        let end = wal.end();
        assert!(end.segment >= 2, "small segments roll: {end}");
        let mut reader = WalReader::new(dir.path());
        let (mut pos, mut seen) = (Pos::default(), Vec::new());
        while let Some((at, payload, next)) = reader.next(pos, end).unwrap() {
            seen.push((at, payload[0]));
            pos = next;
        }
        let want: Vec<_> = all.iter().copied().zip(0..6u8).collect();
        assert_eq!(seen, want);
        assert_eq!(pos, end);
        // Stops at the end it is given, even where more is written.
        assert_eq!(reader.next(all[0], all[2]).unwrap().unwrap().0, all[0]);
        assert!(reader.next(all[2], all[2]).unwrap().is_none());
        assert_eq!(reader.bytes_between(Pos::default(), end).unwrap(), 6 * 28);
        assert_eq!(reader.bytes_between(all[1], all[4]).unwrap(), 3 * 28);
        assert_eq!(reader.bytes_between(end, all[0]).unwrap(), 0);
    }
}
