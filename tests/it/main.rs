//! End-to-end tests: each test starts the real application in-process on port 0 with a
//! temporary data directory and talks to it over HTTP and gRPC.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test that cannot proceed should fail loudly"
)]

mod admin_tokens;
mod agent_tokens;
mod agents;
mod argon2_queue;
mod hardening;
mod helpers;
mod identity;
mod operations;
mod pages;
mod replicas;
mod role_matrix;
mod sudo;
mod token_lifecycle;
mod url_configs;
