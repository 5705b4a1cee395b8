//! The disk cache of compiled components: one file per (wasm sha256, engine compatibility hash),
//! written atomically (temp file + rename) and checked before use.
//!
//! A file is the artifact exactly as wasmtime serialised it (an ELF image, so that
//! `Component::deserialize_file` can map it) followed by a trailer: the CRC-32 and length of the
//! artifact, then a magic number. ELF readers ignore bytes past the image.
//! The CRC catches truncation and corruption; it is no defence against someone who can write to
//! the cache directory, which must be as private as the binary.
//! All functions here block: call them from a blocking thread.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: &[u8; 8] = b"WEFTCWM1";
/// CRC-32 (4 bytes LE), artifact length (8 bytes LE), magic.
const TRAILER: usize = 4 + 8 + MAGIC.len();

/// A cached file that must not be used (the caller deletes it and recompiles).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Rejected {
    #[error("cannot read: {0}")]
    Io(#[from] io::Error),
    #[error("not a Weft artifact file (bad trailer)")]
    BadTrailer,
    #[error("checksum mismatch (corrupted)")]
    Corrupt,
}

#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    engine_hash: String,
}

impl DiskCache {
    pub(crate) fn open(dir: &Path, engine_hash: String) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(DiskCache {
            dir: dir.to_path_buf(),
            engine_hash,
        })
    }

    pub(crate) fn path(&self, wasm_sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{wasm_sha256}-{}.cwasm", self.engine_hash))
    }

    /// The path of a complete, intact artifact file for this wasm, with the artifact's size;
    /// `Ok(None)` when there is none.
    pub(crate) fn verified(&self, wasm_sha256: &str) -> Result<Option<(PathBuf, u64)>, Rejected> {
        let path = self.path(wasm_sha256);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(split) = bytes.len().checked_sub(TRAILER) else {
            return Err(Rejected::BadTrailer);
        };
        let (artifact, trailer) = bytes.split_at(split);
        let crc = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
        let len = u64::from_le_bytes(trailer[4..12].try_into().expect("8 bytes"));
        if &trailer[12..] != MAGIC || len != artifact.len() as u64 {
            return Err(Rejected::BadTrailer);
        }
        if crc32fast::hash(artifact) != crc {
            return Err(Rejected::Corrupt);
        }
        Ok(Some((path, len)))
    }

    /// Writes the artifact and its trailer under a temporary name, syncs it, then renames it into
    /// place, so a reader sees either no file or a complete one (and a file, once in place, is
    /// never modified: a mapping of it stays valid).
    pub(crate) fn write(&self, wasm_sha256: &str, artifact: &[u8]) -> io::Result<()> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".{wasm_sha256}.{}.{}.tmp",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(artifact)?;
            f.write_all(&crc32fast::hash(artifact).to_le_bytes())?;
            f.write_all(&(artifact.len() as u64).to_le_bytes())?;
            f.write_all(MAGIC)?;
            f.sync_all()?;
            fs::rename(&tmp, self.path(wasm_sha256))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    pub(crate) fn remove(&self, wasm_sha256: &str) {
        let _ = fs::remove_file(self.path(wasm_sha256));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> (tempfile::TempDir, DiskCache) {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), "e1".into()).unwrap();
        (dir, c)
    }

    #[test]
    fn round_trips_and_leaves_no_temp_files() {
        let (dir, c) = cache();
        assert!(c.verified("abc").unwrap().is_none());
        c.write("abc", b"artifact").unwrap();
        let (path, len) = c.verified("abc").unwrap().unwrap();
        assert_eq!(len, 8);
        assert!(fs::read(&path).unwrap().starts_with(b"artifact"));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["abc-e1.cwasm".to_string()]);
    }

    #[test]
    fn rejects_corrupt_truncated_and_foreign_files() {
        let (_dir, c) = cache();
        c.write("abc", b"artifact").unwrap();
        let path = c.path("abc");
        let good = fs::read(&path).unwrap();

        let mut flipped = good.clone();
        flipped[0] ^= 1;
        fs::write(&path, &flipped).unwrap();
        assert!(matches!(c.verified("abc"), Err(Rejected::Corrupt)));

        fs::write(&path, &good[1..]).unwrap();
        assert!(matches!(c.verified("abc"), Err(Rejected::BadTrailer)));
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(matches!(c.verified("abc"), Err(Rejected::BadTrailer)));
        fs::write(&path, b"\x7fELF not ours").unwrap();
        assert!(matches!(c.verified("abc"), Err(Rejected::BadTrailer)));

        c.remove("abc");
        assert!(c.verified("abc").unwrap().is_none());
    }

    #[test]
    fn keys_include_the_engine_hash() {
        let dir = tempfile::tempdir().unwrap();
        let a = DiskCache::open(dir.path(), "e1".into()).unwrap();
        let b = DiskCache::open(dir.path(), "e2".into()).unwrap();
        a.write("abc", b"x").unwrap();
        assert!(b.verified("abc").unwrap().is_none());
    }
}
