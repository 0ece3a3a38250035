//! The randomised crash test: sessions of every restart policy, manifests
//! added, edited and removed, and the controller SIGKILLed at random
//! moments many times. Every session journals its own starts and exits.
//! The checker asserts at most one live process per session at every
//! check, every exit accounted for exactly once in the statuses, and no
//! orphan after the final drain. Bounded in time; the seed is printed so
//! that a failure can be replayed (`SESSIONLET_CRASH_SEED=N`).

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn tag(dir: &Path, name: &str) -> String {
    format!("{}-{name}", dir.display())
}

fn journal(dir: &Path) -> PathBuf {
    dir.parent().unwrap_or(dir).join("journal")
}

/// `(starts, exits)` per session from the journal; exits as (pid, code).
/// Start pids, and exits as (pid, code), of one session.
type Runs = (Vec<u32>, Vec<(u32, String)>);

fn journaled(dir: &Path) -> BTreeMap<String, Runs> {
    let mut out: BTreeMap<String, Runs> = BTreeMap::new();
    for line in std::fs::read_to_string(journal(dir))
        .unwrap_or_default()
        .lines()
    {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["start", name, pid] => {
                if let Ok(p) = pid.parse() {
                    out.entry(name.to_string()).or_default().0.push(p);
                }
            }
            ["exit", name, pid, code] => {
                if let Ok(p) = pid.parse() {
                    out.entry(name.to_string())
                        .or_default()
                        .1
                        .push((p, code.to_string()));
                }
            }
            _ => {}
        }
    }
    out
}

/// A session journaling its start and (when it ends by itself or by
/// SIGTERM) its exit. `body` sets `code`.
fn manifest(dir: &Path, name: &str, policy: &str, body: &str, extra: &str) -> String {
    let script = format!(
        "echo start {name} $$ >> \\\"$JOURNAL\\\"; trap 'echo exit {name} $$ term >> \\\"$JOURNAL\\\"; exit 143' TERM; {body}; echo exit {name} $$ $code >> \\\"$JOURNAL\\\"; exit $code"
    );
    format!(
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Session\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n  backoff: {{initialDelay: 10ms, maxDelay: 50ms}}\n  terminationGracePeriod: 5s\n{extra}  env:\n    SESSION_TAG: \"{}\"\n    JOURNAL: \"{}\"\n  command: [\"/bin/sh\", \"-c\", \"{script}\"]\n",
        tag(dir, name),
        journal(dir).display()
    )
}

const FOREVER: &str = "while :; do sleep 0.2; done; code=0";
/// Exits after a moment with a code from its pid: 0, 1 or 2.
const FLAP: &str = "code=$(( $$ % 3 ))";
const FLAKY: &str = "sleep 0.2; code=$(( $$ % 2 ))";

fn check_one_copy(dir: &Path, names: &[String], when: &str) {
    for n in names {
        let copies = live_copies(&tag(dir, n));
        assert!(
            copies.len() <= 1,
            "{when}: {n} has {} live copies: {copies:?}",
            copies.len()
        );
    }
}

