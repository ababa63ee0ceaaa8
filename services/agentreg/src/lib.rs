//! agentreg: GitLab's Kubernetes agent API as a standalone service. `app` implements every
//! operation once; `rest` (GitLab's `/api/v4` paths) and `grpc` (`agentreg.v1`) are two thin
//! edges over it; `startup` wires them to the storage backend (`backends`) and the listeners.

pub mod app;
pub mod backends;
pub mod config;
pub mod grpc;
pub mod metrics;
pub mod rest;
pub mod secrets;
pub mod server;
pub mod snapshots;
pub mod startup;
pub mod telemetry;
