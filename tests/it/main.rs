//! End-to-end tests: each test starts the real application in-process on port 0 with a
//! temporary data directory and talks to it over HTTP and gRPC.

mod agent_tokens;
mod agents;
mod helpers;
mod identity;
mod url_configs;
