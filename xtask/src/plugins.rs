//! `cargo xtask plugins`: find the plugins under `plugins/` (and the templates under
//! `templates/`), build each language's plugins with its [`Builder`], copy the components to
//! `target/plugins/<name>.wasm` (templates: `target/plugins/templates/<name>.wasm`), and check
//! them.
//!
//! Layout: a Rust plugin is a crate directly under `plugins/`; a plugin in another language is a
//! directory `plugins/<group>/<name>/` (`python`, `javascript`, `c`: excluded from the cargo
//! workspace), whose directory name is the plugin's name; `templates/<group>/` is that language's
//! template, built too so that it is known to work.

mod c;
mod incremental;
mod javascript;
mod python;
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
    /// A language's template (`templates/<group>/`), built into `target/plugins/templates/`.
    pub template: bool,
}

/// The paths the builders work with.
#[derive(Debug)]
pub struct Workspace {
    pub root: PathBuf,
    pub target_dir: PathBuf,
}

impl Workspace {
    /// `wit/`: the `weft:step@1.0.0` world every plugin implements.
    pub fn wit_dir(&self) -> PathBuf {
        self.root.join("wit")
    }

    /// Where toolchains are installed (`target/toolchains/<language>`).
    pub fn toolchain_dir(&self, language: &str) -> PathBuf {
        self.target_dir.join("toolchains").join(language)
    }

    /// A plugin's scratch directory: `target/plugin-build/<language>/[templates/]<name>`.
    pub fn build_dir(&self, language: &str, plugin: &Plugin) -> PathBuf {
        let base = self.target_dir.join("plugin-build").join(language);
        if plugin.template {
            base.join("templates").join(&plugin.name)
        } else {
            base.join(&plugin.name)
        }
    }
}

/// Where a language keeps its plugins and its template.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    /// `plugins/<dir>/<name>/` are this language's plugins, `templates/<dir>/` its template.
    pub dir: &'static str,
    /// The template's plugin name (its `describe` name), replaced by `new-plugin`.
    pub template_name: &'static str,
}

/// Builds the plugins written in one language into components.
pub trait Builder {
    /// For messages: "rust", "python", ...
    fn language(&self) -> &'static str;

    /// For a language whose plugins live in `plugins/<group>/<name>/`; `None` for plugins
    /// directly under `plugins/` (Rust crates).
    fn group(&self) -> Option<Group> {
        None
    }

    /// The plugin in `dir`, if `dir` holds one in this builder's language. For a grouped
    /// language, `name` is the plugin's name (its directory's, or the template's); otherwise the
    /// builder finds the name itself.
    fn detect(&self, dir: &Path, name: &str) -> Result<Option<Plugin>>;

    /// Install or verify the toolchain. Idempotent, and quick when nothing is missing.
    fn prepare(&self, ws: &Workspace) -> Result<()>;

    /// Build `plugins` (all of them this builder's), with as few tool runs as it can, and
    /// return the component file of each, in the same order.
    fn build(&self, ws: &Workspace, plugins: &[Plugin]) -> Result<Vec<PathBuf>>;
}

fn builders() -> Vec<Box<dyn Builder>> {
    vec![
        Box::new(rust::RustBuilder),
        Box::new(python::PythonBuilder),
        Box::new(javascript::JavaScriptBuilder),
        Box::new(c::CBuilder),
    ]
}

/// The groups of the languages that have one, for `new-plugin`.
pub fn groups() -> Vec<(&'static str, Group)> {
    builders()
        .iter()
        .filter_map(|b| b.group().map(|g| (b.language(), g)))
        .collect()
}

