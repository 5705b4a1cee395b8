//! Hostile test plugin `hostile-wrong-world`: a component built against another world
//! (`wit/step.wit` in this crate: `weft:step@2.0.0`, with `run` renamed `execute`). It looks
//! like a step plugin (it exports `describe`) but the engine must refuse to load it: it imports
//! `weft:step/host@2.0.0` and does not export `run`.
//!
//! It uses wit-bindgen directly, not the SDK, which only knows the real world.

wit_bindgen::generate!({
    path: "wit",
    world: "step",
});

use weft::step::host::{LogLevel, log};

struct WrongWorld;

impl Guest for WrongWorld {
    fn describe() -> StepDescription {
        StepDescription {
            name: "hostile-wrong-world".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test plugin: implements weft:step@2.0.0 (`execute`), not 1.0.0.".into(),
            input_schema: "true".into(),
            output_schema: "true".into(),
        }
    }

    fn execute(_: StepContext, input: String) -> Result<String, StepError> {
        log(LogLevel::Info, "hostile-wrong-world: execute called");
        Ok(input)
    }
}

export!(WrongWorld);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_itself() {
        let d = WrongWorld::describe();
        assert_eq!(d.name, "hostile-wrong-world");
        assert_eq!(d.input_schema, "true");
    }
}
