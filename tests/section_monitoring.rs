//! Monitoring (issue 5): usage in status and `get -o wide`, memory limits in
//! both modes (cgroup OOM kill and sampled), the CPU time limit, stale
//! sessions, crash analysis, the metrics endpoint, controller health, and
//! that usage sampling costs per session rather than per host process.
//!
//! Every test runs the real binary on a temporary directory and waits on
//! status files, the controller's log, /metrics and /proc with deadlines.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

// ---------------------------------------------------------------------------
// Helpers

/// The directory as a command-line argument.
fn arg(dir: &Path) -> &str {
    dir.to_str().expect("UTF-8 temporary path")
}

/// Runs `sessionlet ARGS` and returns its stdout, failing on a non-zero exit.
fn cli_ok(args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sessionlet");
    assert!(
        out.status.success(),
        "sessionlet {args:?} failed with {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A Pool manifest with the given spec body (YAML, as under `spec:`).
fn pool(name: &str, spec: &str) -> String {
    let body: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: {name}\nspec:\n{body}"
    )
}

/// A YAML double-quoted scalar holding `s`.
fn yq(s: &str) -> String {
    serde_json::to_string(s).expect("a JSON string is a YAML double-quoted scalar")
}

/// The status's condition of `kind`.
fn condition<'a>(s: &'a Value, kind: &str) -> Option<&'a Value> {
    s["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// The controller's status file (any controller).
fn controller_status(dir: &Path) -> Option<Value> {
    controller_status_of(dir)
}

/// The controller status's `extra.memoryLimits`.
fn memory_limits_mode(dir: &Path) -> String {
    wait_for(
        "the controller status to say how memory limits work",
        || {
            controller_status(dir)?["extra"]["memoryLimits"]
                .as_str()
                .map(String::from)
        },
    )
}

/// Checks an `analysis` block has every field with a sensible value, and returns its type.
fn check_analysis(a: &Value, context: &str) -> String {
    let kind = a["type"]
        .as_str()
        .unwrap_or_else(|| panic!("{context}: analysis without a type: {a}"));
    for key in ["rootCause", "recommendation"] {
        assert!(
            a[key].as_str().is_some_and(|s| !s.trim().is_empty()),
            "{context}: analysis.{key} is missing or empty: {a}"
        );
    }
    let confidence = a["confidence"]
        .as_f64()
        .unwrap_or_else(|| panic!("{context}: analysis.confidence is not a number: {a}"));
    assert!(
        (0.0..=1.0).contains(&confidence),
        "{context}: confidence {confidence} is outside 0..=1: {a}"
    );
    assert!(
        a["suggestedFixes"]
            .as_array()
            .is_some_and(|f| !f.is_empty() && f.iter().all(|x| x.as_str().is_some())),
        "{context}: analysis.suggestedFixes is not a non-empty list of strings: {a}"
    );
    kind.to_string()
}

/// The crash dump that `lastExit.crashDump` names (relative to the status directory).
fn crash_dump_of(status_dir: &Path, s: &Value) -> Value {
    let rel = s["status"]["lastExit"]["crashDump"]
        .as_str()
        .unwrap_or_else(|| panic!("lastExit names no crash dump: {s}"))
        .to_string();
    let path = status_dir.join(&rel);
    wait_for(&format!("the crash dump {}", path.display()), || {
        status_docs(&path)?.into_iter().next()
    })
}

/// Waits until `STEM.status.yaml` satisfies `pred`; on timeout the panic
/// shows the last status seen.
fn wait_until(dir: &Path, stem: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_until_within(DEADLINE, dir, stem, what, pred)
}

/// [`wait_until`] with its own deadline.
fn wait_until_within(
    deadline: Duration,
    dir: &Path,
    stem: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Some(s) = status(dir, stem) {
            if pred(&s) {
                return s;
            }
            last = Some(s);
        }
        if start.elapsed() > deadline {
            panic!(
                "timed out after {deadline:?} waiting for {stem}: {what}; last status:\n{}",
                last.map(|s| serde_json::to_string_pretty(&s).unwrap_or_default())
                    .unwrap_or_else(|| "(none)".into())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a phase, showing the last status on timeout.
fn wait_for_phase(dir: &Path, stem: &str, phase: &str) -> Value {
    wait_until(dir, stem, &format!("phase {phase}"), |s| {
        s["status"]["phase"] == phase
    })
}

/// Waits for the session's last exit to have `reason`, and returns the status.
fn wait_last_exit(dir: &Path, stem: &str, reason: &str) -> Value {
    wait_until(dir, stem, &format!("lastExit.reason {reason}"), |s| {
        s["status"]["lastExit"]["reason"] == reason
    })
}

/// The address the controller's metrics endpoint is bound to, from its log
/// line `metrics on http://ADDR/metrics` (the controller was given port 0).
fn metrics_addr(c: &Controller) -> String {
    let addr = wait_for("the controller to log its metrics address", || {
        let log = c.log();
        let start = log.find("metrics on http://")? + "metrics on http://".len();
        let rest = &log[start..];
        let end = rest.find("/metrics")?;
        Some(rest[..end].to_string())
    });
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "the metrics endpoint must be bound where told (127.0.0.1) on a real port, got {addr}"
    );
    addr
}

/// A tiny HTTP/1.1 GET over a plain TCP stream: (status code, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in the response to {path}: {text:?}"));
    let code = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in the response to {path}: {head:?}"));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (code, body)
}

/// Decodes a chunked HTTP/1.1 body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = body.split_once("\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
}

/// Scrapes `/metrics` and parses it with a real Prometheus text parser.
fn scrape(addr: &str) -> prometheus_parse::Scrape {
    let (code, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200, "/metrics answered {code}: {body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text ({e}):\n{body}"))
}

