//! The environment a session's process starts with.
//!
//! The keeper starts every child with exactly the variables returned here
//! (nothing is inherited), so this module alone decides what a session sees.

use std::path::Path;

use super::process::SpawnError;
use crate::api::SessionSpec;

/// The whole environment of one attempt: the base, the operator's
/// `--pass-env` variables, `spec.envFrom` files, `spec.env`, then `extra`
/// (what sessionlet itself adds, such as an agent's settings).
pub fn build(
    spec: &SessionSpec,
    extra: Vec<(String, String)>,
    _pass_env: &[String],
    _manifest_dir: &Path,
) -> Result<Vec<(String, String)>, SpawnError> {
    // Scaffold: the controller's whole environment, as before.
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(extra);
    Ok(env)
}
