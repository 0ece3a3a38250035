//! When the controller's loop ends, and how: a decision from the state.

use super::desired::Desired;
use super::phase::Phase;
use super::state::{Run, State};

/// Why the controller loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Drained or done: every session Completed (or a plain drain).
    Clean,
    /// `--exit-when-done` and some session did not complete.
    SomeFailed,
    /// A second signal: killed everything.
    Forced,
}

/// What the loop knows besides the state.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ending {
    /// `--exit-when-done`: end once every session is terminal.
    pub exit_when_done: bool,
    /// A second signal killed every session.
    pub forced: bool,
    /// Some manifest declares something invalid (or a name twice).
    pub any_invalid: bool,
}

/// How the loop ends now, or `None` while it goes on. Draining (the state
/// is shutting down) ends once no process is left; `--exit-when-done` once
/// every declared session is done and none runs, cleanly only when all of
/// them Completed and every manifest is valid.
pub fn decide(desired: &Desired, state: &State, ending: Ending) -> Option<Exit> {
    if state.shutting_down {
        let exit = if ending.forced {
            Exit::Forced
        } else {
            Exit::Clean
        };
        return state.all_stopped().then_some(exit);
    }
    if !ending.exit_when_done {
        return None;
    }
    let all_done = desired.sessions.keys().all(|n| {
        state
            .sessions
            .get(n)
            .is_some_and(|r| matches!(r.run, Run::Done(_)))
    });
    if !all_done || !state.all_stopped() {
        return None;
    }
    let all_completed = desired.sessions.keys().all(|n| {
        state
            .sessions
            .get(n)
            .and_then(|r| r.outcome())
            .is_some_and(|o| o.phase == Phase::Completed)
    });
    Some(if all_completed && !ending.any_invalid {
        Exit::Clean
    } else {
        Exit::SomeFailed
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::desired::DesiredSession;
    use crate::core::state::{Outcome, Record};
    use crate::core::Reason;
    use chrono::Utc;

    fn world(phases: &[Option<Phase>]) -> (Desired, State) {
        let mut d = Desired::default();
        let mut s = State::default();
        for (i, p) in phases.iter().enumerate() {
            let name = format!("s{i}");
            d.sessions.insert(
                name.clone(),
                DesiredSession {
                    name: name.clone(),
                    spec: std::sync::Arc::default(),
                    generation: 1,
                    first_seen: Utc::now(),
                    replica: None,
                    restarted_at: None,
                },
            );
            let rec = match p {
                Some(phase) => Record {
                    run: Run::Done(Outcome {
                        phase: *phase,
                        reason: Reason::Completed,
                        message: String::new(),
                        finished_at: Utc::now(),
                    }),
                    ..Record::default()
                },
                None => Record::default(),
            };
            s.sessions.insert(name, rec);
        }
        (d, s)
    }

    #[test]
    fn the_loop_ends_as_the_state_says() {
        let done = Ending {
            exit_when_done: true,
            ..Ending::default()
        };
        let (d, s) = world(&[Some(Phase::Completed), Some(Phase::Completed)]);
        assert_eq!(
            decide(&d, &s, Ending::default()),
            None,
            "a plain run goes on"
        );
        assert_eq!(decide(&d, &s, done), Some(Exit::Clean));
        let invalid = Ending {
            any_invalid: true,
            ..done
        };
        assert_eq!(
            decide(&d, &s, invalid),
            Some(Exit::SomeFailed),
            "an invalid manifest fails the run"
        );
        let (d, s) = world(&[Some(Phase::Completed), Some(Phase::Failed)]);
        assert_eq!(decide(&d, &s, done), Some(Exit::SomeFailed));
        let (d, mut s) = world(&[Some(Phase::Completed), None]);
        assert_eq!(decide(&d, &s, done), None, "one not done yet");
        s.shutting_down = true;
        assert_eq!(
            decide(&d, &s, done),
            Some(Exit::Clean),
            "a drain with nothing running is clean"
        );
        let forced = Ending {
            forced: true,
            ..Ending::default()
        };
        assert_eq!(decide(&d, &s, forced), Some(Exit::Forced));
    }
}
