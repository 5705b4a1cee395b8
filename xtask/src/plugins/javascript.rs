//! JavaScript plugins: `plugins/javascript/<name>/app.js`, an ES module exporting `describe`
//! and `run` (the `weft-step.js` helper from `templates/javascript/` makes them from one
//! function), built with componentize-js: SpiderMonkey (StarlingMonkey) and the module in one
//! component. Relative imports (`./weft-step.js`) are bundled.
//!
//! Toolchain: `@bytecodealliance/componentize-js`, every package pinned by
//! `xtask/toolchains/javascript/package-lock.json`, installed with `npm ci` into
//! `target/toolchains/javascript` (Node.js >= 20 and npm from PATH; Debian's `nodejs npm` are
//! installed with apt-get if missing, and must then be new enough).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use sha2::{Digest, Sha256};

use super::incremental::{Job, build_each};
use super::{Builder, Group, Plugin, Workspace};
use crate::component::Expected;
use crate::toolchain::{ensure_command, run_captured, version_line};

const ENTRY: &str = "app.js";
const WHY: &str = "JavaScript plugins";
/// The files that pin the toolchain, in `xtask/toolchains/javascript/`.
const MANIFESTS: [&str; 2] = ["package.json", "package-lock.json"];
/// The oldest Node.js major version the pinned packages support.
const MIN_NODE: u32 = 20;

pub struct JavaScriptBuilder;

impl JavaScriptBuilder {
    fn componentize_js(ws: &Workspace) -> PathBuf {
        ws.toolchain_dir("javascript")
            .join("node_modules")
            .join(".bin")
            .join("componentize-js")
    }

    /// What is installed: the pinning files and node's version.
    fn toolchain_id(ws: &Workspace, node: &Path) -> Result<String> {
        let source = ws.root.join("xtask").join("toolchains").join("javascript");
        let mut hasher = Sha256::new();
        for name in MANIFESTS {
            let path = source.join(name);
            hasher.update(fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
        }
        let node_version = version_line(node, &["--version"]).unwrap_or_default();
        Ok(format!(
            "{} node {node_version}",
            hex::encode(hasher.finalize())
        ))
    }
}

impl Builder for JavaScriptBuilder {
    fn language(&self) -> &'static str {
        "javascript"
    }

    fn group(&self) -> Option<Group> {
        Some(Group {
            dir: "javascript",
            template_name: "js-hello",
        })
    }

    /// A directory with an `app.js`.
    fn detect(&self, dir: &Path, name: &str) -> Result<Option<Plugin>> {
        if !dir.join(ENTRY).is_file() {
            return Ok(None);
        }
        Ok(Some(Plugin {
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            expected: Expected::Step,
            template: false,
        }))
    }

    /// `npm ci` from the pinned lock file, again when it (or node) changes.
    fn prepare(&self, ws: &Workspace) -> Result<()> {
        let node = ensure_command("node", &["nodejs", "npm"], WHY)?;
        let version = version_line(&node, &["--version"]).unwrap_or_default();
        let major: Option<u32> = version
            .trim_start_matches('v')
            .split('.')
            .next()
            .and_then(|m| m.parse().ok());
        if major.is_none_or(|m| m < MIN_NODE) {
            bail!(
                "{WHY} need Node.js {MIN_NODE} or newer (componentize-js's dependencies require \
                 it); `{}` is `{version}`",
                node.display()
            );
        }
        let npm = ensure_command("npm", &["npm"], WHY)?;
        let dir = ws.toolchain_dir("javascript");
        let stamp = dir.join("installed");
        let wanted = Self::toolchain_id(ws, &node)?;
        if fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == wanted)
            && Self::componentize_js(ws).is_file()
        {
            return Ok(());
        }
        println!(
            "installing @bytecodealliance/componentize-js (npm ci, into {})",
            dir.display()
        );
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let source = ws.root.join("xtask").join("toolchains").join("javascript");
        for name in MANIFESTS {
            fs::copy(source.join(name), dir.join(name))
                .with_context(|| format!("copying {name} to {}", dir.display()))?;
        }
        let mut install = Command::new(npm);
        install
            .current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
        run_captured(
            &mut install,
            &format!("{WHY}: cannot install componentize-js from the npm registry"),
        )?;
        if !Self::componentize_js(ws).is_file() {
            bail!(
                "{WHY}: npm ci succeeded but {} is missing",
                Self::componentize_js(ws).display()
            );
        }
        fs::write(&stamp, &wanted).with_context(|| format!("writing {}", stamp.display()))?;
        Ok(())
    }

    /// `componentize-js app.js --wit wit -n step -d http fetch-event -o <out>`. Without
    /// `-d http fetch-event` the component would import `wasi:http`, which Weft does not grant.
    fn build(&self, ws: &Workspace, plugins: &[Plugin]) -> Result<Vec<PathBuf>> {
        let tool = Self::componentize_js(ws);
        let node = ensure_command("node", &["nodejs", "npm"], WHY)?;
        let recipe = format!(
            "javascript {} -n step -d http fetch-event",
            Self::toolchain_id(ws, &node)?
        );
        let wit = ws.wit_dir();
        build_each(ws, self.language(), &recipe, plugins, |job: &Job| {
            let mut command = Command::new(&tool);
            command
                .current_dir(&job.src)
                .arg(ENTRY)
                .arg("--wit")
                .arg(&wit)
                .args(["-n", "step", "-d", "http", "fetch-event", "-o"])
                .arg(&job.out);
            run_captured(&mut command, "componentize-js").map(drop)
        })
    }
}