/// The value of a counter, gauge or untyped sample (OpenMetrics counters are
/// typed under their name without `_total`, so the parser sees them untyped).
fn number(v: &prometheus_parse::Value) -> Option<f64> {
    match v {
        prometheus_parse::Value::Counter(x)
        | prometheus_parse::Value::Gauge(x)
        | prometheus_parse::Value::Untyped(x) => Some(*x),
        _ => None,
    }
}

/// The value of `metric` with the given labels (all must match), if present.
fn metric(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .find_map(|s| number(&s.value))
}

/// The bucket counts of a histogram, if present.
fn histogram(scrape: &prometheus_parse::Scrape, name: &str) -> Option<Vec<(f64, f64)>> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find_map(|s| match &s.value {
            prometheus_parse::Value::Histogram(b) => {
                Some(b.iter().map(|h| (h.less_than, h.count)).collect())
            }
            _ => None,
        })
}

/// Processes this test started, killed by pid (and reaped) on drop.
struct Spawned(Vec<Child>);

impl Drop for Spawned {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// Starts `n` idle `sleep` processes unrelated to any session.
fn idle_processes(n: usize) -> Spawned {
    let mut out = Spawned(Vec::new());
    for _ in 0..n {
        out.0.push(
            Command::new("sleep")
                .arg("1000")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sleep"),
        );
    }
    out
}

/// The `syscr` (read system calls) of a process, from `/proc/PID/io`.
fn read_syscalls(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/io: {e}"));
    io.lines()
        .find_map(|l| l.strip_prefix("syscr:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("syscr in /proc/PID/io")
}

/// Python allocating `total_mib` MiB in 10 MiB steps (touching every page),
/// then sleeping.
fn allocating_python(total_mib: u32) -> String {
    let script = format!(
        "import time\n\
         chunks = []\n\
         for i in range({steps}):\n\
         \x20   chunks.append(b'x' * (10 << 20))\n\
         \x20   time.sleep(0.2)\n\
         print('allocated', flush=True)\n\
         time.sleep(1000)\n",
        steps = total_mib / 10
    );
    format!("command:\n- python3\n- -c\n- {}\n", yq(&script))
}

// ---------------------------------------------------------------------------
// Usage

#[test]
fn a_running_session_reports_memory_peak_and_cpu_in_status_and_get_wide() {
    let (_tmp, dir) = sessions_dir();
    // The memory lives in a child of the shell: only a whole-tree sample sees it.
    let script = "data = b'x' * (50 << 20)\n\
                  n = sum(range(3 * 10 ** 6))\n\
                  print('ready', flush=True)\n\
                  import time\n\
                  time.sleep(1000)\n";
    let shell = format!("python3 -c {} & wait", shell_quote(script));
    write_file(
        &dir.join("hog.yaml"),
        &session("hog", &format!("command: [/bin/sh, -c, {}]", yq(&shell))),
    );
    let _c = Controller::start(&dir, &["--usage-interval", "1s"]);
    let s = wait_until(&dir, "hog", "usage with the 50 MiB of its child", |s| {
        s["status"]["phase"] == "Running"
            && s["status"]["usage"]["memoryBytes"]
                .as_u64()
                .is_some_and(|m| m >= 40 << 20)
    });
    let usage = &s["status"]["usage"];
    let memory = usage["memoryBytes"].as_u64().expect("memoryBytes");
    let peak = usage["peakMemoryBytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no peakMemoryBytes: {usage}"));
    assert!(peak >= memory, "peak {peak} < current {memory}: {usage}");
    let cpu = usage["cpuSeconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("no cpuSeconds: {usage}"));
    assert!(cpu >= 0.0, "negative CPU time: {usage}");
    // The child burnt CPU before printing: once it has, the tree's CPU time is positive.
    let s = wait_until(&dir, "hog", "cpuSeconds > 0 after the work", |s| {
        s["status"]["usage"]["cpuSeconds"]
            .as_f64()
            .is_some_and(|c| c > 0.0)
    });
    assert!(
        s["status"]["lastActivityAt"].as_str().is_some(),
        "a session that printed has lastActivityAt: {s}"
    );

    let out = cli_ok(&["get", "--dir", arg(&dir), "-o", "wide"]);
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} column:\n{out}"))
    };
    let (mem_col, cpu_col) = (col("MEMORY"), col("CPU"));
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some("hog"))
        .unwrap_or_else(|| panic!("no hog row:\n{out}"))
        .split_whitespace()
        .collect();
    let mem = row[mem_col];
    let mib: u64 = mem
        .strip_suffix("Mi")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("MEMORY is not N Mi: {mem:?}\n{out}"));
    assert!(mib >= 40, "MEMORY {mem} does not show the 50 MiB:\n{out}");
    assert!(
        row[cpu_col].ends_with('s') && row[cpu_col] != "-",
        "CPU column {:?}:\n{out}",
        row[cpu_col]
    );
}

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

