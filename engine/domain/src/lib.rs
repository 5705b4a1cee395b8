//! Weft's domain model: workflow definitions (the documents users write), their validation,
//! and definition versions. Pure code: no I/O, no async.
//!
//! - [`definition`]: the document types, JSON in the Go engine's camelCase field names.
//! - [`validation`]: every problem in a definition, each an [`Issue`] with a JSON Pointer.
//! - [`graph`]: the step graph (successors, predecessors, join owners, regions).
//! - [`expression`]: CEL expressions over `input` and `steps`.
//! - [`version`]: semantic versions of definitions.

pub mod definition;
pub mod expression;
pub mod graph;
mod pointer;
pub mod validation;
pub mod version;

pub use definition::*;
pub use validation::{Issue, validate};
pub use version::{Bump, Version, VersionError};
