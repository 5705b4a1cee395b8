//! `cargo xtask plugins`: find the plugins under `plugins/`, build each language's plugins with
//! its [`Builder`], copy the components to `target/plugins/<name>.wasm`, and check them.

mod rust;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::component::{self, Expected};

/// Whether to check the built components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Build,
    BuildAndCheck,
}

/// One plugin directory, as its builder understood it.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// The name of the component file, `target/plugins/<name>.wasm`.
    pub name: String,
    pub dir: PathBuf,
    /// What `--check` must find in the component.
    pub expected: Expected,
}

/// The paths the builders work with.
#[derive(Debug)]
pub struct Workspace {
    pub root: PathBuf,
    pub target_dir: PathBuf,
}

/// Builds the plugins written in one language into components.
///
/// Only Rust exists today; Python (componentize-py), JavaScript (componentize-js) and C
/// (wasi-sdk + wasm-tools) builders will recognise their own plugin directories and join the
/// same command.
pub trait Builder {
    /// For messages: "rust", "python", ...
    fn language(&self) -> &'static str;

    /// The plugin in `dir`, if `dir` holds one in this builder's language.
    fn detect(&self, dir: &Path) -> Result<Option<Plugin>>;

    /// Install or verify the toolchain. Idempotent.
    fn prepare(&self, ws: &Workspace) -> Result<()>;

    /// Build `plugins` (all of them this builder's), with as few tool runs as it can, and
    /// return the component file of each, in the same order.
    fn build(&self, ws: &Workspace, plugins: &[Plugin]) -> Result<Vec<PathBuf>>;
}

fn builders() -> Vec<Box<dyn Builder>> {
    vec![Box::new(rust::RustBuilder)]
}

pub fn run(root: &Path, mode: Mode) -> Result<()> {
    let started = Instant::now();
    let ws = Workspace {
        root: root.to_path_buf(),
        target_dir: target_dir(root)?,
    };
    let builders = builders();
    let found = discover(&root.join("plugins"), &builders)?;
    if found.iter().all(Vec::is_empty) {
        bail!("no plugins found under {}", root.join("plugins").display());
    }

    let out_dir = ws.target_dir.join("plugins");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut report = String::new();
    let mut failures = 0;
    let mut count = 0;
    for (builder, plugins) in builders.iter().zip(&found) {
        if plugins.is_empty() {
            continue;
        }
        builder.prepare(&ws)?;
        let built = builder
            .build(&ws, plugins)
            .with_context(|| format!("building the {} plugins", builder.language()))?;
        for (plugin, file) in plugins.iter().zip(built) {
            let dest = out_dir.join(format!("{}.wasm", plugin.name));
            fs::copy(&file, &dest)
                .with_context(|| format!("copying {} to {}", file.display(), dest.display()))?;
            let bytes = fs::read(&dest).with_context(|| format!("reading {}", dest.display()))?;
            let mut line = format!("{:<22} {:>9}", plugin.name, human_size(bytes.len()));
            if mode == Mode::BuildAndCheck {
                match component::check(&bytes, &plugin.expected) {
                    Ok(summary) => write!(line, "  ok    {summary}")?,
                    Err(e) => {
                        failures += 1;
                        write!(line, "  FAIL  {e:#}")?;
                    }
                }
            } else {
                write!(line, "  {}", relative(&dest, root).display())?;
            }
            report.push_str(&line);
            report.push('\n');
            count += 1;
        }
    }
    print!("{report}");
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{count} plugins in {} ({elapsed:.1} s)",
        relative(&out_dir, root).display()
    );
    if failures > 0 {
        bail!("{failures} plugin(s) failed the check");
    }
    Ok(())
}

/// The plugins under `plugins_dir`, grouped by the builder (same index) that recognised them.
fn discover(plugins_dir: &Path, builders: &[Box<dyn Builder>]) -> Result<Vec<Vec<Plugin>>> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(plugins_dir)
        .with_context(|| format!("reading {}", plugins_dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    dirs.retain(|dir| dir.is_dir() && !is_hidden(dir));
    dirs.sort();

    let mut found = vec![Vec::new(); builders.len()];
    'dirs: for dir in dirs {
        for (builder, plugins) in builders.iter().zip(&mut found) {
            if let Some(plugin) = builder.detect(&dir)? {
                plugins.push(plugin);
                continue 'dirs;
            }
        }
        let languages: Vec<_> = builders.iter().map(|b| b.language()).collect();
        bail!(
            "{} is not a plugin in a language xtask builds ({})",
            dir.display(),
            languages.join(", ")
        );
    }
    let mut names: Vec<&str> = found.iter().flatten().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        bail!("two plugins are named `{}`", pair[0]);
    }
    Ok(found)
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR` and `build.target-dir`).
fn target_dir(root: &Path) -> Result<PathBuf> {
    let output = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .context("running `cargo metadata`")?;
    if !output.status.success() {
        bail!(
            "`cargo metadata` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing `cargo metadata` output")?;
    let dir = metadata["target_directory"]
        .as_str()
        .context("`cargo metadata` gave no target_directory")?;
    Ok(PathBuf::from(dir))
}

/// The cargo that runs xtask, so that the same toolchain builds the plugins.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with('.'))
}

fn relative<'p>(path: &'p Path, root: &Path) -> &'p Path {
    path.strip_prefix(root).unwrap_or(path)
}

fn human_size(bytes: usize) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_readable() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(215_000), "210.0 KiB");
    }
}