// ---------------------------------------------------------------------------
// Memory limits

#[test]
fn a_session_over_its_memory_limit_is_stopped_with_memory_limit_exceeded_when_sampled() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("hog.yaml"),
        &session(
            "hog",
            &format!(
                "{}resources:\n  maxMemory: 100Mi\nrestartPolicy: Never\n",
                allocating_python(300)
            ),
        ),
    );
    let _c = Controller::start(
        &dir,
        &["--usage-interval", "1s", "--memory-limits", "sampled"],
    );
    let mode = memory_limits_mode(&dir);
    assert!(
        mode.starts_with("sampled"),
        "--memory-limits sampled is not reported in controller status: {mode:?}"
    );
    let s = wait_last_exit(&dir, "hog", "MemoryLimitExceeded");
    let last = &s["status"]["lastExit"];
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("100Mi")),
        "the message names the limit: {last}"
    );
    let kind = check_analysis(&last["analysis"], "lastExit");
    assert_eq!(kind, "OOM", "{last}");
    let dump = crash_dump_of(&dir, &s);
    assert_eq!(dump["exit"]["reason"], "MemoryLimitExceeded", "{dump}");
    assert_eq!(
        check_analysis(&dump["exit"]["analysis"], "crash dump"),
        "OOM",
        "{dump}"
    );
    wait_for_phase(&dir, "hog", "Failed");
}

#[test]
fn a_session_over_its_memory_limit_is_oom_killed_in_its_cgroup_by_default() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("hog.yaml"),
        &session(
            "hog",
            &format!(
                "{}resources:\n  maxMemory: 100Mi\nrestartPolicy: Never\n",
                allocating_python(300)
            ),
        ),
    );
    let _c = Controller::start(&dir, &["--usage-interval", "1s"]);
    let mode = memory_limits_mode(&dir);
    if !mode.contains("cgroup") || mode.starts_with("sampled") {
        eprintln!(
            "SKIPPED: memory cgroups are not available to the controller here ({mode}); \
             the kernel OOM kill path cannot be checked"
        );
        // The sampled mode must still stop it.
        let s = wait_last_exit(&dir, "hog", "MemoryLimitExceeded");
        check_analysis(&s["status"]["lastExit"]["analysis"], "lastExit");
        return;
    }
    let s = wait_until(&dir, "hog", "an ended attempt", |s| {
        s["status"]["lastExit"].is_object()
    });
    let last = &s["status"]["lastExit"];
    assert_eq!(
        last["reason"], "OOMKilled",
        "in cgroup mode ({mode}) the kernel kills it and the OOM counter says so: {last}"
    );
    assert_eq!(
        last["signal"], "SIGKILL",
        "the OOM killer sends SIGKILL: {last}"
    );
    assert_eq!(
        check_analysis(&last["analysis"], "lastExit"),
        "OOM",
        "{last}"
    );
    // The event log says so too, as a Warning about this session.
    let ev = common::wait_event(&dir, "hog", "OOMKilled");
    assert_eq!(ev["type"], "Warning", "{ev}");
    assert_eq!(ev["object"]["kind"], "Session", "{ev}");
    let dump = crash_dump_of(&dir, &s);
    assert_eq!(dump["exit"]["reason"], "OOMKilled", "{dump}");
    assert_eq!(
        check_analysis(&dump["exit"]["analysis"], "crash dump"),
        "OOM",
        "{dump}"
    );
    wait_for_phase(&dir, "hog", "Failed");
}