pub fn run(root: &Path, mode: Mode) -> Result<()> {
    let started = Instant::now();
    let ws = Workspace {
        root: root.to_path_buf(),
        target_dir: target_dir(root)?,
    };
    let builders = builders();
    let found = discover(root, &builders)?;
    if found.iter().flatten().all(|p| p.template) {
        bail!("no plugins found under {}", root.join("plugins").display());
    }
    // One `cargo xtask plugins` at a time per target directory: the toolchain installs, the
    // scratch directories and target/plugins are shared.
    let _lock = lock(&ws)?;

    let out_dir = ws.target_dir.join("plugins");
    let templates_dir = out_dir.join("templates");
    fs::create_dir_all(&templates_dir)
        .with_context(|| format!("creating {}", templates_dir.display()))?;
    let mut report = String::new();
    let mut failures = 0;
    let mut count = 0;
    for (builder, plugins) in builders.iter().zip(&found) {
        if plugins.is_empty() {
            continue;
        }
        builder.prepare(&ws).with_context(|| {
            format!(
                "installing the {} plugin toolchain (needed by {})",
                builder.language(),
                relative(&plugins[0].dir, root).display()
            )
        })?;
        let built = builder
            .build(&ws, plugins)
            .with_context(|| format!("building the {} plugins", builder.language()))?;
        for (plugin, file) in plugins.iter().zip(built) {
            let dir = if plugin.template {
                &templates_dir
            } else {
                &out_dir
            };
            let dest = dir.join(format!("{}.wasm", plugin.name));
            let bytes = copy_if_changed(&file, &dest)?;
            let name = if plugin.template {
                format!("templates/{}", plugin.name)
            } else {
                plugin.name.clone()
            };
            let mut line = format!("{name:<24} {:>9}", human_size(bytes.len()));
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

/// The plugins under `plugins/` and the templates under `templates/`, grouped by the builder
/// (same index) that recognised them.
fn discover(root: &Path, builders: &[Box<dyn Builder>]) -> Result<Vec<Vec<Plugin>>> {
    let plugins_dir = root.join("plugins");
    let mut found = vec![Vec::new(); builders.len()];
    'dirs: for dir in subdirectories(&plugins_dir)? {
        let dir_name = file_name(&dir);
        // A language's group: each subdirectory is a plugin of that language.
        if let Some(index) = builders
            .iter()
            .position(|b| b.group().is_some_and(|g| g.dir == dir_name))
        {
            let builder = &builders[index];
            for plugin_dir in subdirectories(&dir)? {
                let name = file_name(&plugin_dir);
                check_name(&name).with_context(|| format!("{}", plugin_dir.display()))?;
                let Some(plugin) = builder.detect(&plugin_dir, &name)? else {
                    bail!(
                        "{} is not a {} plugin (see templates/{dir_name}/README.md)",
                        plugin_dir.display(),
                        builder.language()
                    );
                };
                found[index].push(plugin);
            }
            continue;
        }
        for (builder, plugins) in builders.iter().zip(&mut found) {
            if builder.group().is_some() {
                continue;
            }
            if let Some(plugin) = builder.detect(&dir, &dir_name)? {
                plugins.push(plugin);
                continue 'dirs;
            }
        }
        let languages: Vec<_> = builders.iter().map(|b| b.language()).collect();
        bail!(
            "{} is not a plugin in a language xtask builds ({}); plugins in other languages \
             than Rust go in plugins/<language>/<name>/",
            dir.display(),
            languages.join(", ")
        );
    }
    for (builder, plugins) in builders.iter().zip(&mut found) {
        let Some(group) = builder.group() else {
            continue;
        };
        let dir = root.join("templates").join(group.dir);
        if !dir.is_dir() {
            continue;
        }
        let Some(mut plugin) = builder.detect(&dir, group.template_name)? else {
            bail!(
                "{} is not a {} plugin template",
                dir.display(),
                builder.language()
            );
        };
        plugin.template = true;
        plugins.push(plugin);
    }
    let mut names: Vec<&str> = found
        .iter()
        .flatten()
        .filter(|p| !p.template)
        .map(|p| p.name.as_str())
        .collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        bail!("two plugins are named `{}`", pair[0]);
    }
    Ok(found)
}

/// The visible subdirectories of `dir`, sorted.
fn subdirectories(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    dirs.retain(|dir| dir.is_dir() && !is_hidden(dir));
    dirs.sort();
    Ok(dirs)
}

/// The files of a plugin's (or template's) directory: hidden files and tool caches
/// (`__pycache__`, `node_modules`) left out.
pub fn source_files(dir: &Path) -> Result<Vec<PathBuf>> {
    incremental::files(dir)
}

/// Copy the [`source_files`] of `from` into `to`.
#[cfg(test)]
pub fn copy_sources(from: &Path, to: &Path) -> Result<()> {
    incremental::copy_tree(from, to)
}

/// A plugin name: lowercase ASCII letters, digits and `-`, starting with a letter.
pub fn check_name(name: &str) -> Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name.len() <= 64;
    if !valid {
        bail!(
            "`{name}` is not a plugin name: lowercase letters, digits and `-`, starting with a \
             letter (e.g. `py-normalize`)"
        );
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Copy `from` to `to` unless `to` already has the same bytes (a server watching the directory
/// then sees no change); return the bytes.
fn copy_if_changed(from: &Path, to: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    if fs::read(to).is_ok_and(|existing| existing == bytes) {
        return Ok(bytes);
    }
    // Write then rename: a server polling the directory never reads half a file.
    let partial = to.with_extension("wasm.partial");
    fs::write(&partial, &bytes).with_context(|| format!("writing {}", partial.display()))?;
    fs::rename(&partial, to).with_context(|| format!("renaming to {}", to.display()))?;
    Ok(bytes)
}

/// An exclusive lock on `target/plugin-build/.lock`, held until dropped.
fn lock(ws: &Workspace) -> Result<fs::File> {
    let dir = ws.target_dir.join("plugin-build");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(".lock");
    let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    if file.try_lock().is_err() {
        println!("waiting for another `cargo xtask plugins` to finish...");
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(file)
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
    } else if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_readable() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(215_000), "210.0 KiB");
        assert_eq!(human_size(18_455_226), "17.6 MiB");
    }

    #[test]
    fn plugin_names_are_checked() {
        for good in ["py-normalize", "c2", "a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Py", "-x", "x-", "a_b", "a b", "1x", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_examples_ship_the_templates_helpers_unchanged() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        for (example, language, helper) in [
            ("python/py-normalize", "python", "weft_step.py"),
            ("javascript/js-render", "javascript", "weft-step.js"),
            ("c/c-checksum", "c", "weft_step.h"),
        ] {
            let copy = root.join("plugins").join(example).join(helper);
            let original = root.join("templates").join(language).join(helper);
            assert!(
                fs::read(&copy).unwrap() == fs::read(&original).unwrap(),
                "{} differs from {}: copy the template's helper again",
                copy.display(),
                original.display()
            );
        }
    }

    #[test]
    fn the_repository_layout_is_understood() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let found = discover(root, &builders()).unwrap();
        let names: Vec<Vec<&str>> = found
            .iter()
            .map(|ps| ps.iter().map(|p| p.name.as_str()).collect())
            .collect();
        assert!(names[0].contains(&"add"), "{names:?}");
        for (index, example, template) in [
            (1, "py-normalize", "py-hello"),
            (2, "js-render", "js-hello"),
            (3, "c-checksum", "c-hello"),
        ] {
            let plugin = |name: &str| found[index].iter().find(|p| p.name == name).cloned();
            assert!(plugin(example).is_some_and(|p| !p.template), "{names:?}");
            assert!(plugin(template).is_some_and(|p| p.template), "{names:?}");
        }
    }
}
