//! The `read-file` task: reads one file under a directory the operator granted (`--root`), which
//! a Wasm step cannot do (it has no filesystem). Paths are relative to the root; absolute paths,
//! `..` and symlinks that lead out of the root are refused.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weft_plugin_sdk::agent::{Task, TaskContext, TaskError};

/// Files up to this size come back as `text` too, when they are UTF-8.
pub const TEXT_LIMIT: u64 = 1024 * 1024;
/// The default `--max-bytes`: larger files fail with `too_large`.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFileInput {
    /// The file, relative to the agent's root directory, e.g. `reports/2025.csv`.
    pub path: String,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReadFileOutput {
    /// The file's path relative to the root, with `.` and symlinks resolved, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// The content, when it is UTF-8 and at most 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Task `read-file` over one root directory.
#[derive(Debug, Clone)]
pub struct ReadFile {
    root: Arc<Path>,
    max_bytes: u64,
}

impl ReadFile {
    /// Grant read access to `root` (an existing directory), for files of at most `max_bytes`.
    pub fn new(root: impl AsRef<Path>, max_bytes: u64) -> io::Result<Self> {
        let root = fs::canonicalize(root.as_ref())?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Self {
            root: root.into(),
            max_bytes,
        })
    }

    /// The root, canonicalised.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file `requested` names, canonicalised and checked to be inside the root.
    fn resolve(&self, requested: &str) -> Result<PathBuf, TaskError> {
        if requested.is_empty() {
            return Err(TaskError::invalid_input("`path` is empty"));
        }
        let relative = Path::new(requested);
        for component in relative.components() {
            match component {
                Component::Prefix(_) | Component::RootDir => {
                    return Err(forbidden(format!(
                        "`{requested}` is absolute; give a path relative to the root"
                    )));
                }
                Component::ParentDir => {
                    return Err(forbidden(format!("`{requested}` contains `..`")));
                }
                Component::CurDir | Component::Normal(_) => {}
            }
        }
        let canonical =
            fs::canonicalize(self.root.join(relative)).map_err(|e| io_error(&e, requested))?;
        if !canonical.starts_with(&self.root) {
            return Err(forbidden(format!(
                "`{requested}` leads outside the root (through a symlink)"
            )));
        }
        Ok(canonical)
    }

    /// The blocking part: resolve, check, read, hash.
    fn read(&self, ctx: &TaskContext, requested: &str) -> Result<ReadFileOutput, TaskError> {
        let path = self.resolve(requested)?;
        let metadata = fs::metadata(&path).map_err(|e| io_error(&e, requested))?;
        if !metadata.is_file() {
            return Err(TaskError::fatal(
                "not_a_file",
                format!("`{requested}` is not a regular file"),
            ));
        }
        if metadata.len() > self.max_bytes {
            return Err(too_large(requested, self.max_bytes));
        }

        let mut file = File::open(&path).map_err(|e| io_error(&e, requested))?;
        let mut hasher = Sha256::new();
        let mut kept = Vec::new();
        let mut size = 0u64;
        let mut buffer = vec![0; 64 * 1024];
        loop {
            if ctx.is_cancelled() {
                return Err(TaskError::cancelled("cancelled while reading"));
            }
            let n = match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(&e, requested)),
            };
            size += n as u64;
            // The file may have grown since `metadata`.
            if size > self.max_bytes {
                return Err(too_large(requested, self.max_bytes));
            }
            hasher.update(&buffer[..n]);
            if size <= TEXT_LIMIT {
                kept.extend_from_slice(&buffer[..n]);
            }
        }
        let text = if size <= TEXT_LIMIT {
            String::from_utf8(kept).ok()
        } else {
            None
        };
        let relative = path
            .strip_prefix(&self.root)
            .expect("checked by resolve")
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        Ok(ReadFileOutput {
            path: relative,
            size,
            sha256: hex::encode(hasher.finalize()),
            text,
        })
    }
}

impl Task for ReadFile {
    type Input = ReadFileInput;
    type Output = ReadFileOutput;
    const NAME: &'static str = "read-file";
    const VERSION: &'static str = "1.0.0";
    const DESCRIPTION: &'static str = "Reads a file under the agent's root directory: size, SHA-256 and, for small UTF-8 files, the text.";

    async fn run(
        &self,
        ctx: TaskContext,
        input: ReadFileInput,
    ) -> Result<ReadFileOutput, TaskError> {
        let task = self.clone();
        match tokio::task::spawn_blocking(move || task.read(&ctx, &input.path)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(TaskError::retryable("io_error", e.to_string())),
        }
    }
}

fn forbidden(message: String) -> TaskError {
    TaskError::fatal("forbidden", message)
}

fn too_large(requested: &str, max_bytes: u64) -> TaskError {
    TaskError::fatal(
        "too_large",
        format!("`{requested}` is larger than {max_bytes} bytes"),
    )
}