#[test]
fn a_busy_session_past_its_cpu_time_limit_is_stopped_with_cpu_time_limit_exceeded() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("spin.yaml"),
        &session(
            "spin",
            "command: [/bin/sh, -c, 'while :; do :; done']\n\
             resources:\n  maxCpuTime: 1s\n\
             restartPolicy: Never\n",
        ),
    );
    let _c = Controller::start(&dir, &["--usage-interval", "1s"]);
    let s = wait_last_exit(&dir, "spin", "CpuTimeLimitExceeded");
    let last = &s["status"]["lastExit"];
    assert!(
        last["message"].as_str().is_some_and(|m| m.contains("1s")),
        "the message names the limit: {last}"
    );
    // The analysis documents the CPU time limit as a Timeout.
    assert_eq!(
        check_analysis(&last["analysis"], "lastExit"),
        "Timeout",
        "{last}"
    );
    let s = wait_for_phase(&dir, "spin", "Failed");
    assert!(s["status"]["pid"].is_null(), "{s}");
}

// ---------------------------------------------------------------------------
// Stale sessions

#[test]
fn a_silent_session_turns_stale_and_back_when_output_resumes() {
    let (tmp, dir) = sessions_dir();
    let trigger = tmp.path().join("speak-again");
    write_file(
        &dir.join("quiet.yaml"),
        &session(
            "quiet",
            &format!(
                "command: [/bin/sh, -c, 'echo a; while [ ! -f \"$T\" ]; do sleep 0.2; done; \
                 while :; do echo b; sleep 0.5; done']\n\
                 env: {{T: {}}}\n\
                 staleAfter: 2s\n",
                yq(arg(&trigger))
            ),
        ),
    );
    let _c = Controller::start(&dir, &["--usage-interval", "1s"]);
    let s = wait_until(&dir, "quiet", "condition Stale=True", |s| {
        condition(s, "Stale").is_some_and(|c| c["status"] == "True")
    });
    let stale = condition(&s, "Stale").expect("Stale condition");
    let message = stale["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no output since") && message.contains("2s"),
        "the Stale message says how long it has been silent: {stale}"
    );
    assert_eq!(s["status"]["phase"], "Running", "Warn only marks it: {s}");
    let silent_since = s["status"]["lastActivityAt"]
        .as_str()
        .unwrap_or_else(|| panic!("no lastActivityAt: {s}"))
        .to_string();

    std::fs::write(&trigger, "").expect("trigger");
    let s = wait_until(&dir, "quiet", "condition Stale=False again", |s| {
        condition(s, "Stale").is_some_and(|c| c["status"] == "False")
    });
    let later = s["status"]["lastActivityAt"].as_str().unwrap_or_default();
    assert!(
        later > silent_since.as_str(),
        "lastActivityAt moved on with the output ({silent_since} -> {later}): {s}"
    );
    assert_eq!(s["status"]["restarts"], 0, "{s}");
}

#[test]
fn a_stale_session_with_on_stale_restart_is_stopped_and_restarted_by_its_policy() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("quiet.yaml"),
        &session(
            "quiet",
            "command: [/bin/sh, -c, 'echo hello; sleep 1000']\n\
             staleAfter: 2s\n\
             onStale: Restart\n\
             restartPolicy: OnFailure\n\
             maxRetries: 1\n\
             backoff: {initialDelay: 1s}\n",
        ),
    );
    let _c = Controller::start(&dir, &["--usage-interval", "1s"]);
    let s = wait_last_exit(&dir, "quiet", "Stale");
    let first = &s["status"]["lastExit"];
    assert_eq!(first["attempt"], 1, "{s}");
    assert!(
        first["message"]
            .as_str()
            .is_some_and(|m| m.contains("no output since")),
        "{first}"
    );
    assert_eq!(check_analysis(&first["analysis"], "lastExit"), "Timeout");
    // The policy restarts it; silent again, it is stopped again; maxRetries 1 ends it.
    let s = wait_until(&dir, "quiet", "the second attempt to end Stale", |s| {
        s["status"]["lastExit"]["reason"] == "Stale" && s["status"]["lastExit"]["attempt"] == 2
    });
    assert_eq!(s["status"]["restarts"], 1, "{s}");
    wait_for_phase(&dir, "quiet", "Failed");
}

// ---------------------------------------------------------------------------
// Crash analysis

