//! Building non-Rust plugins one tool run each, skipping those whose inputs did not change.
//!
//! A plugin's scratch directory (`target/plugin-build/<language>/<name>/`) holds a copy of its
//! sources (`src/`: the tools never write into `plugins/`), the component `<name>.wasm` and a
//! `stamp`: the SHA-256 of everything the build reads (the recipe and toolchain versions, every
//! file of the plugin, `wit/`). Same stamp and the component is there: nothing to do.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use sha2::{Digest, Sha256};

use super::{Plugin, Workspace};

/// Directories never copied or hashed: tool caches and dependencies.
const IGNORED_DIRS: &[&str] = &["__pycache__", "node_modules", "target"];

/// One plugin to build.
pub struct Job {
    /// A fresh copy of the plugin's directory, to build from.
    pub src: PathBuf,
    /// The scratch directory (`src/`'s parent), for intermediate files.
    pub scratch: PathBuf,
    /// Where the build writes the component.
    pub out: PathBuf,
}

/// Build each of `plugins` whose stamp changed with `build`, at most as many at once as there are
/// cores; return the components, in order. `recipe` names everything besides the files that
/// decides the output: the tools and their versions, the options.
pub fn build_each(
    ws: &Workspace,
    language: &str,
    recipe: &str,
    plugins: &[Plugin],
    build: impl Fn(&Job) -> Result<()> + Sync,
) -> Result<Vec<PathBuf>> {
    let wit = hash_tree(&ws.wit_dir())?;
    let mut todo = Vec::new();
    let mut outputs = Vec::new();
    for plugin in plugins {
        let scratch = ws.build_dir(language, plugin);
        let component = scratch.join(format!("{}.wasm", plugin.name));
        let mut hasher = Sha256::new();
        hasher.update(recipe.as_bytes());
        hasher.update([0]);
        hasher.update(wit);
        hasher.update(hash_tree(&plugin.dir)?);
        let stamp = hex::encode(hasher.finalize());
        let stamp_file = scratch.join("stamp");
        let fresh =
            component.is_file() && fs::read_to_string(&stamp_file).is_ok_and(|s| s.trim() == stamp);
        if !fresh {
            todo.push((plugin, scratch, stamp, stamp_file, component.clone()));
        }
        outputs.push(component);
    }

    let jobs = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(todo.len())
        .max(1);
    let queue = Mutex::new(todo.into_iter());
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue").next();
                    let Some((plugin, scratch, stamp, stamp_file, component)) = next else {
                        break;
                    };
                    let result =
                        build_one(ws, plugin, &scratch, &component, &build).and_then(|()| {
                            fs::write(&stamp_file, &stamp)
                                .with_context(|| format!("writing {}", stamp_file.display()))
                        });
                    if let Err(e) = result {
                        errors
                            .lock()
                            .expect("errors")
                            .push(format!("{}: {e:#}", plugin.dir.display()));
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().expect("errors");
    if !errors.is_empty() {
        bail!("{}", errors.join("\n\n"));
    }
    Ok(outputs)
}

fn build_one(
    ws: &Workspace,
    plugin: &Plugin,
    scratch: &Path,
    component: &Path,
    build: &(impl Fn(&Job) -> Result<()> + Sync),
) -> Result<()> {
    let started = Instant::now();
    let dir = plugin.dir.strip_prefix(&ws.root).unwrap_or(&plugin.dir);
    println!("building {} ...", dir.display());
    let src = scratch.join("src");
    if src.exists() {
        fs::remove_dir_all(&src).with_context(|| format!("removing {}", src.display()))?;
    }
    copy_tree(&plugin.dir, &src)?;
    let out = scratch.join(format!("{}.wasm.partial", plugin.name));
    let _ = fs::remove_file(&out);
    build(&Job {
        src,
        scratch: scratch.to_path_buf(),
        out: out.clone(),
    })?;
    if !out.is_file() {
        bail!("the build wrote no component to {}", out.display());
    }
    fs::rename(&out, component).with_context(|| format!("renaming to {}", component.display()))?;
    println!(
        "built {} in {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The files under `dir` (ignored directories and hidden entries left out), sorted by path.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') || IGNORED_DIRS.contains(&name.as_str()) {
                continue;
            }
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.is_file() {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// The SHA-256 of the files under `dir`: their relative paths and contents. Markdown files are
/// left out: editing a README does not rebuild a component.
fn hash_tree(dir: &Path) -> Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    for file in files(dir)? {
        if file.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let relative = file.strip_prefix(dir).unwrap_or(&file);
        let bytes = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hasher.finalize().into())
}

/// Copy the files of `from` (as [`files`] lists them) into `to`.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for file in files(from)? {
        let relative = file
            .strip_prefix(from)
            .map_err(|_| anyhow!("{} is outside {}", file.display(), from.display()))?;
        let dest = to.join(relative);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::copy(&file, &dest)
            .with_context(|| format!("copying {} to {}", file.display(), dest.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_hash_sees_contents_and_names_but_not_caches() {
        let dir = tempdir();
        fs::write(dir.join("app.py"), "x = 1").unwrap();
        let first = hash_tree(&dir).unwrap();
        fs::create_dir_all(dir.join("__pycache__")).unwrap();
        fs::write(dir.join("__pycache__/app.pyc"), "junk").unwrap();
        fs::write(dir.join(".hidden"), "junk").unwrap();
        fs::write(dir.join("README.md"), "docs").unwrap();
        assert_eq!(hash_tree(&dir).unwrap(), first);
        fs::write(dir.join("app.py"), "x = 2").unwrap();
        assert_ne!(hash_tree(&dir).unwrap(), first);
        fs::write(dir.join("app.py"), "x = 1").unwrap();
        fs::rename(dir.join("app.py"), dir.join("main.py")).unwrap();
        assert_ne!(hash_tree(&dir).unwrap(), first);

        let copy = dir.join("../copy");
        copy_tree(&dir, &copy).unwrap();
        assert_eq!(hash_tree(&copy).unwrap(), hash_tree(&dir).unwrap());
        assert!(!copy.join("__pycache__").exists());
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir()
            .join(format!("xtask-incremental-{}", std::process::id()))
            .join("plugin");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