/// Missing and unreadable files are not retryable; other I/O errors may pass.
fn io_error(e: &io::Error, requested: &str) -> TaskError {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
            TaskError::fatal("not_found", format!("`{requested}` does not exist"))
        }
        io::ErrorKind::PermissionDenied => forbidden(format!("`{requested}`: {e}")),
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidFilename => {
            TaskError::invalid_input(format!("`{requested}`: {e}"))
        }
        _ => TaskError::retryable("io_error", format!("`{requested}`: {e}")),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::symlink;

    use tempfile::TempDir;

    use super::*;

    /// A root with `hello.txt`, `sub/data.bin` (not UTF-8), `big.txt` (over 1 MiB), a symlink
    /// inside and one out, next to a `secret.txt` outside the root.
    fn fixture() -> (TempDir, ReadFile) {
        let dir = TempDir::new().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("hello.txt"), "hello\n").unwrap();
        fs::write(root.join("sub/data.bin"), [0xff, 0xfe, 0x00]).unwrap();
        fs::write(root.join("big.txt"), "a".repeat(TEXT_LIMIT as usize + 1)).unwrap();
        fs::write(dir.path().join("secret.txt"), "secret").unwrap();
        symlink(root.join("hello.txt"), root.join("link.txt")).unwrap();
        symlink(dir.path().join("secret.txt"), root.join("escape.txt")).unwrap();
        symlink(dir.path(), root.join("up")).unwrap();
        let task = ReadFile::new(&root, 2 * 1024 * 1024).unwrap();
        (dir, task)
    }

    async fn read(task: &ReadFile, path: &str) -> Result<ReadFileOutput, TaskError> {
        let (ctx, _cancel) = TaskContext::detached("run", "step", 1);
        task.run(ctx, ReadFileInput { path: path.into() }).await
    }

    async fn code(task: &ReadFile, path: &str) -> (String, bool) {
        let e = read(task, path).await.unwrap_err();
        (e.code, e.retryable)
    }

    #[tokio::test]
    async fn reads_a_small_text_file() {
        let (_dir, task) = fixture();
        assert_eq!(
            read(&task, "hello.txt").await.unwrap(),
            ReadFileOutput {
                path: "hello.txt".into(),
                size: 6,
                sha256: "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03".into(),
                text: Some("hello\n".into()),
            }
        );
        // `.` and symlinks inside the root are resolved.
        assert_eq!(read(&task, "./link.txt").await.unwrap().path, "hello.txt");
    }

    #[tokio::test]
    async fn no_text_for_binary_or_large_files() {
        let (_dir, task) = fixture();
        let binary = read(&task, "sub/data.bin").await.unwrap();
        assert_eq!(
            (binary.path.as_str(), binary.size, binary.text),
            ("sub/data.bin", 3, None)
        );
        let big = read(&task, "big.txt").await.unwrap();
        assert_eq!((big.size, big.text), (TEXT_LIMIT + 1, None));
    }

    #[tokio::test]
    async fn refuses_what_is_outside_the_root() {
        let (dir, task) = fixture();
        let forbidden = ("forbidden".to_owned(), false);
        let absolute = dir.path().join("secret.txt");
        assert_eq!(code(&task, absolute.to_str().unwrap()).await, forbidden);
        assert_eq!(code(&task, "../secret.txt").await, forbidden);
        assert_eq!(code(&task, "sub/../hello.txt").await, forbidden);
        assert_eq!(code(&task, "escape.txt").await, forbidden);
        assert_eq!(code(&task, "up/secret.txt").await, forbidden);
    }

    #[tokio::test]
    async fn errors() {
        let (_dir, task) = fixture();
        let fatal = |c: &str| (c.to_owned(), false);
        assert_eq!(code(&task, "missing.txt").await, fatal("not_found"));
        assert_eq!(code(&task, "hello.txt/x").await, fatal("not_found"));
        assert_eq!(code(&task, "sub").await, fatal("not_a_file"));
        assert_eq!(code(&task, ".").await, fatal("not_a_file"));
        assert_eq!(code(&task, "").await, fatal("invalid_input"));
        let small = ReadFile::new(task.root(), 3).unwrap();
        assert_eq!(code(&small, "hello.txt").await, fatal("too_large"));
    }

    #[tokio::test]
    async fn a_cancelled_read_stops() {
        let (_dir, task) = fixture();
        let (ctx, cancel) = TaskContext::detached("run", "step", 1);
        cancel.cancel();
        let e = task
            .run(
                ctx,
                ReadFileInput {
                    path: "big.txt".into(),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, "cancelled");
    }

    #[test]
    fn the_root_must_be_a_directory() {
        let (_dir, task) = fixture();
        assert!(ReadFile::new(task.root().join("hello.txt"), 1).is_err());
        assert!(ReadFile::new(task.root().join("nope"), 1).is_err());
    }
}