#[test]
fn crash_dumps_and_last_exit_carry_an_analysis_of_why_it_died() {
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("net.yaml"),
        &session(
            "net",
            "command: [/bin/sh, -c, 'echo \"curl: (7) Failed to connect to 127.0.0.1 port 9: Connection refused\" >&2; exit 7']\n\
             restartPolicy: Never\n",
        ),
    );
    write_file(
        &dir.join("missing.yaml"),
        &session(
            "missing",
            "command: [/nonexistent/sessionlet-no-such-command]\nrestartPolicy: Never\n",
        ),
    );
    let _c = Controller::start(&dir, &[]);

    for (stem, kind, evidence) in [
        ("net", "Network", Some("Connection refused")),
        ("missing", "NotFound", None),
    ] {
        let s = wait_until(&dir, stem, "a last exit with an analysis", |s| {
            s["status"]["lastExit"]["analysis"].is_object()
        });
        let last = &s["status"]["lastExit"];
        assert_eq!(
            check_analysis(&last["analysis"], &format!("{stem} lastExit")),
            kind,
            "{last}"
        );
        if let Some(e) = evidence {
            assert!(
                last["analysis"]["rootCause"]
                    .as_str()
                    .is_some_and(|r| r.contains(e)),
                "the root cause quotes the evidence line: {last}"
            );
        }
        let dump = crash_dump_of(&dir, &s);
        assert_eq!(
            check_analysis(&dump["exit"]["analysis"], &format!("{stem} crash dump")),
            kind,
            "{dump}"
        );
        assert_eq!(
            dump["exit"]["analysis"], last["analysis"],
            "the crash dump and lastExit tell the same story"
        );
    }
}

// ---------------------------------------------------------------------------
// Metrics endpoint

#[test]
fn the_metrics_endpoint_serves_prometheus_text_and_health_checks() {
    let (tmp, dir) = sessions_dir();
    let gate = tmp.path().join("never");
    write_file(
        &dir.join("web.yaml"),
        &session("web", "command: [/bin/sh, -c, 'sleep 1000']"),
    );
    write_file(
        &dir.join("oneshot.yaml"),
        &session(
            "oneshot",
            "command: [/bin/sh, -c, 'exit 3']\nrestartPolicy: Never\n",
        ),
    );
    write_file(&dir.join("p.yaml"), &pool("p", "maxConcurrent: 1"));
    for m in ["m1", "m2"] {
        write_file(
            &dir.join(format!("{m}.yaml")),
            &session(
                m,
                &format!(
                    "command: [/bin/sh, -c, 'while [ ! -e \"$G\" ]; do sleep 0.2; done']\n\
                     env: {{G: {}}}\n\
                     pool: p\n",
                    yq(arg(&gate))
                ),
            ),
        );
    }
    let c = Controller::start(
        &dir,
        &["--usage-interval", "1s", "--metrics-addr", "127.0.0.1:0"],
    );
    let addr = metrics_addr(&c);
    wait_for_phase(&dir, "web", "Running");
    let oneshot = wait_for_phase(&dir, "oneshot", "Failed");
    let exit_reason = oneshot["status"]["lastExit"]["reason"]
        .as_str()
        .expect("reason")
        .to_string();

    let m = wait_for("a scrape with every metric filled in", || {
        let m = scrape(&addr);
        let ready = metric(&m, "sessionlet_session_memory_bytes", &[("session", "web")])
            .is_some_and(|v| v > 0.0)
            && metric(&m, "sessionlet_pool_queue_length", &[("pool", "p")])
                .is_some_and(|v| v >= 1.0)
            && metric(&m, "sessionlet_exits_total", &[("reason", &exit_reason)]).is_some();
        ready.then_some(m)
    });
    let running = metric(&m, "sessionlet_sessions", &[("phase", "Running")])
        .expect("sessionlet_sessions{phase=\"Running\"}");
    assert!(running >= 2.0, "web and one pool member run: {running}");
    assert_eq!(
        metric(&m, "sessionlet_sessions", &[("phase", "Queued")]),
        Some(1.0),
        "one pool member waits"
    );
    assert_eq!(
        metric(&m, "sessionlet_exits_total", &[("reason", &exit_reason)]),
        Some(1.0),
        "oneshot ended once with {exit_reason}"
    );
    assert_eq!(
        metric(&m, "sessionlet_pool_queue_length", &[("pool", "p")]),
        Some(1.0)
    );
    assert!(
        metric(&m, "sessionlet_session_cpu_seconds", &[("session", "web")]).is_some(),
        "CPU per session"
    );
    assert!(
        metric(&m, "sessionlet_session_restarts", &[("session", "web")]).is_some(),
        "restarts per session"
    );
    assert!(
        metric(&m, "sessionlet_reconciles_total", &[]).is_some_and(|v| v >= 1.0),
        "reconcile count"
    );
    for h in [
        "sessionlet_spawn_duration_seconds",
        "sessionlet_reconcile_duration_seconds",
    ] {
        let buckets = histogram(&m, h).unwrap_or_else(|| panic!("no histogram {h}"));
        let total = buckets
            .iter()
            .find(|(le, _)| le.is_infinite())
            .map(|(_, n)| *n)
            .unwrap_or_else(|| panic!("{h} has no +Inf bucket: {buckets:?}"));
        assert!(total >= 1.0, "{h} observed nothing: {buckets:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{h} buckets are cumulative: {buckets:?}"
        );
        let count = metric(&m, &format!("{h}_count"), &[]).expect("_count");
        assert_eq!(count, total, "{h}_count equals the +Inf bucket");
    }
    // Spawn latency: web, oneshot and m1 were spawned.
    let spawned = histogram(&m, "sessionlet_spawn_duration_seconds")
        .and_then(|b| b.last().map(|x| x.1))
        .unwrap_or_default();
    assert!(spawned >= 3.0, "three spawns observed: {spawned}");

    let (code, body) = http_get(&addr, "/healthz");
    assert_eq!(code, 200, "/healthz: {body}");
    let (code, body) = http_get(&addr, "/readyz");
    assert_eq!(code, 200, "/readyz: {body}");
    let (code, _) = http_get(&addr, "/no-such-path");
    assert_eq!(code, 404, "an unknown path");
}

