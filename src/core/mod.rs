//! The functional core: pure decision logic, no I/O.
//!
//! `reconcile(desired, state, now) -> Plan` and `observe(desired, state, event, now)`
//! decide everything the controller does; the runtime performs the plan.

pub mod backoff;
pub mod budget;
pub mod change;
pub mod desired;
pub mod exit;
pub mod gc;
pub mod keys;
pub mod lifecycle;
pub mod monitor;
pub mod names;
pub mod phase;
pub mod placement;
pub mod plan;
pub mod preview;
pub mod quota;
pub mod reconcile;
pub mod requests;
pub mod signals;
pub mod state;
pub mod time;
pub mod verdict;

#[cfg(test)]
mod tests;

pub use desired::{Desired, DesiredPool, DesiredSession, Replica};
pub use phase::{ExitStatus, Phase, Reason};
pub use plan::{Action, Plan};
pub use reconcile::{observe, reconcile, reconcile_keys, Event};
pub use signals::keeps_sessions;
pub use state::{LastExit, Record, Run, State};
