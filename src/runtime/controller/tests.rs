//! The shell's routing under a paused clock: a controller over a fake
//! keeper client (it records what it is asked; the test plays the keeper's
//! replies) and a clock that moves only when the test says. What runs is
//! real: the manifest folder, the status files, and a child process the
//! test starts itself in its own process group (the controller's sweeps
//! signal that group on exits, so no other process can be reached).

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::sync::{Arc, Mutex};

use super::*;
use crate::runtime::clock::PausedClock;
use crate::runtime::keeper::KeeperClient;

/// A request the controller made of the keeper.
#[derive(Debug, Clone, PartialEq)]
enum Asked {
    Spawn {
        tag: u64,
        session: String,
        attempt: u32,
    },
    Ack(u32),
    Stdin(u32),
    CloseStdin(u32),
}

/// Records every request; answers none (the test does).
#[derive(Clone, Default)]
struct FakeKeeper(Arc<Mutex<Vec<Asked>>>);

impl FakeKeeper {
    fn push(&self, a: Asked) -> bool {
        self.0.lock().expect("the record").push(a);
        true
    }
    fn asked(&self) -> Vec<Asked> {
        self.0.lock().expect("the record").clone()
    }
    fn spawns(&self) -> Vec<(u64, String, u32)> {
        self.asked()
            .into_iter()
            .filter_map(|a| match a {
                Asked::Spawn {
                    tag,
                    session,
                    attempt,
                } => Some((tag, session, attempt)),
                _ => None,
            })
            .collect()
    }
    fn acked(&self, pid: u32) -> bool {
        self.asked().contains(&Asked::Ack(pid))
    }
}