#[test]
fn random_controller_kills_never_duplicate_lose_or_orphan_anything() {
    let seed = std::env::var("SESSIONLET_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("SESSIONLET_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let (_tmp, dir) = sessions_dir();
    let _guard = KeeperGuard(dir.clone());

    let mut all: Vec<String> = Vec::new();
    for i in 0..12 {
        let n = format!("flap-{i}");
        write_file(
            &dir.join(format!("{n}.yaml")),
            &manifest(&dir, &n, "Always", FLAP, ""),
        );
        all.push(n);
    }
    for i in 0..2 {
        let n = format!("job-{i}");
        write_file(
            &dir.join(format!("{n}.yaml")),
            &manifest(&dir, &n, "OnFailure", FLAKY, "  maxRetries: 1000\n"),
        );
        all.push(n);
    }
    for i in 0..2 {
        let n = format!("once-{i}");
        write_file(
            &dir.join(format!("{n}.yaml")),
            &manifest(&dir, &n, "Never", FLAP, ""),
        );
        all.push(n);
    }
    // Long-running sessions the test edits, removes and adds back.
    let mut long: Vec<String> = Vec::new();
    for i in 0..3 {
        let n = format!("long-{i}");
        write_file(
            &dir.join(format!("{n}.yaml")),
            &manifest(&dir, &n, "Always", FOREVER, ""),
        );
        long.push(n.clone());
        all.push(n);
    }
    let mut edits = 0u32;
    let started = Instant::now();
    let mut kills = 0;
    while kills < 150 && started.elapsed() < Duration::from_secs(90) {
        let mut c = Controller::start(&dir, &[]);
        // Up and supervising: its first pass is recorded.
        wait_passes(&dir, c.pid(), 1);
        // The random moment of the kill (fault injection, not synchronisation).
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        match rng.below(4) {
            0 => {
                // Edit a long-running session: a graceful restart.
                let n = &long[rng.below(long.len() as u64) as usize];
                edits += 1;
                write_file(
                    &dir.join(format!("{n}.yaml")),
                    &manifest(&dir, n, "Always", FOREVER, "").replace(
                        "SESSION_TAG",
                        &format!("EDIT: \"{edits}\"\n    SESSION_TAG"),
                    ),
                );
            }
            1 => {
                // Remove one, or bring a removed one back.
                let n = &long[rng.below(long.len() as u64) as usize];
                let p = dir.join(format!("{n}.yaml"));
                if p.exists() {
                    let _ = std::fs::remove_file(&p);
                } else {
                    write_file(&p, &manifest(&dir, n, "Always", FOREVER, ""));
                }
            }
            2 => {
                // A new session.
                let n = format!("new-{kills}");
                write_file(
                    &dir.join(format!("{n}.yaml")),
                    &manifest(&dir, &n, "Always", FOREVER, ""),
                );
                long.push(n.clone());
                all.push(n);
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(rng.below(100)));
        check_one_copy(&dir, &all, &format!("before kill {kills}"));
        c.kill();
        kills += 1;
        check_one_copy(&dir, &all, &format!("after kill {kills}"));
    }
    eprintln!("{kills} controller kills in {:?}", started.elapsed());

    // A last controller settles everything.
    let mut c = Controller::start(&dir, &[]);
    for n in all
        .iter()
        .filter(|n| n.starts_with("job-") || n.starts_with("once-"))
    {
        wait_status(&dir, n, "a terminal phase", |s| {
            matches!(s["status"]["phase"].as_str(), Some("Completed" | "Failed"))
        });
    }
    wait_passes(&dir, c.pid(), 3);
    check_one_copy(&dir, &all, "settled");
    assert!(c.stop().success(), "the final drain: {}", c.log());
    for n in &all {
        assert!(
            live_copies(&tag(&dir, n)).is_empty(),
            "{n} left running after the drain"
        );
    }
    wait_for("the keeper to exit after the drain", || {
        keeper_of(&dir).is_none().then_some(())
    });

    let j = journaled(&dir);
    for n in all.iter().filter(|n| n.starts_with("once-")) {
        let (starts, exits) = j.get(n).cloned().unwrap_or_default();
        assert_eq!(starts.len(), 1, "{n} (Never) ran once: {starts:?}");
        let s = status(&dir, n).expect("status");
        let code = &exits.first().map(|e| e.1.clone()).unwrap_or_default();
        assert_eq!(
            s["status"]["lastExit"]["exitCode"].to_string(),
            *code,
            "{n}: the real exit code: {s:#?}"
        );
        let want = if code == "0" { "Completed" } else { "Failed" };
        assert_eq!(s["status"]["phase"], want, "{n}: {s:#?}");
    }
    for n in all.iter().filter(|n| n.starts_with("job-")) {
        let (starts, exits) = j.get(n).cloned().unwrap_or_default();
        let s = status(&dir, n).expect("status");
        assert_eq!(s["status"]["phase"], "Completed", "{n}: {s:#?}");
        assert_eq!(
            exits.len(),
            starts.len(),
            "{n}: every run exited: {exits:?}"
        );
        let zeros = exits.iter().filter(|e| e.1 == "0").count();
        assert_eq!(
            zeros, 1,
            "{n} (OnFailure) never ran again after exit 0: {exits:?}"
        );
        assert_eq!(
            exits.last().map(|e| e.1.as_str()),
            Some("0"),
            "{n}: {exits:?}"
        );
        assert_eq!(
            s["status"]["restarts"].as_u64(),
            Some(starts.len() as u64 - 1),
            "{n}: one restart per failed exit, {} starts: {s:#?}",
            starts.len()
        );
    }
    // Every flapping session: one attempt per start, one restart per exit,
    // never more, never less (read after the drain: nothing starts then).
    for n in all.iter().filter(|n| n.starts_with("flap-")) {
        let (starts, _) = j.get(n).cloned().unwrap_or_default();
        let s = status(&dir, n).expect("status");
        // The final drain may stop an attempt that exec'd but had not yet
        // run its first line (the journal entry): that one attempt, and only
        // when the drain is what ended it, has no start in the journal.
        let last = &s["status"]["lastExit"];
        let drained_before_its_first_line = last["reason"] == "ControllerStopped"
            && last["attempt"] == s["status"]["attempt"]
            && s["status"]["attempt"].as_u64() == Some(starts.len() as u64 + 1);
        let attempts = starts.len() as u64 + u64::from(drained_before_its_first_line);
        assert_eq!(
            s["status"]["attempt"].as_u64(),
            Some(attempts),
            "{n}: every start known, {} starts: {s:#?}",
            starts.len()
        );
        assert_eq!(
            s["status"]["restarts"].as_u64(),
            Some(attempts - 1),
            "{n}: one restart per exit, {} starts: {s:#?}",
            starts.len()
        );
    }
}
