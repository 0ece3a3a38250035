//! The imperative shell: watching, processes, files, clocks and signals.

pub mod accounts;
pub mod adopt;
pub mod agents;
pub mod budget;
pub mod catalog;
pub mod cgroup;
pub mod clock;
pub mod collected;
pub mod contain;
pub mod controller;
pub mod crash_dump;
pub mod errors;
pub mod fence;
pub mod files;
pub mod fork;
pub mod heap;
pub mod inbox;
pub mod keeper;
pub mod layout;
pub mod lock;
pub mod log_guard;
pub mod monitor;
pub mod process;
pub mod render;
pub mod session_env;
pub mod story;
pub mod tombstone;
pub mod trust;
pub mod watch;
pub mod workspace;

pub use controller::{Controller, Exit, Options, Signals};
