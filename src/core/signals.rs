//! What a stop signal to the controller means.

/// Whether a signal makes the controller exit and leave every session
/// running. `--keep-sessions` is for upgrades, which send SIGTERM; Ctrl-C
/// (SIGINT) always drains, and once a drain has begun every further signal
/// escalates it instead.
pub fn keeps_sessions(keep_sessions: bool, is_sigterm: bool, draining: bool) -> bool {
    keep_sessions && is_sigterm && !draining
}

#[cfg(test)]
mod tests {
    use super::keeps_sessions;

    #[test]
    fn only_sigterm_with_keep_sessions_and_no_drain_leaves_sessions_running() {
        assert!(keeps_sessions(true, true, false));
        assert!(!keeps_sessions(true, false, false), "Ctrl-C drains");
        assert!(!keeps_sessions(true, true, true), "a drain escalates");
        assert!(!keeps_sessions(false, true, false));
    }
}
