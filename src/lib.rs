//! sessionlet: a Kubernetes-style reconciling controller for long-running sessions.
//!
//! Users declare `Session` and `Pool` manifests as YAML files in a directory;
//! the controller makes the processes on the machine match them and writes a
//! status file beside each manifest.

pub mod agent;
pub mod analysis;
pub mod api;
pub mod apiserver;
pub mod cli;
pub mod core;
pub mod events;
pub mod fleet;
pub mod manifest;
pub mod runtime;
pub mod telemetry;
