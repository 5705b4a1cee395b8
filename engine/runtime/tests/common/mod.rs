//! Test helpers: components built from inline WAT (no guest toolchain needed), the example
//! plugins built by `cargo xtask plugins`, and a runtime on a temporary cache directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weft_runtime::{Limits, Runtime, RuntimeConfig, StepContext};

pub const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit");

/// A description for a WAT component.
pub struct Desc<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub input_schema: &'a str,
}

pub const DESC: Desc<'static> = Desc {
    name: "wat-step",
    version: "1.0.0",
    input_schema: r#"{"type":"object"}"#,
};

/// `run` returns its input unchanged.
pub const ECHO: &str = "
    (i32.store8 (i32.const 600) (i32.const 0))
    (i32.store (i32.const 604) (local.get $ip))
    (i32.store (i32.const 608) (local.get $il))
    (i32.const 600)";
/// `run` logs \"hello\" at info, then echoes.
pub const LOG_THEN_ECHO: &str = "
    (call $log (i32.const 2) (i32.const 2048) (i32.const 5))
    (i32.store8 (i32.const 600) (i32.const 0))
    (i32.store (i32.const 604) (local.get $ip))
    (i32.store (i32.const 608) (local.get $il))
    (i32.const 600)";
/// `run` returns `Err(step-error { message: \"bad input\", code: \"invalid_input\", retryable: false })`.
pub const GUEST_ERROR: &str = "
    (i32.store8 (i32.const 600) (i32.const 1))
    (i32.store (i32.const 604) (i32.const 2064))
    (i32.store (i32.const 608) (i32.const 9))
    (i32.store (i32.const 612) (i32.const 2080))
    (i32.store (i32.const 616) (i32.const 13))
    (i32.store8 (i32.const 620) (i32.const 0))
    (i32.const 600)";
/// `run` returns the text `hello`, which is not JSON.
pub const NOT_JSON: &str = "
    (i32.store8 (i32.const 600) (i32.const 0))
    (i32.store (i32.const 604) (i32.const 2048))
    (i32.store (i32.const 608) (i32.const 5))
    (i32.const 600)";
pub const LOOP: &str = "(loop $l (br $l)) unreachable";
pub const MEMORY_BOMB: &str =
    "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable";
pub const STACK_OVERFLOW: &str = "(call $recurse (i32.const 0))";
/// Recursion that keeps 128-byte frames on a stack in linear memory growing down from 64 KiB,
/// like a Rust guest's shadow stack.
pub const SHADOW_STACK_OVERFLOW: &str = "(call $shadow (i32.const 65536))";
/// An out-of-bounds store that is not a stack overflow.
pub const OUT_OF_BOUNDS: &str = "(i32.store (i32.const 0x7fff0000) (i32.const 1)) (i32.const 0)";
pub const TRAP: &str = "unreachable";
pub const LOG_FLOOD: &str =
    "(loop $l (call $log (i32.const 2) (i32.const 2048) (i32.const 5)) (br $l)) unreachable";

/// `run` returns `bytes` zero bytes (valid UTF-8, not JSON).
pub fn big_output(bytes: u32) -> String {
    let pages = bytes / 65536 + 1;
    format!(
        "(drop (memory.grow (i32.const {pages})))
         (i32.store8 (i32.const 600) (i32.const 0))
         (i32.store (i32.const 604) (i32.const 131072))
         (i32.store (i32.const 608) (i32.const {bytes}))
         (i32.const 600)"
    )
}

/// A `weft:step@1.0.0` component whose `run` body is `run` (locals: $ip/$il are the input).
pub fn component(run: &str) -> Vec<u8> {
    component_with(&DESC, run)
}

pub fn component_with(desc: &Desc, run: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve.push_path(WIT_DIR).unwrap().0;
    encode(&resolve, pkg, "1.0.0", desc, run, true)
}

/// A component of `wit` (a variant of the step world) with the host import at `version`.
pub fn component_of_world(wit: &str, version: &str, with_run: bool) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve.push_str("world.wit", wit).unwrap();
    encode(&resolve, pkg, version, &DESC, ECHO, with_run)
}

