//! Black-box tests of the HTTP API: each starts the real application on port 0 with a fresh
//! database, on SQLite and on PostgreSQL, and talks to it as a client would.

mod helpers;

mod agents;
mod auth;
mod definitions;
mod errors;
mod grpc_client;
mod health;
mod languages;
mod metrics;
mod openapi;
mod plugins;
mod runs;
mod search;
mod traces;
mod validation;
mod ws;
