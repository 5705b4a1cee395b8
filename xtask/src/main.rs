//! Weft's project automation, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! Commands:
//! - `plugins [--check]`: build every plugin under `plugins/` (Rust crates, and
//!   `plugins/{python,javascript,c}/<name>/`) into `target/plugins/<name>.wasm`, and the templates
//!   under `templates/` into `target/plugins/templates/`, installing the language toolchains
//!   first (under `target/toolchains/`; C: Debian packages); with `--check`, verify that each is
//!   a component of the `weft:step@1.0.0` world.
//! - `new-plugin --lang py|js|c NAME`: start a plugin from `templates/<language>/`.
//! - `serve [ARGS...]`: build the plugins, then run `weft serve --plugins-dir target/plugins`
//!   (embedded SQLite under `./weft-data`); extra arguments go to `weft serve`.
//! - `test [ARGS...]`: build and check the plugins once, then run the whole test suite
//!   (`cargo test --workspace`; extra arguments go to it). CI runs exactly this.

mod component;
mod new_plugin;
mod plugins;
mod toolchain;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  plugins [--check]   build every plugin (Rust crates in plugins/, Python, JavaScript and C
                      in plugins/{python,javascript,c}/<name>/) into target/plugins/<name>.wasm,
                      and the templates/ into target/plugins/templates/; installs the
                      toolchains it needs; --check also verifies each weft:step@1.0.0 component
  new-plugin --lang py|js|c NAME
                      copy templates/<language>/ to plugins/<language>/NAME/
  serve [ARGS...]     build the plugins and run the server with them loaded
                      (SQLite in ./weft-data, http://127.0.0.1:8080); ARGS go to `weft serve`
  test [ARGS...]      build the plugins once, then run every test (cargo test --workspace)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["plugins"] => plugins::run(&workspace_root(), plugins::Mode::Build),
        ["plugins", "--check"] => plugins::run(&workspace_root(), plugins::Mode::BuildAndCheck),
        ["new-plugin", rest @ ..] => new_plugin::run(&workspace_root(), rest),
        ["serve", rest @ ..] => serve(&workspace_root(), rest),
        ["test", rest @ ..] => test(&workspace_root(), rest),
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Build the plugins, then run `weft serve` with them loaded.
fn serve(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    plugins::run(root, plugins::Mode::Build)?;
    let plugins_dir = root.join("target").join("plugins");
    let status = std::process::Command::new(cargo())
        .current_dir(root)
        .args([
            "run",
            "--package",
            "weft",
            "--bin",
            "weft",
            "--",
            "serve",
            "--plugins-dir",
        ])
        .arg(&plugins_dir)
        .args(args)
        .status()?;
    anyhow::ensure!(status.success(), "weft serve exited with {status}");
    Ok(())
}

/// Build and check the plugins once, then run the whole test suite.
fn test(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    plugins::run(root, plugins::Mode::BuildAndCheck)?;
    let status = std::process::Command::new(cargo())
        .current_dir(root)
        .args(["test", "--workspace"])
        .args(args)
        .status()?;
    anyhow::ensure!(status.success(), "the test suite failed ({status})");
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// The workspace root: xtask lives in `<root>/xtask`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}
