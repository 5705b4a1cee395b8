//! The disk cache of compiled components: one file per (wasm sha256, engine compatibility hash),
//! written atomically (temp file + rename) and checked against its own digest before use.
//! All functions here block: call them from a blocking thread.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// File header: magic and format version, then the sha256 of the artifact that follows.
const MAGIC: &[u8; 8] = b"WEFTCWM1";
const HEADER: usize = MAGIC.len() + 32;

/// A cached file that must not be used (it is deleted by the caller and recompiled).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Rejected {
    #[error("cannot read: {0}")]
    Io(#[from] io::Error),
    #[error("not a Weft artifact file (bad header)")]
    BadHeader,
    #[error("digest mismatch (truncated or corrupted)")]
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

    /// The verified artifact for this wasm, `Ok(None)` when there is none.
    pub(crate) fn read(&self, wasm_sha256: &str) -> Result<Option<Vec<u8>>, Rejected> {
        let mut bytes = match fs::read(self.path(wasm_sha256)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            return Err(Rejected::BadHeader);
        }
        let digest = Sha256::digest(&bytes[HEADER..]);
        if digest[..] != bytes[MAGIC.len()..HEADER] {
            return Err(Rejected::Corrupt);
        }
        bytes.drain(..HEADER);
        Ok(Some(bytes))
    }

    /// Writes the artifact under a temporary name, syncs it, then renames it into place, so a
    /// reader sees either no file or a complete one.
    pub(crate) fn write(&self, wasm_sha256: &str, artifact: &[u8]) -> io::Result<()> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".{wasm_sha256}.{}.{}.tmp",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&Sha256::digest(artifact))?;
            f.write_all(artifact)?;
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
        assert!(c.read("abc").unwrap().is_none());
        c.write("abc", b"artifact").unwrap();
        assert_eq!(c.read("abc").unwrap().unwrap(), b"artifact");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["abc-e1.cwasm".to_string()]);
    }

    #[test]
    fn rejects_corrupt_and_foreign_files() {
        let (_dir, c) = cache();
        c.write("abc", b"artifact").unwrap();
        let path = c.path("abc");
        let mut bytes = fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(c.read("abc"), Err(Rejected::Corrupt)));
        fs::write(&path, b"\x7fELF not ours").unwrap();
        assert!(matches!(c.read("abc"), Err(Rejected::BadHeader)));
        c.remove("abc");
        assert!(c.read("abc").unwrap().is_none());
    }

    #[test]
    fn keys_include_the_engine_hash() {
        let dir = tempfile::tempdir().unwrap();
        let a = DiskCache::open(dir.path(), "e1".into()).unwrap();
        let b = DiskCache::open(dir.path(), "e2".into()).unwrap();
        a.write("abc", b"x").unwrap();
        assert!(b.read("abc").unwrap().is_none());
    }
}
