//! Weft's protocol messages, generated from the `.proto` files beside this crate at build time.
//!
//! - [`agent`]: `weft.agent.v1`, the stream between remote agents and the engine.

/// `weft.agent.v1`: remote agents.
pub mod agent {
    tonic::include_proto!("weft.agent.v1");
}
