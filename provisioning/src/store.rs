//! The storage seam under the state directory: [`SlotStore`], its real implementation on
//! `std::fs` ([`FsStore`]) and an in-memory fake that models durability and injects faults
//! ([`MemStore`]).
//!
//! Paths given to a store are relative to the state directory (`slots/a/bundle`,
//! `state.json`); the empty path is the state directory itself.
//!
//! Durability model (what [`MemStore`] simulates and the install relies on, as POSIX
//! file systems behave with `fsync`):
//! - file data is durable only after [`SlotStore::fsync_file`];
//! - a directory entry (created, renamed, removed file or directory) is durable only after
//!   [`SlotStore::fsync_dir`] of the directory that holds it;
//! - [`SlotStore::rename`] is atomic: after a crash the destination names either the old
//!   or the new file, never a mix.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// File-system operations the installer and the boot selection use. Mutating operations
/// take `&mut self`, so a fake can count them and fail or "crash" at the k-th one.
pub trait SlotStore {
    /// Creates (or truncates) the file `path`, empty.
    ///
    /// # Errors
    /// The OS error.
    fn create(&mut self, path: &Path) -> io::Result<()>;
    /// Appends `data` to the file `path`, creating it if it does not exist.
    ///
    /// # Errors
    /// The OS error (e.g. `StorageFull`).
    fn append(&mut self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Makes the file's data durable (`fsync`).
    ///
    /// # Errors
    /// The OS error; the caller must treat it as fatal and never retry.
    fn fsync_file(&mut self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries durable (`fsync` on the directory).
    ///
    /// # Errors
    /// The OS error; fatal, never retried.
    fn fsync_dir(&mut self, dir: &Path) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    ///
    /// # Errors
    /// The OS error.
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`; a missing file is not an error.
    ///
    /// # Errors
    /// The OS error.
    fn remove_file(&mut self, path: &Path) -> io::Result<()>;
    /// Removes the directory `path` and everything in it; a missing directory is not an error.
    ///
    /// # Errors
    /// The OS error.
    fn remove_dir_all(&mut self, path: &Path) -> io::Result<()>;
    /// Creates the directory `path` and any missing parents.
    ///
    /// # Errors
    /// The OS error.
    fn create_dir_all(&mut self, path: &Path) -> io::Result<()>;
    /// Reads the whole file `path`.
    ///
    /// # Errors
    /// The OS error (`NotFound` if it does not exist).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens the file `path` for streaming reads.
    ///
    /// # Errors
    /// The OS error (`NotFound` if it does not exist).
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + '_>>;
    /// Reads the last `max_len` bytes of the file `path` (all of it if shorter). The
    /// default reads the whole file and keeps its tail; [`FsStore`] seeks, so only
    /// `max_len` bytes are read however long the file has grown.
    ///
    /// # Errors
    /// The OS error (`NotFound` if it does not exist).
    fn read_tail(&self, path: &Path, max_len: usize) -> io::Result<Vec<u8>> {
        let mut bytes = self.read(path)?;
        bytes.drain(..bytes.len().saturating_sub(max_len));
        Ok(bytes)
    }
    /// Names in the directory `dir`, sorted; an empty list if it does not exist.
    ///
    /// # Errors
    /// The OS error.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Whether `path` exists (file or directory).
    fn exists(&self, path: &Path) -> bool;
    /// The path a relative store path has outside the store (for messages and callers that
    /// need a real path, such as the engine cache directory).
    fn resolve(&self, path: &Path) -> PathBuf;
}

/// [`SlotStore`] on the real file system, rooted at the state directory.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// A store rooted at `root` (the state directory; not created here).
    #[must_use]
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    fn at(&self, path: &Path) -> PathBuf {
        if path.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }
}

fn not_found_ok(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl SlotStore for FsStore {
    fn create(&mut self, path: &Path) -> io::Result<()> {
        File::create(self.at(path)).map(drop)
    }

    fn append(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.at(path))?
            .write_all(data)
    }

    fn fsync_file(&mut self, path: &Path) -> io::Result<()> {
        // fsync applies to the inode: any descriptor flushes every dirty page of the file.
        File::open(self.at(path))?.sync_all()
    }

    fn fsync_dir(&mut self, dir: &Path) -> io::Result<()> {
        File::open(self.at(dir))?.sync_all()
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(self.at(from), self.at(to))
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        not_found_ok(fs::remove_file(self.at(path)))
    }

    fn remove_dir_all(&mut self, path: &Path) -> io::Result<()> {
        not_found_ok(fs::remove_dir_all(self.at(path)))
    }

    fn create_dir_all(&mut self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(self.at(path))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(self.at(path))
    }

    fn read_tail(&self, path: &Path, max_len: usize) -> io::Result<Vec<u8>> {
        let mut file = File::open(self.at(path))?;
        let len = file.metadata()?.len();
        let skip = len.saturating_sub(max_len as u64);
        file.seek(SeekFrom::Start(skip))?;
        let mut bytes = Vec::with_capacity(usize::try_from(len - skip).unwrap_or(max_len));
        file.take(max_len as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + '_>> {
        let file = File::open(self.at(path))?;
        Ok(Box::new(BufReader::with_capacity(
            outpost_models::format::CHUNK_LEN,
            file,
        )))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        match fs::read_dir(self.at(dir)) {
            Ok(entries) => {
                for entry in entries {
                    names.push(entry?.file_name().to_string_lossy().into_owned());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        fs::symlink_metadata(self.at(path)).is_ok()
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        self.at(path)
    }
}

/// A fault [`MemStore`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The k-th mutating operation takes effect, then the "machine" stops: every later
    /// operation fails, and [`MemStore::reboot`] keeps only durable state.
    CrashAfter(usize),
    /// The k-th mutating operation fails with an I/O error (EIO) and has no effect.
    EioAt(usize),
    /// From the k-th mutating operation on, every operation that needs space (create,
    /// append, create a directory) fails with `StorageFull` (ENOSPC).
    FullFrom(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Dir,
    File(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
}

/// In-memory [`SlotStore`] that models durability (see the module docs) and injects
/// [`Fault`]s at the k-th mutating operation (create, append, fsync, rename, remove,
/// create directory), as embassy-boot's `mem_flash` and LittleFS's power-loss tests do.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    current: BTreeMap<PathBuf, Entry>,
    durable: BTreeMap<PathBuf, Entry>,
    ops: usize,
    fault: Option<Fault>,
    crashed: bool,
    trace: Vec<String>,
}

fn crashed_err() -> io::Error {
    io::Error::other("simulated crash: the machine is off")
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_owned).unwrap_or_default()
}

impl MemStore {
    /// An empty store (an empty, durable state directory).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms a fault, counted from the next mutating operation (the counter restarts at 0).
    pub fn inject(&mut self, fault: Fault) {
        self.fault = Some(fault);
        self.ops = 0;
        self.trace.clear();
    }

    /// Number of mutating operations since the last [`MemStore::inject`] (or creation).
    #[must_use]
    pub fn ops(&self) -> usize {
        self.ops
    }

    /// The mutating operations since the last [`MemStore::inject`], e.g. `fsync_dir slots`.
    #[must_use]
    pub fn trace(&self) -> &[String] {
        &self.trace
    }

    /// Whether a [`Fault::CrashAfter`] has fired.
    #[must_use]
    pub fn is_crashed(&self) -> bool {
        self.crashed
    }

    /// Power cycle: a new store holding only what was durable (fsynced file data reachable
    /// through fsynced directory entries). Faults are disarmed.
    #[must_use]
    pub fn reboot(&self) -> Self {
        let mut current = BTreeMap::new();
        for (path, entry) in &self.durable {
            let reachable = path
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .all(|a| self.durable.get(a) == Some(&Entry::Dir));
            if reachable {
                current.insert(path.clone(), *entry);
            }
        }
        let mut inodes = BTreeMap::new();
        for entry in current.values() {
            if let Entry::File(ino) = entry {
                let synced = self.inodes[ino].synced.clone();
                inodes.insert(
                    *ino,
                    Inode {
                        data: synced.clone(),
                        synced,
                    },
                );
            }
        }
        Self {
            inodes,
            next_inode: self.next_inode,
            durable: current.clone(),
            current,
            ops: 0,
            fault: None,
            crashed: false,
            trace: Vec::new(),
        }
    }

    /// Replaces a file's content durably, bypassing fault injection and counting (for tests
    /// that corrupt a slot, as a bad flash sector would).
    pub fn corrupt(&mut self, path: &Path, data: Vec<u8>) {
        if let Some(Entry::File(ino)) = self.current.get(path) {
            let inode = self.inodes.get_mut(ino).expect("inode");
            inode.data.clone_from(&data);
            inode.synced = data;
        }
    }

    /// Counts a mutating operation and applies an armed EIO / ENOSPC fault.
    fn begin(&mut self, what: &str, path: &Path, needs_space: bool) -> io::Result<()> {
        if self.crashed {
            return Err(crashed_err());
        }
        self.ops += 1;
        self.trace.push(format!("{what} {}", path.display()));
        match self.fault {
            Some(Fault::EioAt(k)) if k == self.ops => Err(io::Error::other(format!(
                "injected EIO (input/output error) at operation {k}"
            ))),
            Some(Fault::FullFrom(k)) if needs_space && self.ops >= k => Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected ENOSPC (no space left on device)",
            )),
            _ => Ok(()),
        }
    }

    /// Applies an armed crash after the operation took effect.
    fn end<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if self.fault == Some(Fault::CrashAfter(self.ops)) {
            self.crashed = true;
        }
        result
    }

    fn check_parent(&self, path: &Path) -> io::Result<()> {
        let p = parent(path);
        if p.as_os_str().is_empty() || self.current.get(&p) == Some(&Entry::Dir) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such directory", p.display()),
            ))
        }
    }

    fn file(&self, path: &Path) -> io::Result<&Inode> {
        if self.crashed {
            return Err(crashed_err());
        }
        match self.current.get(path) {
            Some(Entry::File(ino)) => Ok(&self.inodes[ino]),
            Some(Entry::Dir) => Err(io::Error::other(format!(
                "{}: is a directory",
                path.display()
            ))),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such file", path.display()),
            )),
        }
    }

    fn new_file(&mut self, path: &Path) -> io::Result<u64> {
        self.check_parent(path)?;
        if self.current.get(path) == Some(&Entry::Dir) {
            return Err(io::Error::other(format!(
                "{}: is a directory",
                path.display()
            )));
        }
        self.next_inode += 1;
        let ino = self.next_inode;
        self.inodes.insert(ino, Inode::default());
        self.current.insert(path.to_owned(), Entry::File(ino));
        Ok(ino)
    }

    fn do_append(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        let ino = match self.current.get(path) {
            Some(Entry::File(ino)) => *ino,
            Some(Entry::Dir) => {
                return Err(io::Error::other(format!(
                    "{}: is a directory",
                    path.display()
                )))
            }
            None => self.new_file(path)?,
        };
        self.inodes
            .get_mut(&ino)
            .expect("inode")
            .data
            .extend_from_slice(data);
        Ok(())
    }

    fn do_fsync_dir(&mut self, dir: &Path) -> io::Result<()> {
        if !dir.as_os_str().is_empty() && self.current.get(dir) != Some(&Entry::Dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such directory", dir.display()),
            ));
        }
        self.durable.retain(|p, _| parent(p) != dir);
        for (p, e) in &self.current {
            if parent(p) == dir {
                self.durable.insert(p.clone(), *e);
            }
        }
        Ok(())
    }

    fn do_rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.check_parent(to)?;
        match self.current.get(from).copied() {
            Some(Entry::File(ino)) => {
                if self.current.get(to) == Some(&Entry::Dir) {
                    return Err(io::Error::other(format!(
                        "{}: is a directory",
                        to.display()
                    )));
                }
                self.current.remove(from);
                self.current.insert(to.to_owned(), Entry::File(ino));
                Ok(())
            }
            Some(Entry::Dir) => Err(io::Error::other("renaming directories is not modelled")),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such file", from.display()),
            )),
        }
    }
}

impl SlotStore for MemStore {
    fn create(&mut self, path: &Path) -> io::Result<()> {
        self.begin("create", path, true)?;
        let r = self.new_file(path).map(drop);
        self.end(r)
    }

    fn append(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.begin("append", path, true)?;
        let r = self.do_append(path, data);
        self.end(r)
    }

    fn fsync_file(&mut self, path: &Path) -> io::Result<()> {
        self.begin("fsync_file", path, false)?;
        let r = match self.current.get(path) {
            Some(Entry::File(ino)) => {
                let inode = self.inodes.get_mut(ino).expect("inode");
                inode.synced.clone_from(&inode.data);
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such file", path.display()),
            )),
        };
        self.end(r)
    }

    fn fsync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.begin("fsync_dir", dir, false)?;
        let r = self.do_fsync_dir(dir);
        self.end(r)
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.begin("rename", from, false)?;
        let r = self.do_rename(from, to);
        self.end(r)
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        self.begin("remove_file", path, false)?;
        let r = match self.current.get(path) {
            Some(Entry::Dir) => Err(io::Error::other(format!(
                "{}: is a directory",
                path.display()
            ))),
            _ => {
                self.current.remove(path);
                Ok(())
            }
        };
        self.end(r)
    }

    fn remove_dir_all(&mut self, path: &Path) -> io::Result<()> {
        self.begin("remove_dir_all", path, false)?;
        self.current
            .retain(|p, _| p != path && !p.starts_with(path));
        self.end(Ok(()))
    }

    fn create_dir_all(&mut self, path: &Path) -> io::Result<()> {
        self.begin("create_dir_all", path, true)?;
        let mut r = Ok(());
        let mut dirs: Vec<&Path> = path
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .collect();
        dirs.reverse();
        for d in dirs {
            match self.current.get(d) {
                Some(Entry::Dir) => {}
                Some(Entry::File(_)) => {
                    r = Err(io::Error::other(format!("{}: is a file", d.display())));
                    break;
                }
                None => {
                    self.current.insert(d.to_owned(), Entry::Dir);
                }
            }
        }
        self.end(r)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(self.file(path)?.data.clone())
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(Cursor::new(self.file(path)?.data.as_slice())))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        if self.crashed {
            return Err(crashed_err());
        }
        Ok(self
            .current
            .keys()
            .filter(|p| parent(p) == dir)
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn exists(&self, path: &Path) -> bool {
        !self.crashed && (path.as_os_str().is_empty() || self.current.contains_key(path))
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        Path::new("<mem>").join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_data_and_entries_are_lost_on_reboot() {
        let mut s = MemStore::new();
        s.create_dir_all(Path::new("d")).unwrap();
        s.fsync_dir(Path::new("")).unwrap();
        s.append(Path::new("d/f"), b"abc").unwrap();
        s.fsync_file(Path::new("d/f")).unwrap();
        // Entry not durable yet: gone after reboot.
        assert!(!s.reboot().exists(Path::new("d/f")));
        s.fsync_dir(Path::new("d")).unwrap();
        s.append(Path::new("d/f"), b"def").unwrap();
        // Appended data not fsynced: only the first three bytes survive.
        assert_eq!(s.reboot().read(Path::new("d/f")).unwrap(), b"abc");
    }

    #[test]
    fn rename_is_durable_only_after_dir_fsync() {
        let mut s = MemStore::new();
        for (name, data) in [("x", b"old"), ("x.tmp", b"new")] {
            s.append(Path::new(name), data).unwrap();
            s.fsync_file(Path::new(name)).unwrap();
        }
        s.fsync_dir(Path::new("")).unwrap();
        s.rename(Path::new("x.tmp"), Path::new("x")).unwrap();
        assert_eq!(s.read(Path::new("x")).unwrap(), b"new");
        assert_eq!(s.reboot().read(Path::new("x")).unwrap(), b"old");
        s.fsync_dir(Path::new("")).unwrap();
        let r = s.reboot();
        assert_eq!(r.read(Path::new("x")).unwrap(), b"new");
        assert!(!r.exists(Path::new("x.tmp")));
    }

    #[test]
    fn faults_fire_at_the_kth_operation() {
        let mut s = MemStore::new();
        s.inject(Fault::EioAt(2));
        s.create(Path::new("a")).unwrap();
        assert!(s.append(Path::new("a"), b"1").is_err());
        s.append(Path::new("a"), b"2").unwrap();
        assert_eq!(s.read(Path::new("a")).unwrap(), b"2");

        s.inject(Fault::CrashAfter(1));
        s.append(Path::new("a"), b"3").unwrap();
        assert!(s.is_crashed());
        assert!(s.fsync_file(Path::new("a")).is_err());
        assert!(s.read(Path::new("a")).is_err());

        let mut s = MemStore::new();
        s.inject(Fault::FullFrom(2));
        s.create(Path::new("a")).unwrap();
        let e = s.append(Path::new("a"), b"1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        s.remove_file(Path::new("a")).unwrap();
    }
}