fn encode(
    resolve: &wit_parser::Resolve,
    pkg: wit_parser::PackageId,
    version: &str,
    desc: &Desc,
    run: &str,
    with_run: bool,
) -> Vec<u8> {
    let world = resolve.select_world(&[pkg], Some("step")).unwrap();
    let mut module = wat::parse_str(core_wat(version, desc, run, with_run)).unwrap();
    wit_component::embed_component_metadata(
        &mut module,
        resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

/// The core module: strings at 1024.., describe's return area at 512, run's at 600, a bump
/// allocator from 64 KiB.
fn core_wat(version: &str, desc: &Desc, run: &str, with_run: bool) -> String {
    let strings = [
        desc.name,
        desc.version,
        "A step made of WAT.",
        desc.input_schema,
        "true",
    ];
    let mut offset = 1024u32;
    let mut area = Vec::new();
    let mut text = String::new();
    for s in strings {
        area.extend_from_slice(&offset.to_le_bytes());
        area.extend_from_slice(&(s.len() as u32).to_le_bytes());
        text.push_str(s);
        offset += s.len() as u32;
    }
    assert!(offset < 2048);
    let escape = |bytes: &[u8]| {
        bytes
            .iter()
            .map(|b| format!("\\{b:02x}"))
            .collect::<String>()
    };
    let run_export = if with_run {
        format!(
            r#"(func (export "run") (param $rp i32) (param $rl i32) (param $sp i32) (param $sl i32)
                 (param $attempt i32) (param $ip i32) (param $il i32) (result i32)
               {run})"#
        )
    } else {
        String::new()
    };
    format!(
        r#"(module
  (import "weft:step/host@{version}" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (data (i32.const 512) "{area}")
  (data (i32.const 1024) "{text}")
  (data (i32.const 2048) "hello")
  (data (i32.const 2064) "bad input")
  (data (i32.const 2080) "invalid_input")
  (func $recurse (param i32) (result i32)
    (i32.add (call $recurse (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func $shadow (param $sp i32) (result i32)
    (local.set $sp (i32.sub (local.get $sp) (i32.const 128)))
    (i32.store (local.get $sp) (local.get $sp))
    (i32.add (call $shadow (local.get $sp)) (i32.const 1)))
  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
        (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (block $ok
      (br_if $ok (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
      (br_if $ok (i32.ne (memory.grow
          (i32.add (i32.shr_u (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
                              (i32.const 16))
                   (i32.const 1)))
        (i32.const -1)))
      unreachable)
    (local.get $ptr))
  (func (export "describe") (result i32) (i32.const 512))
  {run_export}
)"#,
        area = escape(&area),
        text = escape(text.as_bytes()),
    )
}

/// The step world of `wit/step.wit`, renamed to another package version.
pub fn step_world_at(version: &str) -> String {
    std::fs::read_to_string(Path::new(WIT_DIR).join("step.wit"))
        .unwrap()
        .replace(
            "package weft:step@1.0.0;",
            &format!("package weft:step@{version};"),
        )
}

/// `target/plugins/<name>.wasm`, built by `cargo xtask plugins`.
pub fn plugin(name: &str) -> Vec<u8> {
    let path = plugins_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run `cargo xtask plugins` first",
            path.display()
        )
    })
}

pub fn plugins_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("plugins")
}

pub fn config(dir: &Path) -> RuntimeConfig {
    RuntimeConfig {
        defaults: Limits {
            timeout: Duration::from_secs(5),
            ..Limits::default()
        },
        ..RuntimeConfig::new(dir)
    }
}

pub fn runtime(dir: &Path) -> Runtime {
    Runtime::new(config(dir), CancellationToken::new()).unwrap()
}

pub fn ctx() -> StepContext {
    StepContext {
        run_id: "run-1".into(),
        step_id: "step-1".into(),
        attempt: 1,
    }
}

pub fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}
