//! Rust plugins: a crate `weft-plugin-<name>` with a `Cargo.toml`, built with cargo for
//! `wasm32-wasip2` and the workspace's `plugin` profile.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use super::{Builder, Plugin, Workspace, cargo};
use crate::component::Expected;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";
const PACKAGE_PREFIX: &str = "weft-plugin-";

pub struct RustBuilder;

impl Builder for RustBuilder {
    fn language(&self) -> &'static str {
        "rust"
    }

    /// A directory with a `Cargo.toml` whose package is `weft-plugin-<name>`. Its
    /// `[package.metadata.weft] world = "foreign"` marks a component that must NOT implement
    /// `weft:step@1.0.0` (a test plugin the engine must refuse).
    fn detect(&self, dir: &Path, _name: &str) -> Result<Option<Plugin>> {
        let manifest = dir.join("Cargo.toml");
        if !manifest.is_file() {
            return Ok(None);
        }
        let text = fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let toml: toml::Table = text
            .parse()
            .with_context(|| format!("parsing {}", manifest.display()))?;
        let package = toml.get("package").and_then(toml::Value::as_table);
        let Some(package_name) = package
            .and_then(|p| p.get("name"))
            .and_then(toml::Value::as_str)
        else {
            bail!("{} has no package.name", manifest.display());
        };
        let Some(name) = package_name.strip_prefix(PACKAGE_PREFIX) else {
            bail!(
                "{}: plugin packages are named `{PACKAGE_PREFIX}<name>`, not `{package_name}`",
                manifest.display()
            );
        };
        let world = package
            .and_then(|p| p.get("metadata"))
            .and_then(|m| m.get("weft"))
            .and_then(|w| w.get("world"))
            .and_then(toml::Value::as_str);
        let expected = match world {
            None => Expected::Step,
            Some("foreign") => Expected::ForeignWorld,
            Some(other) => bail!(
                "{}: package.metadata.weft.world is `{other}`; the only value is \"foreign\"",
                manifest.display()
            ),
        };
        Ok(Some(Plugin {
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            expected,
            template: false,
        }))
    }

    fn prepare(&self, _: &Workspace) -> Result<()> {
        let output = Command::new("rustup")
            .args(["target", "add", TARGET])
            .output();
        match output {
            Ok(output) if output.status.success() => Ok(()),
            Ok(output) => bail!(
                "`rustup target add {TARGET}` failed; Rust plugins need that target:\n{}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(e) => bail!(
                "cannot run `rustup target add {TARGET}` ({e}); Rust plugins need that target: \
                 install rustup, or add the target to your toolchain another way"
            ),
        }
    }

    /// One `cargo build` for all Rust plugins; the component files are read from cargo's
    /// artifact messages rather than guessed.
    fn build(&self, ws: &Workspace, plugins: &[Plugin]) -> Result<Vec<PathBuf>> {
        let mut command = Command::new(cargo());
        command
            .current_dir(&ws.root)
            .args(["build", "--target", TARGET, "--profile", PROFILE])
            .arg("--message-format=json-render-diagnostics")
            .stdout(Stdio::piped());
        for plugin in plugins {
            command.args(["-p", &format!("{PACKAGE_PREFIX}{}", plugin.name)]);
        }
        let mut child = command.spawn().context("running cargo")?;
        let stdout = child.stdout.take().context("cargo's stdout")?;

        let mut wasm_by_manifest: HashMap<PathBuf, PathBuf> = HashMap::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo's output")?;
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if message["reason"] != "compiler-artifact" {
                continue;
            }
            let Some(manifest) = message["manifest_path"].as_str() else {
                continue;
            };
            let wasm = message["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_str)
                .find(|file| file.ends_with(".wasm"));
            if let Some(wasm) = wasm {
                wasm_by_manifest.insert(canonical(Path::new(manifest)), PathBuf::from(wasm));
            }
        }
        let status = child.wait().context("waiting for cargo")?;
        if !status.success() {
            bail!("cargo build --target {TARGET} --profile {PROFILE} failed ({status})");
        }

        plugins
            .iter()
            .map(|plugin| {
                let manifest = plugin.dir.join("Cargo.toml");
                wasm_by_manifest
                    .remove(&canonical(&manifest))
                    .with_context(|| format!("cargo built no .wasm for {}", manifest.display()))
            })
            .collect()
    }
}

fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}
