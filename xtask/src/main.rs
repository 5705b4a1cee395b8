//! Weft's project automation, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! Commands:
//! - `plugins [--check]`: build every plugin under `plugins/` into `target/plugins/<name>.wasm`
//!   and, with `--check`, verify that each is a component of the `weft:step@1.0.0` world.

mod component;
mod plugins;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  plugins [--check]   build plugins/* for wasm32-wasip2 into target/plugins/<name>.wasm;
                      --check also verifies that each is a weft:step@1.0.0 component";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["plugins"] => plugins::run(&workspace_root(), plugins::Mode::Build),
        ["plugins", "--check"] => plugins::run(&workspace_root(), plugins::Mode::BuildAndCheck),
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

/// The workspace root: xtask lives in `<root>/xtask`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}
