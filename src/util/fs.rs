//! Files replaced whole: a reader sees the old file or the new one, never a
//! part.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file written as a stream under a hidden temporary name in its folder
/// (`.<name>.tmp`), flushed to disk and renamed over `dir/name` by
/// [`AtomicFile::commit`]. Dropped without a commit (an error, an
/// interruption), it removes the temporary file and leaves the target as it
/// was: readers see the old file or the whole new one, never a part.
pub struct AtomicFile {
    tmp: PathBuf,
    target: PathBuf,
    file: Option<BufWriter<File>>,
    committed: bool,
}

impl AtomicFile {
    /// Starts writing `dir/.name.tmp`, to replace `dir/name` on commit.
    pub fn create(dir: &Path, name: &str) -> io::Result<AtomicFile> {
        let tmp = dir.join(format!(".{name}.tmp"));
        let file = File::create(&tmp)?;
        Ok(AtomicFile {
            target: dir.join(name),
            file: Some(BufWriter::with_capacity(256 << 10, file)),
            tmp,
            committed: false,
        })
    }

    /// The file this will replace.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes, syncs and renames over the target; returns its path.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        let Some(buffered) = self.file.take() else {
            return Err(io::Error::other("atomic file already closed"));
        };
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        fs::rename(&self.tmp, &self.target)?;
        self.committed = true;
        Ok(self.target.clone())
    }

    fn writer(&mut self) -> io::Result<&mut BufWriter<File>> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("atomic file already closed"))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer()?.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer()?.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer()?.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            self.file = None;
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `dir/name` atomically (see [`AtomicFile`]).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    let mut f = AtomicFile::create(dir, name)?;
    f.write_all(bytes)?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "f.json", b"first").unwrap();
        write_atomic(dir.path(), "f.json", b"second").unwrap();
        assert_eq!(fs::read(dir.path().join("f.json")).unwrap(), b"second");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn streamed_atomic_file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "d.jsonl", b"old\n").unwrap();
        let mut f = AtomicFile::create(dir.path(), "d.jsonl").unwrap();
        f.write_all(b"new 1\n").unwrap();
        f.write_all(b"new 2\n").unwrap();
        assert_eq!(fs::read(dir.path().join("d.jsonl")).unwrap(), b"old\n");
        drop(f);
        // Abandoned: the old file stays and no temporary file is left.
        assert_eq!(fs::read(dir.path().join("d.jsonl")).unwrap(), b"old\n");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let mut f = AtomicFile::create(dir.path(), "d.jsonl").unwrap();
        f.write_all(b"new\n").unwrap();
        assert_eq!(f.target(), dir.path().join("d.jsonl"));
        f.commit().unwrap();
        assert_eq!(fs::read(dir.path().join("d.jsonl")).unwrap(), b"new\n");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
