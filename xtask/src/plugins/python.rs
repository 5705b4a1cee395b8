//! Python plugins: `plugins/python/<name>/app.py` (plus any modules beside it, such as the
//! `weft_step.py` helper from `templates/python/`), built with componentize-py, which embeds
//! CPython and the plugin's modules into one component.
//!
//! Toolchain: `componentize-py` (pinned) installed with pip into a virtual environment under
//! `target/toolchains/python/venv` (python3 from PATH; Debian's `python3 python3-venv` are
//! installed with apt-get if missing).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::incremental::{Job, build_each};
use super::{Builder, Group, Plugin, Workspace};
use crate::component::Expected;
use crate::toolchain::{ensure_command, ensure_debian_packages, run_captured, version_line};

/// The componentize-py release plugins are built with.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// The module componentize-py starts from; it defines the class `WitWorld`.
const ENTRY_MODULE: &str = "app";
const WHY: &str = "Python plugins";

pub struct PythonBuilder;

impl PythonBuilder {
    fn venv(ws: &Workspace) -> PathBuf {
        ws.toolchain_dir("python").join("venv")
    }

    fn componentize_py(ws: &Workspace) -> PathBuf {
        Self::venv(ws).join("bin").join("componentize-py")
    }
}

impl Builder for PythonBuilder {
    fn language(&self) -> &'static str {
        "python"
    }

    fn group(&self) -> Option<Group> {
        Some(Group {
            dir: "python",
            template_name: "py-hello",
        })
    }

    /// A directory with an `app.py`.
    fn detect(&self, dir: &Path, name: &str) -> Result<Option<Plugin>> {
        if !dir.join(format!("{ENTRY_MODULE}.py")).is_file() {
            return Ok(None);
        }
        Ok(Some(Plugin {
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            expected: Expected::Step,
            template: false,
        }))
    }

    /// A venv with componentize-py, reinstalled when the pinned version changes or it no longer
    /// runs (a moved or deleted python3, say).
    fn prepare(&self, ws: &Workspace) -> Result<()> {
        let stamp = ws.toolchain_dir("python").join("installed");
        let wanted = format!("componentize-py=={COMPONENTIZE_PY}");
        let tool = Self::componentize_py(ws);
        if fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == wanted)
            && version_line(&tool, &["--version"]).is_some()
        {
            return Ok(());
        }
        println!(
            "installing {wanted} (pip, into {})",
            Self::venv(ws).display()
        );
        let python = ensure_command("python3", &["python3", "python3-venv"], WHY)?;
        let venv = Self::venv(ws);
        if venv.exists() {
            fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
        }
        let make_venv = || {
            let mut command = Command::new(&python);
            command.args(["-m", "venv"]).arg(&venv);
            run_captured(&mut command, &format!("{WHY}: cannot create a Python venv"))
        };
        if let Err(e) = make_venv() {
            // Debian splits `venv`/`ensurepip` out of python3.
            if ensure_debian_packages(&["python3-venv"], WHY).is_err() {
                return Err(e.context(format!(
                    "{WHY} need python3 with the venv module (Debian: python3-venv)"
                )));
            }
            let _ = fs::remove_dir_all(&venv);
            make_venv()?;
        }
        let mut pip = Command::new(venv.join("bin").join("python"));
        pip.args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            &wanted,
        ]);
        run_captured(
            &mut pip,
            &format!("{WHY}: cannot install {wanted} from PyPI with pip"),
        )?;
        if version_line(&tool, &["--version"]).is_none() {
            bail!(
                "{WHY}: pip installed {wanted} but {} does not run",
                tool.display()
            );
        }
        fs::write(&stamp, &wanted).with_context(|| format!("writing {}", stamp.display()))?;
        Ok(())
    }

    /// `componentize-py -d wit -w step componentize app -p <copy of the plugin> -o <out>`.
    fn build(&self, ws: &Workspace, plugins: &[Plugin]) -> Result<Vec<PathBuf>> {
        let tool = Self::componentize_py(ws);
        let recipe = format!("python componentize-py {COMPONENTIZE_PY} -w step {ENTRY_MODULE}");
        let wit = ws.wit_dir();
        build_each(ws, self.language(), &recipe, plugins, |job: &Job| {
            let mut command = Command::new(&tool);
            command
                .current_dir(&job.src)
                .arg("-d")
                .arg(&wit)
                .args(["-w", "step", "componentize", ENTRY_MODULE, "-p", "."])
                .arg("-o")
                .arg(&job.out)
                // Sources are copied fresh for each build: no bytecode cache worth writing.
                .env("PYTHONDONTWRITEBYTECODE", "1");
            run_captured(&mut command, "componentize-py").map(drop)
        })
    }
}
