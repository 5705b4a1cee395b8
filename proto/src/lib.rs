//! Weft's protocol messages, generated from the `.proto` files beside this crate at build time.
//!
//! - [`agent`]: `weft.agent.v1`, the stream between remote agents and the engine.
//! - [`workflow`]: `weft.workflow.v1`, the client API for runs.
//! - [`events`]: `weft.events.v1`, the WebSocket frames of the live event stream (protobuf subprotocol).

/// `weft.agent.v1`: remote agents.
pub mod agent {
    tonic::include_proto!("weft.agent.v1");
}

/// `weft.workflow.v1`: clients.
pub mod workflow {
    tonic::include_proto!("weft.workflow.v1");
}

/// `weft.events.v1`: WebSocket frames (binary subprotocol `weft.v1.protobuf`).
pub mod events {
    tonic::include_proto!("weft.events.v1");
}