// ---------------------------------------------------------------------------
// Controller health

#[test]
fn the_controller_status_reports_health_figures() {
    let (tmp, dir) = sessions_dir();
    let marker = tmp.path().join("failed-once");
    write_file(
        &dir.join("steady.yaml"),
        &session(
            "steady",
            "command: [/bin/sh, -c, 'while :; do echo tick; sleep 0.5; done']\n\
             staleAfter: 1h\n",
        ),
    );
    write_file(
        &dir.join("quiet.yaml"),
        &session(
            "quiet",
            "command: [/bin/sh, -c, 'sleep 1000']\nstaleAfter: 2s\n",
        ),
    );
    // Fails once (creating the marker), then succeeds.
    write_file(
        &dir.join("flaky.yaml"),
        &session(
            "flaky",
            &format!(
                "command: [/bin/sh, -c, 'if [ -e \"$M\" ]; then sleep 1; exit 0; fi; touch \"$M\"; exit 1']\n\
                 env: {{M: {}}}\n\
                 restartPolicy: OnFailure\n\
                 backoff: {{initialDelay: 1s}}\n",
                yq(arg(&marker))
            ),
        ),
    );
    let _c = Controller::start(&dir, &["--usage-interval", "1s"]);
    let flaky = wait_for_phase(&dir, "flaky", "Completed");
    assert_eq!(flaky["status"]["restarts"], 1, "{flaky}");
    wait_until(&dir, "quiet", "Stale=True", |s| {
        condition(s, "Stale").is_some_and(|c| c["status"] == "True")
    });
    // The file is rewritten on changes (and every 30 s for counters alone).
    let status = wait_for_within(
        Duration::from_secs(120),
        "controller health figures",
        || {
            controller_status(&dir).filter(|c| {
                let e = &c["extra"];
                e["recoveryRate"].as_f64().is_some()
                    && e["staleSessions"].as_u64().is_some_and(|n| n >= 1)
                    && e["healthySessions"].as_u64().is_some_and(|n| n >= 1)
                    && e["averageMemoryBytes"].as_u64().is_some_and(|n| n > 0)
                    && c["sessionsByPhase"]["Completed"].as_u64() == Some(1)
            })
        },
    );
    let e = &status["extra"];
    assert_eq!(e["staleSessions"], 1, "quiet is stale: {e}");
    assert_eq!(e["healthySessions"], 1, "steady runs and is not stale: {e}");
    assert!(
        e["restartsLastHour"].as_u64().is_some_and(|n| n >= 1),
        "flaky restarted once: {e}"
    );
    assert_eq!(
        e["recoveryRate"].as_f64(),
        Some(1.0),
        "flaky's failed attempt was followed by a success: {e}"
    );
    assert!(
        e["averageRunSeconds"].as_f64().is_some_and(|s| s >= 0.0),
        "average run time: {e}"
    );
    let rm = &e["reconcileMillis"];
    let (avg, max) = (rm["average"].as_f64(), rm["max"].as_f64());
    assert!(
        avg.is_some() && max.is_some() && avg <= max,
        "reconcileMillis average <= max: {rm}"
    );
    assert!(
        e["memoryLimits"].as_str().is_some_and(|m| !m.is_empty()),
        "memory limit mode: {e}"
    );
    assert_eq!(status["totalSessions"], 3, "{status}");
    assert_eq!(status["sessionsByPhase"]["Running"], 2, "{status}");
    assert!(
        status["reconcileCount"].as_u64().is_some_and(|n| n >= 1),
        "{status}"
    );
}

