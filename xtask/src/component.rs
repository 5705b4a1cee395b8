//! What a built plugin file is: a valid component, and whether it implements the
//! `weft:step@1.0.0` world (`wit/step.wit`) as far as names and shapes go. The engine does the
//! full type check when it loads the component.

use anyhow::{Result, bail};
use wasmparser::component_types::ComponentEntityType;
use wasmparser::types::Types;
use wasmparser::{ComponentExternalKind, ComponentTypeRef, Encoding, Parser, Payload, Validator};

/// The contract's package; a step may import its interfaces (and WASI), nothing else.
const STEP_PACKAGE: &str = "weft:step/";
const STEP_VERSION: &str = "@1.0.0";

/// What a plugin's component must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// A step: exports `describe` and `run` of weft:step@1.0.0.
    Step,
    /// A component of some other world, which the engine must refuse (a test plugin).
    ForeignWorld,
}

/// The top-level imports (instances and functions) and exported functions of a component.
#[derive(Debug, Default)]
pub struct Interface {
    pub imports: Vec<String>,
    /// Exported functions.
    pub functions: Vec<String>,
}

/// Check `bytes` against `expected`; the summary says what was found.
pub fn check(bytes: &[u8], expected: &Expected) -> Result<String> {
    let (interface, types) = read(bytes)?;
    let problems = step_problems(&interface, &types);
    let exports = interface.functions.join(", ");
    let imports = summarise_imports(&interface.imports);
    match (expected, problems.is_empty()) {
        (Expected::Step, true) => Ok(format!("exports {exports}; imports {imports}")),
        (Expected::Step, false) => bail!("not a weft:step@1.0.0 step: {}", problems.join("; ")),
        (Expected::ForeignWorld, false) => Ok(format!(
            "not weft:step@1.0.0, as expected: {}",
            problems.join("; ")
        )),
        (Expected::ForeignWorld, true) => {
            bail!("marked world = \"foreign\" but implements weft:step@1.0.0")
        }
    }
}

/// Validate `bytes` as a component and list its top-level imports and exported functions.
pub fn read(bytes: &[u8]) -> Result<(Interface, Types)> {
    let mut interface = Interface::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    bail!("a core Wasm module, not a component");
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    let import = import?;
                    // Type imports (the world's `use types.{...}`) come with their interface.
                    if !matches!(import.ty, ComponentTypeRef::Type(_)) {
                        interface.imports.push(import.name.name.to_owned());
                    }
                }
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    let export = export?;
                    if export.kind == ComponentExternalKind::Func {
                        interface.functions.push(export.name.name.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    let types = Validator::new()
        .validate_all(bytes)
        .map_err(|e| anyhow::anyhow!("invalid component: {e}"))?;
    Ok((interface, types))
}

/// Why `interface` is not a weft:step@1.0.0 step (empty if it is one).
fn step_problems(interface: &Interface, types: &Types) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, params) in [("describe", &[][..]), ("run", &["ctx", "input"][..])] {
        if let Some(problem) = function_problem(types, name, params) {
            problems.push(problem);
        }
    }
    for import in &interface.imports {
        let allowed = import.starts_with("wasi:")
            || (import.starts_with(STEP_PACKAGE) && import.ends_with(STEP_VERSION));
        if !allowed {
            problems.push(format!("imports `{import}`"));
        }
    }
    problems
}

/// Why export `name` is not a function with parameters `params` and a result, if it is not.
fn function_problem(types: &Types, name: &str, params: &[&str]) -> Option<String> {
    let Some(item) = types.component_item_for_export(name) else {
        return Some(format!("no export `{name}`"));
    };
    let ComponentEntityType::Func(id) = item.ty else {
        return Some(format!("export `{name}` is not a function"));
    };
    let func = &types[id];
    let found: Vec<&str> = func.params.iter().map(|(n, _)| n.as_str()).collect();
    if found != params {
        return Some(format!(
            "`{name}` takes ({}), not ({})",
            found.join(", "),
            params.join(", ")
        ));
    }
    if func.result.is_none() {
        return Some(format!("`{name}` returns nothing"));
    }
    None
}

/// `weft:step/host@1.0.0, weft:step/types@1.0.0 + 9 wasi`.
fn summarise_imports(imports: &[String]) -> String {
    let wasi = imports.iter().filter(|i| i.starts_with("wasi:")).count();
    let mut parts: Vec<&str> = imports
        .iter()
        .filter(|i| !i.starts_with("wasi:"))
        .map(String::as_str)
        .collect();
    let wasi = format!("{wasi} wasi");
    parts.push(&wasi);
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest core module: `\0asm`, version 1.
    const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";
    /// The smallest component: `\0asm`, version 0xd, layer 1.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn core_modules_are_refused() {
        let err = check(CORE_MODULE, &Expected::Step).unwrap_err();
        assert!(err.to_string().contains("not a component"), "{err}");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(check(b"hello", &Expected::Step).is_err());
    }

    #[test]
    fn an_empty_component_is_no_step_but_is_a_foreign_world() {
        let err = check(EMPTY_COMPONENT, &Expected::Step).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a weft:step@1.0.0 step: no export `describe`; no export `run`"
        );
        let summary = check(EMPTY_COMPONENT, &Expected::ForeignWorld).unwrap();
        assert!(
            summary.starts_with("not weft:step@1.0.0, as expected: "),
            "{summary}"
        );
    }

    #[test]
    fn imports_are_summarised() {
        let imports = [
            "wasi:io/streams@0.2.0",
            "weft:step/host@1.0.0",
            "wasi:cli/exit@0.2.0",
        ]
        .map(String::from);
        assert_eq!(summarise_imports(&imports), "weft:step/host@1.0.0, 2 wasi");
    }
}
