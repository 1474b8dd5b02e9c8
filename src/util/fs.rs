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

/// The name that means standard output where a result file is named.
pub const STDOUT: &str = "-";

/// Where a result goes.
enum Sink {
    /// `-`: standard output.
    Stdout(BufWriter<io::Stdout>),
    /// A regular file, new or replaced whole on commit.
    Replace(AtomicFile),
    /// A device, FIFO or socket: written as it comes.
    Direct(BufWriter<File>),
}

/// A result file the user named (`--out`), written so that nothing is
/// replaced that should not be: `-` is standard output; a symbolic link is
/// followed and its target replaced atomically (the link stays a link); a
/// device, FIFO or other non-regular file is opened and written directly,
/// without a temporary file or a rename; a regular or new file is replaced
/// whole on [`ResultFile::commit`] (see [`AtomicFile`]). Missing parent
/// folders are not created here.
pub struct ResultFile {
    named: PathBuf,
    sink: Sink,
}

/// How many symbolic links are followed before giving up (Linux's limit).
const MAX_LINKS: usize = 40;

/// `path` with every symbolic link along its last component followed, also
/// to a target that does not exist yet.
fn follow_links(path: &Path) -> io::Result<PathBuf> {
    let mut at = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&at)?;
                at = at.parent().unwrap_or(Path::new("")).join(target);
            }
            _ => return Ok(at),
        }
    }
    Err(io::Error::other(format!(
        "more than {MAX_LINKS} symbolic links to follow"
    )))
}

impl ResultFile {
    /// Starts writing the result named `path` (see [`ResultFile`]).
    pub fn create(path: &Path) -> io::Result<ResultFile> {
        let named = path.to_path_buf();
        if path.as_os_str() == STDOUT {
            let sink = Sink::Stdout(BufWriter::with_capacity(256 << 10, io::stdout()));
            return Ok(ResultFile { named, sink });
        }
        let target = follow_links(path)?;
        let sink = match fs::metadata(&target) {
            Ok(m) if m.is_dir() => {
                return Err(io::Error::other(format!(
                    "{} is a folder, not a file",
                    target.display()
                )))
            }
            Ok(m) if !m.is_file() => {
                let file = fs::OpenOptions::new().write(true).open(&target)?;
                Sink::Direct(BufWriter::with_capacity(256 << 10, file))
            }
            _ => {
                let name = target
                    .file_name()
                    .ok_or_else(|| io::Error::other("names no file"))?
                    .to_string_lossy()
                    .into_owned();
                let dir = target.parent().unwrap_or(Path::new(""));
                Sink::Replace(AtomicFile::create(dir, &name)?)
            }
        };
        Ok(ResultFile { named, sink })
    }

    /// The path as the user named it (`-` for standard output).
    pub fn named(&self) -> &Path {
        &self.named
    }

    /// Is this standard output?
    pub fn is_stdout(&self) -> bool {
        matches!(self.sink, Sink::Stdout(_))
    }

    /// Finishes the result: flushes standard output or a device, replaces a
    /// regular file; returns the path as named.
    pub fn commit(self) -> io::Result<PathBuf> {
        match self.sink {
            Sink::Stdout(mut w) => w.flush()?,
            Sink::Direct(mut w) => w.flush()?,
            Sink::Replace(f) => {
                f.commit()?;
            }
        }
        Ok(self.named)
    }

    fn writer(&mut self) -> &mut dyn Write {
        match &mut self.sink {
            Sink::Stdout(w) => w,
            Sink::Direct(w) => w,
            Sink::Replace(f) => f,
        }
    }
}

impl Write for ResultFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_file_replaces_a_links_target_and_keeps_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.jsonl");
        let link = dir.path().join("link.jsonl");
        fs::write(&target, b"old\n").unwrap();
        std::os::unix::fs::symlink("real.jsonl", &link).unwrap();
        let mut f = ResultFile::create(&link).unwrap();
        f.write_all(b"new\n").unwrap();
        assert_eq!(f.commit().unwrap(), link);
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&target).unwrap(), b"new\n");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn result_file_through_a_dangling_link_creates_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(dir.path().join("new.jsonl"), &link).unwrap();
        let mut f = ResultFile::create(&link).unwrap();
        f.write_all(b"row\n").unwrap();
        f.commit().unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(dir.path().join("new.jsonl")).unwrap(), b"row\n");
    }

    /// On a copy of `/dev/null` made with `mknod` (as root; skipped else),
    /// never `/dev/null` itself, which a regression would replace.
    #[test]
    fn result_file_writes_a_device_in_place() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let null = dir.path().join("null");
        let made = std::process::Command::new("mknod")
            .arg(&null)
            .args(["c", "1", "3"])
            .stderr(std::process::Stdio::null())
            .status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mknod needs root");
            return;
        }
        let mut f = ResultFile::create(&null).unwrap();
        f.write_all(b"row\n").unwrap();
        f.commit().unwrap();
        assert!(fs::symlink_metadata(&null)
            .unwrap()
            .file_type()
            .is_char_device());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn result_file_refuses_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ResultFile::create(dir.path()).is_err());
    }

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
