//! The API: the manifest types users write and the value types they use.

pub mod agent;
pub mod manifest;
pub mod status;
pub mod units;

pub use manifest::*;
pub use units::{Duration, Quantity, SignalName};