#[test]
fn the_controller_status_is_not_rewritten_at_every_pass_when_only_counters_change() {
    // Nothing changes but the counters (pass count, pass durations): the file
    // may be refreshed once every 30 s, not at each of a dozen passes.
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("idle.yaml"),
        &session("idle", "command: [sleep, '1000']"),
    );
    let c = Controller::start(
        &dir,
        &["--usage-interval", "500ms", "--metrics-addr", "127.0.0.1:0"],
    );
    let addr = metrics_addr(&c);
    wait_for("the health figures of the sampled session", || {
        controller_status(&dir).filter(|s| {
            s["extra"]["averageMemoryBytes"]
                .as_u64()
                .is_some_and(|m| m > 0)
        })
    });
    let passes =
        || metric(&scrape(&addr), "sessionlet_reconciles_total", &[]).expect("reconciles_total");
    let p0 = passes();
    let mut seen = std::collections::BTreeSet::new();
    let mut last_scrape = Instant::now();
    let start = Instant::now();
    loop {
        if let Some(at) =
            controller_status(&dir).and_then(|s| s["updatedAt"].as_str().map(String::from))
        {
            seen.insert(at);
        }
        if last_scrape.elapsed() >= Duration::from_millis(250) {
            last_scrape = Instant::now();
            if passes() - p0 >= 12.0 {
                break;
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the controller stopped making passes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        seen.len() <= 2,
        "over 12 passes in which only counters changed, the controller status was \
         rewritten {} times (updatedAt {seen:?})",
        seen.len() - 1
    );
}

// ---------------------------------------------------------------------------
// Cost of sampling

/// Read system calls the controller makes per reconcile pass, measured over at
/// least `passes` passes (a usage tick causes a pass; `/metrics` counts them).
fn reads_per_pass(c: &Controller, addr: &str, passes: f64) -> f64 {
    let pid = c.pid();
    let count = |m: &prometheus_parse::Scrape| {
        metric(m, "sessionlet_reconciles_total", &[]).expect("sessionlet_reconciles_total")
    };
    let p0 = count(&scrape(addr));
    let r0 = read_syscalls(pid);
    let start = Instant::now();
    loop {
        // Not a synchronisation sleep: it only spaces the scrapes out so that
        // serving them stays a small part of what is measured.
        std::thread::sleep(Duration::from_millis(500));
        let r1 = read_syscalls(pid);
        let p1 = count(&scrape(addr));
        if p1 - p0 >= passes {
            return (r1 - r0) as f64 / (p1 - p0);
        }
        assert!(
            start.elapsed() < DEADLINE * 2,
            "the controller made only {} passes",
            p1 - p0
        );
    }
}

#[test]
fn usage_sampling_reads_only_the_sessions_processes_not_the_whole_process_table() {
    // The controller's read syscalls per pass, with many unrelated processes
    // on the host and without: a sampler that scanned /proc would read each of
    // them at every usage tick; one that walks the session's tree does not
    // notice them. Counts, not timings.
    let (_tmp, dir) = sessions_dir();
    write_file(
        &dir.join("one.yaml"),
        &session("one", "command: [/bin/sh, -c, 'sleep 1000 & wait']"),
    );
    let c = Controller::start(
        &dir,
        &["--usage-interval", "200ms", "--metrics-addr", "127.0.0.1:0"],
    );
    let addr = metrics_addr(&c);
    wait_until(&dir, "one", "usage", |s| {
        s["status"]["usage"]["memoryBytes"]
            .as_u64()
            .is_some_and(|m| m > 0)
    });
    let before = reads_per_pass(&c, &addr, 25.0);
    const EXTRA: usize = 300;
    let _idle = idle_processes(EXTRA);
    let with_extra = reads_per_pass(&c, &addr, 25.0);
    eprintln!(
        "controller reads per pass: {before:.1} alone, {with_extra:.1} with {EXTRA} more processes on the host"
    );
    // A whole-table scan adds at least one read per process per usage tick,
    // and most passes are usage ticks here (200 ms against a 2 s resync).
    assert!(
        with_extra - before < EXTRA as f64 / 4.0,
        "the controller's reads per pass grew from {before:.1} to {with_extra:.1} with {EXTRA} \
         unrelated processes: usage sampling scans the process table"
    );
}

#[test]
fn the_tree_of_a_session_holds_its_descendants_and_nothing_else() {
    let unrelated = idle_processes(1);
    let other = unrelated.0[0].id();
    let mut session = Command::new("/bin/sh")
        .args(["-c", "sleep 1000 & sleep 1000 & wait"])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sh");
    let leader = session.id();
    let tree = wait_for("the shell's two children in its tree", || {
        let t = sessionlet::runtime::monitor::tree(leader, 4096);
        (t.len() >= 3).then_some(t)
    });
    let children = children_of(leader);
    for p in &tree {
        assert!(
            *p == leader || children.contains(p),
            "{p} in the tree of {leader} is not its descendant ({children:?})"
        );
    }
    assert!(
        !tree.contains(&other),
        "an unrelated process {other} is in the tree {tree:?}"
    );
    assert!(
        !tree.contains(&std::process::id()),
        "the parent is not in the tree"
    );
    let sample = sessionlet::runtime::monitor::sample(leader).expect("a sample");
    assert_eq!(sample.processes as usize, tree.len(), "{sample:?}");
    let limited = sessionlet::runtime::monitor::tree(leader, 2);
    assert_eq!(limited.len(), 2, "the limit caps the walk: {limited:?}");
    for p in tree.iter().skip(1) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*p as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = session.kill();
    let _ = session.wait();
    drop(unrelated);
}

/// Cost follows what changed: with thirty manifests, a changed file is read
/// alone (one parse) and the folder is not listed again; the periodic
/// resync (an hour here) is the only listing after the start.
#[test]
fn a_changed_manifest_is_read_alone_without_listing_the_folder() {
    let (_tmp, dir) = sessions_dir();
    let names: Vec<String> = (0..30).map(|i| format!("s{i:02}")).collect();
    for n in &names {
        write_file(
            &dir.join(format!("{n}.yaml")),
            &session(n, "command: [sleep, '1000']"),
        );
    }
    let c = Controller::start(
        &dir,
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--resync-interval",
            "1h",
            "--usage-interval",
            "0",
        ],
    );
    let pids: Vec<u64> = names
        .iter()
        .map(|n| {
            wait_phase(&dir, n, "Running")["status"]["pid"]
                .as_u64()
                .expect("pid")
        })
        .collect();
    let addr = metrics_addr(&c);
    let figures = |s: &prometheus_parse::Scrape| {
        (
            metric(s, "sessionlet_manifest_reads_total", &[]).unwrap_or(-1.0),
            metric(s, "sessionlet_manifest_listings_total", &[]).unwrap_or(-1.0),
        )
    };
    let (reads, listings) = wait_for("every manifest read once", || {
        let f = figures(&scrape(&addr));
        (f.0 >= 30.0).then_some(f)
    });
    assert_eq!(reads, 30.0, "each manifest parsed once at start");
    assert!(listings >= 1.0, "the start lists the folder");

    write_file(
        &dir.join("s07.yaml"),
        &session("s07", "command: [sleep, '1001']"),
    );
    let s = wait_status(&dir, "s07", "the changed spec running", |s| {
        s["status"]["phase"] == "Running" && s["status"]["pid"].as_u64() != Some(pids[7])
    });
    assert!(s["status"]["pid"].is_u64());
    let after = wait_for("the read counted", || {
        let f = figures(&scrape(&addr));
        (f.0 > reads).then_some(f)
    });
    assert_eq!(after.0, reads + 1.0, "only the changed file was parsed");
    assert_eq!(
        after.1, listings,
        "the folder was not listed for one changed file"
    );
    // The other sessions were not touched.
    for (n, pid) in names.iter().zip(&pids).filter(|(n, _)| n.as_str() != "s07") {
        let s = wait_phase(&dir, n, "Running");
        assert_eq!(
            s["status"]["pid"].as_u64(),
            Some(*pid),
            "{n} kept its process"
        );
    }
}

