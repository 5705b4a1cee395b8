//! C plugins: `plugins/c/<name>/*.c` (and headers, such as the `weft_step.h` helper from
//! `templates/c/`), compiled with clang for `wasm32-wasi` as a reactor module, then wrapped into
//! a component with the WASI preview1 reactor adapter.
//!
//! The bindings (`step.h`, `step.c`, `step_component_type.o`) are generated into the plugin's
//! scratch directory from `wit/` by wit-bindgen-c used as a library, and the component is made by
//! wit-component: neither `wit-bindgen-cli` nor `wasm-tools` needs installing.
//!
//! Toolchain: Debian's `clang lld wasi-libc libclang-rt-dev-wasm32`, installed with apt-get when
//! missing; or a wasi-sdk, when `WASI_SDK_PATH` names one (then nothing is installed).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_bindgen_core::Files;
use wit_bindgen_core::wit_parser::Resolve;

use super::incremental::{Job, build_each, files};
use super::{Builder, Group, Plugin, Workspace};
use crate::component::Expected;
use crate::toolchain::{ensure_debian_packages, run_captured, version_line};

const WHY: &str = "C plugins";
/// The Debian packages of the toolchain: the compiler, the wasm linker, the C library and the
/// compiler runtime for wasm32.
pub const DEBIAN_PACKAGES: [&str; 4] = ["clang", "lld", "wasi-libc", "libclang-rt-dev-wasm32"];
/// Everything that decides the output besides the sources and the compiler.
const RECIPE: &str = "c wit-bindgen-c 0.63 adapter 48.0.8";
const FLAGS: &[&str] = &[
    "--target=wasm32-wasi",
    "-mexec-model=reactor",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
];

pub struct CBuilder;

/// The compiler, and the extra arguments it needs.
struct Compiler {
    clang: PathBuf,
    args: Vec<String>,
}

impl CBuilder {
    fn compiler() -> Compiler {
        match std::env::var_os("WASI_SDK_PATH") {
            Some(sdk) => {
                let sdk = PathBuf::from(sdk);
                let sysroot = sdk.join("share").join("wasi-sysroot");
                Compiler {
                    clang: sdk.join("bin").join("clang"),
                    args: vec![format!("--sysroot={}", sysroot.display())],
                }
            }
            None => Compiler {
                clang: PathBuf::from("clang"),
                args: Vec::new(),
            },
        }
    }
}

impl Builder for CBuilder {
    fn language(&self) -> &'static str {
        "c"
    }

    fn group(&self) -> Option<Group> {
        Some(Group {
            dir: "c",
            template_name: "c-hello",
        })
    }

    /// A directory with at least one `.c` file.
    fn detect(&self, dir: &Path, name: &str) -> Result<Option<Plugin>> {
        if c_sources(dir)?.is_empty() {
            return Ok(None);
        }
        Ok(Some(Plugin {
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            expected: Expected::Step,
            template: false,
        }))
    }

    /// apt-get the Debian packages that are missing (as root), unless `WASI_SDK_PATH` is set.
    fn prepare(&self, _: &Workspace) -> Result<()> {
        if std::env::var_os("WASI_SDK_PATH").is_none() {
            ensure_debian_packages(&DEBIAN_PACKAGES, WHY)?;
        }
        let compiler = Self::compiler();
        if version_line(&compiler.clang, &["--version"]).is_none() {
            bail!(
                "{WHY}: `{} --version` does not run (Debian packages: {}; or set WASI_SDK_PATH \
                 to a wasi-sdk)",
                compiler.clang.display(),
                DEBIAN_PACKAGES.join(" ")
            );
        }
        Ok(())
    }

    fn build(&self, ws: &Workspace, plugins: &[Plugin]) -> Result<Vec<PathBuf>> {
        let compiler = Self::compiler();
        let clang_version = version_line(&compiler.clang, &["--version"]).unwrap_or_default();
        let recipe = format!(
            "{RECIPE} {} {clang_version} {}",
            FLAGS.join(" "),
            compiler.args.join(" ")
        );
        let wit = ws.wit_dir();
        build_each(ws, self.language(), &recipe, plugins, |job: &Job| {
            let bindings = job.scratch.join("bindings");
            generate_bindings(&wit, &bindings)?;
            let module = job.scratch.join("module.wasm");
            let mut command = Command::new(&compiler.clang);
            command
                .args(FLAGS)
                .args(&compiler.args)
                .arg("-I")
                .arg(&bindings)
                .arg("-I")
                .arg(&job.src)
                .args(c_sources(&job.src)?)
                .arg(bindings.join("step.c"))
                .arg(bindings.join("step_component_type.o"))
                .arg("-o")
                .arg(&module);
            let output = run_captured(&mut command, "clang")?;
            // Warnings: shown, not fatal.
            let warnings = String::from_utf8_lossy(&output.stderr);
            if !warnings.trim().is_empty() {
                eprint!("{warnings}");
            }
            let module =
                fs::read(&module).with_context(|| format!("reading {}", module.display()))?;
            let component = componentize(&module)?;
            fs::write(&job.out, component).with_context(|| format!("writing {}", job.out.display()))
        })
    }
}

/// The `.c` files of `dir`, at any depth.
fn c_sources(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(files(dir)?
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "c"))
        .collect())
}

/// `step.h`, `step.c` and `step_component_type.o` for the world `step` of `wit_dir`, into `out`.
pub fn generate_bindings(wit_dir: &Path, out: &Path) -> Result<()> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(wit_dir)
        .with_context(|| format!("parsing {}", wit_dir.display()))?;
    let world = resolve.select_world(&[package], Some("step"))?;
    let mut files = Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .context("generating the C bindings")?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, contents) in files.iter() {
        let path = out.join(name);
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The component of a core module that embeds its world (the bindings' `*_component_type.o`)
/// and may import WASI preview1 (wasi-libc), adapted with the reactor adapter.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)
        .context("reading the module's component metadata (is step_component_type.o linked?)")?
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .context("adding the WASI preview1 reactor adapter")?
        .encode()
        .context("making the component")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_are_generated_from_the_step_world() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let out = std::env::temp_dir().join(format!("xtask-c-bindings-{}", std::process::id()));
        generate_bindings(&root.join("wit"), &out).unwrap();
        let header = fs::read_to_string(out.join("step.h")).unwrap();
        assert!(header.contains("exports_step_run"), "{header}");
        assert!(out.join("step.c").is_file());
        assert!(out.join("step_component_type.o").is_file());
        fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn garbage_is_no_module() {
        let err = componentize(b"not wasm").unwrap_err();
        assert!(format!("{err:#}").contains("component metadata"), "{err:#}");
    }
}