impl KeeperClient for FakeKeeper {
    fn spawn(&self, tag: u64, identity: Identity, _request: SpawnRequest) -> bool {
        self.push(Asked::Spawn {
            tag,
            session: identity.session,
            attempt: identity.attempt,
        })
    }
    fn ack(&self, pid: u32) -> bool {
        self.push(Asked::Ack(pid))
    }
    fn write_stdin(&self, pid: u32, _data: String) -> bool {
        self.push(Asked::Stdin(pid))
    }
    fn close_stdin(&self, pid: u32) -> bool {
        self.push(Asked::CloseStdin(pid))
    }
    fn shutdown(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

/// A child the test owns, in its own process group; killed when dropped.
struct OwnChild(std::process::Child);

impl OwnChild {
    fn start() -> OwnChild {
        let child = std::process::Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .expect("sleep starts");
        OwnChild(child)
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    /// Kills and reaps it, as the keeper would before reporting its exit.
    fn end(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for OwnChild {
    fn drop(&mut self) {
        self.end();
    }
}

struct Rig {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    keeper: FakeKeeper,
    clock: PausedClock,
    c: Controller,
}

fn rig(manifests: &[(&str, &str)]) -> Rig {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let dir = tmp.path().join("sessions");
    std::fs::create_dir(&dir).expect("the manifest folder");
    for (file, text) in manifests {
        std::fs::write(dir.join(file), text).expect("a manifest");
    }
    let opts = Options {
        dir: dir.clone(),
        // No cgroups: the test's own child is not moved anywhere.
        force_sampled_limits: true,
        ..Options::default()
    };
    let keeper = FakeKeeper::default();
    let clock = PausedClock::at(Utc::now());
    let c = Controller::with_parts(opts, Box::new(keeper.clone()), Arc::new(clock.clone()))
        .expect("a controller");
    Rig {
        _tmp: tmp,
        dir,
        keeper,
        clock,
        c,
    }
}

/// The `status` of session `name` in `stem.status.yaml`.
fn status_of(dir: &Path, stem: &str, name: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(dir.join(format!("{stem}.status.yaml"))).expect("the status file");
    codec::from_yaml_multi::<serde_json::Value>(&text)
        .expect("status documents")
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
        .map(|d| d["status"].clone())
        .expect("the session's status")
}

const FAILING: &str = "apiVersion: sessionlet.dev/v1alpha1
kind: Session
metadata:
  name: web
spec:
  command: [sleep, '1000']
  restartPolicy: Always
  backoff:
    initialDelay: 10s
    multiplier: 2
    maxDelay: 1m
";

#[test]
fn an_exit_is_acknowledged_once_saved_and_the_restart_waits_for_the_clock() {
    let mut r = rig(&[("web.yaml", FAILING)]);
    r.c.pass(true);
    let spawns = r.keeper.spawns();
    assert_eq!(spawns.len(), 1, "{spawns:?}");
    let (tag, session, attempt) = spawns[0].clone();
    assert_eq!((session.as_str(), attempt), ("web", 1));

    // The keeper's reply: the session runs.
    let mut child = OwnChild::start();
    let pid = child.pid();
    let started = r.c.child_of("web", pid);
    r.c.on_keeper(FromKeeper::Spawned {
        tag,
        child: started.clone(),
    });
    r.c.pass(false);
    let st = status_of(&r.dir, "web", "web");
    assert_eq!(st["phase"], "Running", "{st:#}");
    assert_eq!(st["pid"], pid, "{st:#}");

    // It exits with code 3: not acknowledged before its status is saved.
    child.end();
    r.c.on_keeper(FromKeeper::Exited(ExitRecord {
        child: started,
        status: Some(core::ExitStatus::Code(3)),
        at: r.clock.now(),
    }));
    assert!(
        !r.keeper.acked(pid),
        "acknowledged before its status was written"
    );
    let wake = r.c.pass(false);
    assert!(r.keeper.acked(pid), "{:?}", r.keeper.asked());
    let st = status_of(&r.dir, "web", "web");
    assert_eq!(st["lastExit"]["exitCode"], 3, "{st:#}");
    assert_eq!(st["phase"], "Recovering", "{st:#}");

    // Nothing starts while the clock stands still, and the loop is told
    // to wake when the backoff ends.
    assert_eq!(r.keeper.spawns().len(), 1);
    let due = r.clock.now() + chrono::Duration::seconds(10);
    assert_eq!(
        wake,
        Some(due),
        "the next wake-up is the end of the backoff"
    );
    r.c.pass(false);
    assert_eq!(r.keeper.spawns().len(), 1, "{:?}", r.keeper.asked());

    // The clock reaches the end of the backoff: attempt 2 is asked for.
    r.clock.advance(std::time::Duration::from_secs(10));
    r.c.pass(false);
    let spawns = r.keeper.spawns();
    assert_eq!(spawns.len(), 2, "{spawns:?}");
    assert_eq!((spawns[1].1.as_str(), spawns[1].2), ("web", 2));
}

#[test]
fn an_exit_of_a_pid_nobody_spawned_is_acknowledged_and_changes_nothing() {
    let mut r = rig(&[("web.yaml", FAILING)]);
    r.c.pass(true);
    let (tag, _, _) = r.keeper.spawns()[0].clone();
    let child = OwnChild::start();
    let started = r.c.child_of("web", child.pid());
    r.c.on_keeper(FromKeeper::Spawned {
        tag,
        child: started,
    });
    r.c.pass(false);
    let before = status_of(&r.dir, "web", "web");

    // A duplicate the keeper killed, or an exit already saved: a pid the
    // controller does not know.
    let mut stranger = OwnChild::start();
    let stranger_pid = stranger.pid();
    stranger.end();
    let unknown = Child {
        pid: stranger_pid,
        ..r.c.child_of("web", stranger_pid)
    };
    r.c.on_keeper(FromKeeper::Exited(ExitRecord {
        child: unknown,
        status: Some(core::ExitStatus::Code(0)),
        at: r.clock.now(),
    }));
    r.c.pass(false);
    assert!(r.keeper.acked(stranger_pid), "{:?}", r.keeper.asked());
    let after = status_of(&r.dir, "web", "web");
    assert_eq!(after["phase"], "Running", "{after:#}");
    assert_eq!(after["pid"], before["pid"]);
    assert_eq!(r.keeper.spawns().len(), 1);
}

#[test]
fn a_spawn_failure_reply_is_a_failed_attempt_retried_after_the_backoff() {
    let mut r = rig(&[("web.yaml", FAILING)]);
    r.c.pass(true);
    let (tag, _, _) = r.keeper.spawns()[0].clone();
    r.c.on_keeper(FromKeeper::SpawnFailed {
        tag,
        error: crate::runtime::process::SpawnError {
            reason: Reason::SpawnFailed,
            message: "exec failed: no such file".into(),
        },
    });
    let wake = r.c.pass(false);
    let st = status_of(&r.dir, "web", "web");
    assert_eq!(st["phase"], "Recovering", "{st:#}");
    assert_eq!(st["reason"], "SpawnFailed", "{st:#}");
    assert!(wake.is_some_and(|t| t > r.clock.now()), "{wake:?}");
    assert_eq!(r.keeper.spawns().len(), 1);
    r.clock.advance(std::time::Duration::from_secs(10));
    r.c.pass(false);
    assert_eq!(r.keeper.spawns().len(), 2, "{:?}", r.keeper.asked());
}

#[test]
fn a_reply_for_a_tag_never_asked_for_starts_nothing() {
    let mut r = rig(&[("web.yaml", FAILING)]);
    r.c.pass(true);
    let (tag, _, _) = r.keeper.spawns()[0].clone();
    let child = OwnChild::start();
    let stray = r.c.child_of("web", child.pid());
    r.c.on_keeper(FromKeeper::Spawned {
        tag: tag + 1000,
        child: stray,
    });
    r.c.pass(false);
    // Still waiting for its own reply (its first status is written once
    // the spawn is answered), and no pid is taken for it.
    let run = &r.c.model.state.sessions["web"].run;
    assert!(matches!(run, Run::Starting { .. }), "{run:?}");
    assert!(r.c.procs.running().is_empty(), "{:?}", r.c.procs.running());
    assert!(!r.dir.join("web.status.yaml").exists());
}

/// Readings of `/proc` the test chooses, per pid.
#[derive(Clone, Default)]
struct FakeProcfs(Arc<Mutex<Readings>>, Arc<Mutex<HashMap<u32, u32>>>);

/// Each pid's reading and start ticks (`None`: gone).
type Readings = HashMap<u32, (crate::runtime::monitor::Sample, Option<u64>)>;

impl FakeProcfs {
    fn set(&self, pid: u32, memory_bytes: u64, ticks: Option<u64>) {
        let sample = crate::runtime::monitor::Sample {
            memory_bytes,
            cpu_seconds: 0.5,
            processes: 1,
        };
        self.0
            .lock()
            .expect("the readings")
            .insert(pid, (sample, ticks));
    }
}

impl FakeProcfs {
    /// How many times `pid`'s tree was read.
    fn reads(&self, pid: u32) -> u32 {
        self.1
            .lock()
            .expect("the counts")
            .get(&pid)
            .copied()
            .unwrap_or(0)
    }
}

impl crate::runtime::monitor::Procfs for FakeProcfs {
    fn sample(&self, pid: u32) -> Option<crate::runtime::monitor::Sample> {
        *self.1.lock().ok()?.entry(pid).or_default() += 1;
        let m = self.0.lock().ok()?;
        m.get(&pid).filter(|(_, t)| t.is_some()).map(|(s, _)| *s)
    }
    fn start_ticks(&self, pid: u32) -> Option<u64> {
        self.0.lock().ok()?.get(&pid).and_then(|(_, t)| *t)
    }
}

/// Starts `web` on a child the test owns, known to `procfs` with `ticks`.
fn run_web(r: &mut Rig, procfs: &FakeProcfs, memory: u64) -> (OwnChild, Child) {
    r.c.procfs = Arc::new(procfs.clone());
    r.c.pass(true);
    let (tag, _, _) = r.keeper.spawns()[0].clone();
    let child = OwnChild::start();
    let started = Child {
        start_ticks: Some(4242),
        ..r.c.child_of("web", child.pid())
    };
    procfs.set(child.pid(), memory, Some(4242));
    r.c.on_keeper(FromKeeper::Spawned {
        tag,
        child: started.clone(),
    });
    r.c.pass(false);
    (child, started)
}

const LIMITED: &str = "apiVersion: sessionlet.dev/v1alpha1
kind: Session
metadata:
  name: web
spec:
  command: [sleep, '1000']
  restartPolicy: Never
  resources:
    maxMemory: 100Mi
";

#[test]
fn a_sampled_reading_over_the_memory_limit_stops_the_session() {
    let mut r = rig(&[("web.yaml", LIMITED)]);
    let procfs = FakeProcfs::default();
    let (mut child, started) = run_web(&mut r, &procfs, 50 << 20);
    r.c.sample_usage();
    r.c.pass(false);
    let st = status_of(&r.dir, "web", "web");
    assert_eq!(st["usage"]["memoryBytes"], 50u64 << 20, "{st:#}");
    assert!(
        child.0.try_wait().expect("its state").is_none(),
        "stopped under its limit"
    );

    // The next reading is over the limit: its process is signalled.
    procfs.set(child.pid(), 200 << 20, Some(4242));
    r.c.sample_usage();
    r.c.pass(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("its state") {
            break s;
        }
        assert!(Instant::now() < deadline, "the session was not signalled");
        std::thread::yield_now();
    };
    assert!(!status.success());
    r.c.on_keeper(FromKeeper::Exited(ExitRecord {
        child: started,
        status: Some(core::ExitStatus::Signal(15)),
        at: r.clock.now(),
    }));
    r.c.pass(false);
    let st = status_of(&r.dir, "web", "web");
    assert_eq!(st["lastExit"]["reason"], "MemoryLimitExceeded", "{st:#}");
    assert_eq!(st["phase"], "Failed", "{st:#}");
}

#[test]
fn with_the_keeper_gone_a_session_missing_at_two_resyncs_vanished() {
    let mut r = rig(&[("web.yaml", LIMITED)]);
    let procfs = FakeProcfs::default();
    let (child, _) = run_web(&mut r, &procfs, 1 << 20);
    // While the keeper reports exits, nothing is guessed from /proc.
    procfs.set(child.pid(), 0, None);
    r.c.check_vanished();
    r.c.check_vanished();
    r.c.pass(false);
    assert_eq!(status_of(&r.dir, "web", "web")["phase"], "Running");

    // The keeper is gone: a pid seen gone once may still have a report on
    // its way; gone at the next resync too, it vanished.
    r.c.link.events_open = false;
    r.c.check_vanished();
    r.c.pass(false);
    assert_eq!(status_of(&r.dir, "web", "web")["phase"], "Running");
    r.c.check_vanished();
    r.c.pass(false);
    let st = status_of(&r.dir, "web", "web");
    assert_eq!(st["lastExit"]["reason"], "ExitedWhileAway", "{st:#}");
    assert!(st["pid"].is_null(), "{st:#}");
}

#[test]
fn a_session_whose_readings_decide_nothing_is_read_one_round_in_twelve() {
    let plain = FAILING.replace("restartPolicy: Always", "restartPolicy: Never");
    for (manifest, every_round) in [(LIMITED, true), (plain.as_str(), false)] {
        let mut r = rig(&[("web.yaml", manifest)]);
        let procfs = FakeProcfs::default();
        let (child, _) = run_web(&mut r, &procfs, 1 << 20);
        for _ in 0..24 {
            r.c.sample_usage();
        }
        let reads = procfs.reads(child.pid());
        if every_round {
            assert_eq!(reads, 24, "a limited session is read at every round");
        } else {
            // Its first round, then one in 12.
            assert!((2..=3).contains(&reads), "{reads} reads in 24 rounds");
            // Its first reading is in the status at once.
            r.c.pass(false);
            let st = status_of(&r.dir, "web", "web");
            assert_eq!(st["usage"]["memoryBytes"], 1u64 << 20, "{st:#}");
        }
    }
}