/// An error the controller survives is counted by its kind: a deleted
/// status folder shows as `sessionlet_errors_total{kind="status_dir"}`, and
/// the controller goes on (the folder is made again, the session runs on).
#[test]
fn errors_the_controller_survives_are_counted_by_kind() {
    let (tmp, dir) = sessions_dir();
    let status = tmp.path().join("status");
    std::fs::create_dir(&status).expect("status dir");
    write_file(
        &dir.join("svc.yaml"),
        &session("svc", "command: [sleep, '1000']"),
    );
    let c = Controller::start_with_status_dir(
        &dir,
        Some(&status),
        &["--metrics-addr", "127.0.0.1:0", "--usage-interval", "0"],
    );
    let pid = wait_phase(&status, "svc", "Running")["status"]["pid"].as_u64();
    let addr = metrics_addr(&c);
    let kind = |s: &prometheus_parse::Scrape| {
        metric(s, "sessionlet_errors_total", &[("kind", "status_dir")]).unwrap_or(0.0)
    };
    assert_eq!(kind(&scrape(&addr)), 0.0, "no error yet");
    std::fs::remove_dir_all(&status).expect("remove the status folder");
    wait_for("the error counted by kind", || {
        (kind(&scrape(&addr)) >= 1.0).then_some(())
    });
    let s = wait_phase(&status, "svc", "Running");
    assert_eq!(s["status"]["pid"].as_u64(), pid, "the session ran on");
}
