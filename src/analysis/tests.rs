//! One test per rule, each against real output where there is any.
//!
//! Samples live in tests/fixtures/analysis (see its README.md for how each
//! was captured). Every test checks the rule that matched, not only the
//! type, so it fails if its rule is removed even when a later rule would
//! give the same type.

use std::time::Duration;

use super::rules::{Matcher, RULES};
use super::*;

/// A sample from tests/fixtures/analysis.
macro_rules! sample {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/analysis/", $name))
    };
}

const SIGSEGV: i32 = libc::SIGSEGV;

/// An attempt that exited with `code` after printing `stderr`.
fn exited(code: i32, stderr: &str) -> ExitFacts<'_> {
    ExitFacts {
        exit_code: Some(code),
        stderr_tail: stderr,
        ..ExitFacts::default()
    }
}

/// An attempt killed by `signal` after printing `stderr`.
fn signalled(signal: i32, stderr: &str) -> ExitFacts<'_> {
    ExitFacts {
        signal: Some(signal),
        stderr_tail: stderr,
        ..ExitFacts::default()
    }
}

/// A Claude Code run: it reports API failures on stdout with exit code 1.
fn claude(stdout: &str) -> ExitFacts<'_> {
    ExitFacts {
        exit_code: Some(1),
        stdout_tail: stdout,
        ..ExitFacts::default()
    }
}

/// Asserts that `rule` explains `facts` as `kind` and returns the analysis.
#[track_caller]
fn expect(facts: &ExitFacts, rule: &str, kind: AnalysisType) -> Analysis {
    let matched = classify(facts).map(|found| found.rule.id);
    assert_eq!(matched, Some(rule), "facts: {facts:?}");
    let analysis = analyze(facts);
    assert_eq!(analysis.kind, kind);
    assert!((0.0..=1.0).contains(&analysis.confidence));
    assert!(!analysis.recommendation.is_empty());
    analysis
}

// ---- 1. The process never ran ---------------------------------------------

#[test]
fn a_spawn_error_for_a_missing_command_is_not_found() {
    let facts = ExitFacts {
        spawn_error: Some("CommandNotFound: No such file or directory (os error 2)"),
        ..ExitFacts::default()
    };
    let a = expect(&facts, "spawn-command-not-found", AnalysisType::NotFound);
    assert!(a.root_cause.contains("os error 2"), "{}", a.root_cause);
    assert!(a.confidence >= 0.9);
}

#[test]
fn a_spawn_error_for_permission_is_permission() {
    let facts = ExitFacts {
        spawn_error: Some("PermissionDenied: Permission denied (os error 13)"),
        ..ExitFacts::default()
    };
    expect(&facts, "spawn-permission-denied", AnalysisType::Permission);
}

#[test]
fn a_spawn_error_for_a_missing_working_directory_is_not_found() {
    let facts = ExitFacts {
        spawn_error: Some("SpawnFailed: No such file or directory (os error 2)"),
        ..ExitFacts::default()
    };
    let a = expect(&facts, "spawn-missing-path", AnalysisType::NotFound);
    assert!(a.root_cause.contains("working directory"));
}

#[test]
fn any_other_spawn_error_is_reported_with_its_message() {
    let facts = ExitFacts {
        spawn_error: Some("SpawnFailed: Argument list too long (os error 7)"),
        ..ExitFacts::default()
    };
    let a = expect(&facts, "spawn-failed", AnalysisType::Unknown);
    assert!(a.root_cause.contains("Argument list too long"));
}

// ---- 2. Kernel and controller facts ---------------------------------------

#[test]
fn an_oom_kill_counter_is_oom_with_high_confidence() {
    let facts = ExitFacts {
        signal: Some(libc::SIGKILL),
        oom_kills: 1,
        max_memory: Some(512 * 1024 * 1024),
        ..ExitFacts::default()
    };
    let a = expect(&facts, "oom-counter", AnalysisType::OOM);
    assert!(a.confidence >= 0.95);
    assert!(a.root_cause.contains("(512 MiB)"), "{}", a.root_cause);
}

#[test]
fn a_memory_limit_stop_is_oom() {
    for reason in ["MemoryLimitExceeded", "OOMKilled"] {
        let facts = ExitFacts {
            signal: Some(libc::SIGKILL),
            stop_reason: Some(reason),
            max_memory: Some(3 * 1024 * 1024 * 1024 / 2),
            ..ExitFacts::default()
        };
        let a = expect(&facts, "stop-memory-limit", AnalysisType::OOM);
        assert!(a.root_cause.contains(reason));
        assert!(a.root_cause.contains("(1.5 GiB)"), "{}", a.root_cause);
    }
}

#[test]
fn a_timed_out_stop_is_a_timeout_naming_the_limit() {
    let facts = ExitFacts {
        signal: Some(libc::SIGTERM),
        stop_reason: Some("TimedOut"),
        timeout: Some(Duration::from_secs(90)),
        ..ExitFacts::default()
    };
    let a = expect(&facts, "stop-timed-out", AnalysisType::Timeout);
    assert!(a.root_cause.contains("timeout (1m30s)"), "{}", a.root_cause);
}

#[test]
fn a_deadline_stop_is_a_timeout() {
    let facts = ExitFacts {
        signal: Some(libc::SIGTERM),
        stop_reason: Some("DeadlineExceeded"),
        ..ExitFacts::default()
    };
    expect(&facts, "stop-deadline-exceeded", AnalysisType::Timeout);
}

#[test]
fn a_cpu_time_limit_stop_is_a_timeout() {
    let facts = ExitFacts {
        signal: Some(libc::SIGKILL),
        stop_reason: Some("CpuTimeLimitExceeded"),
        ..ExitFacts::default()
    };
    expect(&facts, "stop-cpu-time-limit", AnalysisType::Timeout);
}

#[test]
fn a_stale_stop_is_a_timeout() {
    let facts = ExitFacts {
        signal: Some(libc::SIGTERM),
        stop_reason: Some("Stale"),
        ..ExitFacts::default()
    };
    let a = expect(&facts, "stop-stale", AnalysisType::Timeout);
    assert!(a.root_cause.contains("staleAfter"));
}

#[test]
fn a_token_budget_stop_is_killed_by_the_controller() {
    let facts = ExitFacts {
        signal: Some(libc::SIGINT),
        stop_reason: Some("TokenBudgetExceeded"),
        ..ExitFacts::default()
    };
    expect(&facts, "stop-token-budget", AnalysisType::Killed);
}

#[test]
fn a_policy_violation_stop_is_killed_by_the_controller() {
    let facts = ExitFacts {
        signal: Some(libc::SIGINT),
        stop_reason: Some("PolicyViolation"),
        ..ExitFacts::default()
    };
    expect(&facts, "stop-policy-violation", AnalysisType::Killed);
}

#[test]
fn a_deliberate_stop_is_reported_as_one() {
    for reason in ["Suspended", "SpecChanged", "Removed", "ControllerStopped"] {
        let facts = ExitFacts {
            signal: Some(libc::SIGTERM),
            stop_reason: Some(reason),
            ..ExitFacts::default()
        };
        let a = expect(&facts, "stop-deliberate", AnalysisType::Killed);
        assert!(a.root_cause.contains(&format!("({reason})")));
        assert!(a.root_cause.contains("on purpose"));
    }
}

#[test]
fn an_agents_auth_failure_is_auth_not_a_deliberate_stop() {
    for sample in [
        sample!("claude-cli/err_401_retries1.stream-json.jsonl"),
        sample!("claude-cli/err_401_retries1.txt"),
    ] {
        let facts = ExitFacts {
            stop_reason: Some("AgentFailed"),
            ..claude(sample)
        };
        let a = expect(&facts, "auth-rejected", AnalysisType::Auth);
        assert!(!a.root_cause.contains("on purpose"), "{}", a.root_cause);
        assert!(!a.recommendation.contains("Nothing is wrong"));
    }
}

#[test]
fn an_agent_error_result_without_a_known_cause_says_so() {
    let facts = ExitFacts {
        stop_reason: Some("AgentFailed"),
        ..claude(sample!("claude-cli/err_max_turns.stream-json.jsonl"))
    };
    let a = expect(&facts, "agent-failed", AnalysisType::Unknown);
    assert!(
        a.root_cause.contains("error result (AgentFailed)"),
        "{}",
        a.root_cause
    );
    assert!(a
        .suggested_fixes
        .iter()
        .any(|f| f.contains("agent.maxTurns")));
}

#[test]
fn an_agent_without_a_final_result_is_not_a_deliberate_stop() {
    let facts = ExitFacts {
        exit_code: Some(1),
        stop_reason: Some("AgentAbnormal"),
        ..ExitFacts::default()
    };
    let a = expect(&facts, "agent-abnormal", AnalysisType::Unknown);
    assert!(a.root_cause.contains("without writing its final result"));
    // Killed by a signal sessionlet did not send: that is what it says.
    let facts = ExitFacts {
        signal: Some(libc::SIGKILL),
        stop_reason: Some("AgentAbnormal"),
        ..ExitFacts::default()
    };
    expect(&facts, "signal-kill", AnalysisType::Killed);
}

#[test]
fn a_process_that_vanished_while_away_is_unknown_not_a_deliberate_stop() {
    let facts = ExitFacts {
        stop_reason: Some("ExitedWhileAway"),
        ..ExitFacts::default()
    };
    let a = expect(&facts, "exited-while-away", AnalysisType::Unknown);
    assert!(
        a.root_cause.contains("no controller was watching"),
        "{}",
        a.root_cause
    );
    assert!(!a.recommendation.contains("Nothing is wrong"));
    // What it said before it went is still the better explanation.
    let facts = ExitFacts {
        stop_reason: Some("ExitedWhileAway"),
        stderr_tail: "thread 'main' panicked at src/main.rs:3:5:\nboom\n",
        ..ExitFacts::default()
    };
    expect(&facts, "panic-text", AnalysisType::Abort);
}

#[test]
fn an_unexplained_reason_claims_nothing_more_than_the_reason() {
    let facts = ExitFacts {
        stop_reason: Some("SomethingNew"),
        ..ExitFacts::default()
    };
    let a = expect(&facts, "stop-other", AnalysisType::Unknown);
    assert!(a.root_cause.contains("SomethingNew"));
    assert!(!a.root_cause.contains("on purpose"));
    assert!(!a.recommendation.contains("Nothing is wrong"));
}

/// Every reason an ended attempt can carry, as the controller passes it
/// (`stop_reason` for every reason but Error, Crashed and Completed).
const STOP_REASONS: &[&str] = &[
    "TimedOut",
    "DeadlineExceeded",
    "Suspended",
    "ControllerStopped",
    "MemoryLimitExceeded",
    "OOMKilled",
    "CpuTimeLimitExceeded",
    "Stale",
    "TokenBudgetExceeded",
    "PolicyViolation",
    "SpecChanged",
    "Removed",
    "ExitedWhileAway",
    "AgentAbnormal",
    "AgentFailed",
];

#[test]
fn every_analysis_agrees_with_the_reason() {
    const DELIBERATE: &[&str] = &["Suspended", "SpecChanged", "Removed", "ControllerStopped"];
    for reason in STOP_REASONS {
        let facts = ExitFacts {
            stop_reason: Some(reason),
            ..ExitFacts::default()
        };
        let a = analyze(&facts);
        let says_deliberate =
            a.root_cause.contains("on purpose") || a.recommendation.contains("Nothing is wrong");
        assert_eq!(
            says_deliberate,
            DELIBERATE.contains(reason),
            "{reason}: {} / {}",
            a.root_cause,
            a.recommendation
        );
        assert!(a.root_cause.contains(reason), "{reason}: {}", a.root_cause);
    }
}

#[test]
fn recommendations_point_only_to_things_that_exist() {
    // sessionlet has no events, no `sessionlet events`, no `--fallback-model` flag of its own.
    for rule in RULES {
        for text in [rule.root_cause, rule.recommendation]
            .into_iter()
            .chain(rule.fixes.iter().copied())
        {
            assert!(!text.contains("events say"), "{}: {text}", rule.id);
            assert!(!text.contains("session's events"), "{}: {text}", rule.id);
            assert!(
                !text.contains("if the client supports"),
                "{}: {text}",
                rule.id
            );
        }
    }
}

// ---- 3. How it ended -------------------------------------------------------

#[test]
fn exit_127_from_the_shell_is_not_found_quoting_the_shell() {
    let a = expect(
        &exited(127, sample!("sh_command_not_found.txt")),
        "exit-127-command-not-found",
        AnalysisType::NotFound,
    );
    assert!(a.root_cause.contains("\"sh: 1: nosuchcommand: not found\""));
    let a = expect(
        &exited(127, sample!("bash_command_not_found.txt")),
        "exit-127-command-not-found",
        AnalysisType::NotFound,
    );
    assert!(a.root_cause.contains("nosuchcommand: command not found"));
}

#[test]
fn exit_126_from_the_shell_is_permission() {
    let a = expect(
        &exited(126, sample!("sh_permission_denied.txt")),
        "exit-126-cannot-execute",
        AnalysisType::Permission,
    );
    assert!(a
        .root_cause
        .contains("./not-executable-file: Permission denied"));
}

#[test]
fn a_segfault_signal_is_a_segfault() {
    // Python with -X faulthandler, killed by SIGSEGV (a NULL read via ctypes).
    let a = expect(
        &signalled(SIGSEGV, sample!("python_segfault_faulthandler.txt")),
        "signal-segv",
        AnalysisType::Segfault,
    );
    assert!(
        a.root_cause.contains("SIGSEGV (signal 11)"),
        "{}",
        a.root_cause
    );
    assert!(a
        .root_cause
        .contains("Fatal Python error: Segmentation fault"));
    assert!(a.confidence >= 0.9);
    // Without faulthandler it prints nothing: the signal alone decides.
    expect(
        &signalled(SIGSEGV, ""),
        "signal-segv",
        AnalysisType::Segfault,
    );
    expect(
        &signalled(libc::SIGBUS, ""),
        "signal-segv",
        AnalysisType::Segfault,
    );
}

#[test]
fn a_sigkill_not_sent_for_a_limit_is_killed() {
    // SIGKILL cannot be caught, so there is never any output to go on.
    let a = expect(
        &signalled(libc::SIGKILL, ""),
        "signal-kill",
        AnalysisType::Killed,
    );
    assert!(a.root_cause.contains("SIGKILL (signal 9)"));
    assert!(a.recommendation.contains("dmesg"));
}

#[test]
fn a_termination_signal_from_outside_is_killed() {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        expect(
            &signalled(signal, ""),
            "signal-terminate",
            AnalysisType::Killed,
        );
    }
}

#[test]
fn a_cpu_rlimit_signal_is_a_timeout() {
    expect(
        &signalled(libc::SIGXCPU, ""),
        "signal-cpu-rlimit",
        AnalysisType::Timeout,
    );
}

#[test]
fn out_of_memory_messages_are_oom() {
    let a = expect(
        &exited(1, sample!("python_memory_error.txt")),
        "oom-text",
        AnalysisType::OOM,
    );
    assert!(
        a.root_cause.ends_with("Evidence (stderr): \"MemoryError\""),
        "{}",
        a.root_cause
    );
    expect(
        &exited(1, sample!("python_cannot_allocate_memory.txt")),
        "oom-text",
        AnalysisType::OOM,
    );
    // V8 aborts when its heap is full: the message, not SIGABRT, is the cause.
    let a = expect(
        &signalled(libc::SIGABRT, sample!("node_heap_out_of_memory.txt")),
        "oom-text",
        AnalysisType::OOM,
    );
    assert!(a.root_cause.contains("JavaScript heap out of memory"));
}

#[test]
fn an_abort_signal_is_an_abort_quoting_the_assertion() {
    let a = expect(
        &signalled(libc::SIGABRT, sample!("c_assertion_failed.txt")),
        "signal-abort",
        AnalysisType::Abort,
    );
    assert!(
        a.root_cause.contains("Assertion `answer == 42' failed."),
        "{}",
        a.root_cause
    );
    let a = expect(
        &signalled(libc::SIGABRT, sample!("python_abort_faulthandler.txt")),
        "signal-abort",
        AnalysisType::Abort,
    );
    assert!(a.root_cause.contains("Fatal Python error: Aborted"));
}

#[test]
fn a_cpu_trap_signal_is_an_abort() {
    let a = expect(
        &signalled(libc::SIGILL, ""),
        "signal-trap",
        AnalysisType::Abort,
    );
    assert!(a.root_cause.contains("SIGILL"));
}

#[test]
fn an_unusual_signal_is_killed() {
    let a = expect(
        &signalled(libc::SIGUSR1, ""),
        "signal-other",
        AnalysisType::Killed,
    );
    assert!(a.root_cause.contains("SIGUSR1"));
}

// ---- 4. What the program said ---------------------------------------------

#[test]
fn segmentation_fault_text_is_a_segfault() {
    // bash reporting that its child segfaulted; bash itself exits 139.
    let a = expect(
        &exited(139, sample!("bash_reports_segfault.txt")),
        "segfault-text",
        AnalysisType::Segfault,
    );
    assert!(a.root_cause.contains("Segmentation fault"));
}

#[test]
fn abort_text_is_an_abort() {
    expect(
        &exited(134, sample!("bash_reports_abort.txt")),
        "abort-text",
        AnalysisType::Abort,
    );
}

#[test]
fn http_401_403_and_bad_credentials_are_auth() {
    let a = expect(
        &exited(1, sample!("python_http_401.txt")),
        "auth-rejected",
        AnalysisType::Auth,
    );
    assert!(a.root_cause.contains("HTTP Error 401: Unauthorized"));
    expect(
        &exited(22, sample!("curl_http_401.txt")),
        "auth-rejected",
        AnalysisType::Auth,
    );
    let a = expect(
        &claude(sample!("claude-cli/err_401_retries1.txt")),
        "auth-rejected",
        AnalysisType::Auth,
    );
    assert!(a
        .root_cause
        .contains("Evidence (stdout): \"Invalid API key"));
    // From stream-json, the message of the `result` line is what is quoted.
    let a = expect(
        &claude(sample!("claude-cli/err_401_retries1.stream-json.jsonl")),
        "auth-rejected",
        AnalysisType::Auth,
    );
    assert!(
        a.root_cause
            .ends_with("Evidence (stdout): \"Invalid API key · Fix external API key\""),
        "{}",
        a.root_cause
    );
    // The 403 says "permission denied", but it is the credential that is refused.
    expect(
        &claude(sample!("claude-cli/err_403.stream-json.jsonl")),
        "auth-rejected",
        AnalysisType::Auth,
    );
    expect(
        &claude(sample!("claude-cli/err_not_logged_in.txt")),
        "auth-rejected",
        AnalysisType::Auth,
    );
}

#[test]
fn http_429_and_rate_limit_messages_are_rate_limited() {
    let a = expect(
        &exited(1, sample!("python_http_429.txt")),
        "rate-limited",
        AnalysisType::RateLimited,
    );
    assert!(a.root_cause.contains("HTTP Error 429: Too Many Requests"));
    expect(
        &exited(22, sample!("curl_http_429.txt")),
        "rate-limited",
        AnalysisType::RateLimited,
    );
    expect(
        &claude(sample!("claude-cli/err_429_retries1.txt")),
        "rate-limited",
        AnalysisType::RateLimited,
    );
    // Still retrying 429s when `timeout 120` killed it (exit 124): the 429s
    // explain why it ran out of time.
    let facts = ExitFacts {
        exit_code: Some(124),
        stdout_tail: sample!("claude-cli/err_429_default_retries_killed_at_120s.stream-json.jsonl"),
        ..ExitFacts::default()
    };
    expect(&facts, "rate-limited", AnalysisType::RateLimited);
}

#[test]
fn an_overloaded_api_is_rate_limited() {
    let a = expect(
        &claude(sample!("claude-cli/err_529_overloaded.txt")),
        "api-overloaded",
        AnalysisType::RateLimited,
    );
    assert!(a.root_cause.contains("Repeated 529 Overloaded"));
    expect(
        &claude(sample!("claude-cli/err_sse_error_event.stream-json.jsonl")),
        "api-overloaded",
        AnalysisType::RateLimited,
    );
}

#[test]
fn a_connection_refused_is_a_network_error() {
    let a = expect(
        &exited(1, sample!("python_connection_refused.txt")),
        "connection-refused",
        AnalysisType::Network,
    );
    // The last matching line: the one the program died with.
    assert!(a
        .root_cause
        .contains("urllib.error.URLError: <urlopen error [Errno 111] Connection refused>"));
    expect(
        &exited(7, sample!("curl_connection_refused.txt")),
        "connection-refused",
        AnalysisType::Network,
    );
    // Node dumps the error object after the message; the message is quoted.
    let a = expect(
        &exited(1, sample!("node_connection_refused.txt")),
        "connection-refused",
        AnalysisType::Network,
    );
    assert!(
        a.root_cause
            .ends_with("\"Error: connect ECONNREFUSED 127.0.0.1:9\""),
        "{}",
        a.root_cause
    );
    expect(
        &claude(sample!("claude-cli/err_conn_refused_retries0.txt")),
        "connection-refused",
        AnalysisType::Network,
    );
    expect(
        &claude(sample!(
            "claude-cli/err_conn_refused_retries0.stream-json.jsonl"
        )),
        "connection-refused",
        AnalysisType::Network,
    );
}

#[test]
fn a_dns_failure_is_a_network_error() {
    // Written by hand (a real lookup would leave the machine); see README.md.
    for (sample, quoted) in [
        (
            sample!("handwritten/curl_could_not_resolve_host.txt"),
            "Could not resolve host: api.example.invalid",
        ),
        (
            sample!("handwritten/python_gaierror_name_or_service_not_known.txt"),
            "[Errno -2] Name or service not known",
        ),
        (
            sample!("handwritten/python_temporary_failure_in_name_resolution.txt"),
            "Temporary failure in name resolution",
        ),
        (
            sample!("handwritten/node_getaddrinfo_enotfound.txt"),
            "\"Error: getaddrinfo ENOTFOUND api.example.invalid\"",
        ),
        (
            sample!("handwritten/go_lookup_no_such_host.txt"),
            "no such host",
        ),
    ] {
        let a = expect(&exited(1, sample), "dns-failure", AnalysisType::Network);
        assert!(a.root_cause.contains(quoted), "{}", a.root_cause);
    }
}

#[test]
fn a_tls_certificate_failure_is_a_network_error() {
    let a = expect(
        &exited(1, sample!("python_tls_self_signed.txt")),
        "tls-failure",
        AnalysisType::Network,
    );
    assert!(a.root_cause.contains("CERTIFICATE_VERIFY_FAILED"));
    expect(
        &exited(60, sample!("curl_tls_self_signed.txt")),
        "tls-failure",
        AnalysisType::Network,
    );
}

#[test]
fn an_unreachable_network_is_a_network_error() {
    // The Claude Code CLI on a machine without network.
    let a = expect(
        &claude(sample!("claude-cli/err_offline_no_network_retries0.txt")),
        "network-unreachable",
        AnalysisType::Network,
    );
    assert!(a.root_cause.contains("FailedToOpenSocket"));
}

#[test]
fn a_timeout_in_the_output_is_a_timeout() {
    let a = expect(
        &exited(1, sample!("python_read_timeout.txt")),
        "timeout-text",
        AnalysisType::Timeout,
    );
    assert!(a.root_cause.contains("TimeoutError: timed out"));
    expect(
        &exited(28, sample!("curl_timeout.txt")),
        "timeout-text",
        AnalysisType::Timeout,
    );
    expect(
        &claude(sample!("claude-cli/err_request_timeout.txt")),
        "timeout-text",
        AnalysisType::Timeout,
    );
    expect(
        &claude(sample!("claude-cli/err_request_timeout.stream-json.jsonl")),
        "timeout-text",
        AnalysisType::Timeout,
    );
}

#[test]
fn a_server_error_is_a_network_error() {
    let a = expect(
        &claude(sample!("claude-cli/err_500_retries2.txt")),
        "server-error",
        AnalysisType::Network,
    );
    assert!(a.root_cause.contains("API Error: 500"));
}

#[test]
fn permission_denied_text_is_permission() {
    let a = expect(
        &exited(1, sample!("python_permission_error.txt")),
        "permission-text",
        AnalysisType::Permission,
    );
    assert!(a
        .root_cause
        .contains("PermissionError: [Errno 13] Permission denied"));
}

#[test]
fn a_missing_file_is_not_found() {
    let a = expect(
        &exited(1, sample!("python_file_not_found.txt")),
        "not-found-text",
        AnalysisType::NotFound,
    );
    assert!(a.root_cause.contains("/nonexistent/config.yaml"));
}

#[test]
fn a_panic_is_an_abort() {
    let a = expect(
        &exited(101, sample!("rust_panic.txt")),
        "panic-text",
        AnalysisType::Abort,
    );
    assert!(a.root_cause.contains("panicked at"));
}

// ---- 5. Conventions of wrappers ------------------------------------------

#[test]
fn exit_124_from_timeout_is_a_timeout() {
    // Claude Code retrying a refused connection until `timeout 120` killed it.
    // Its retry lines say nothing useful (and a uuid contains "401", which
    // must not read as an HTTP 401).
    let facts = ExitFacts {
        exit_code: Some(124),
        stdout_tail: sample!(
            "claude-cli/err_conn_refused_default_retries_killed_at_120s.stream-json.jsonl"
        ),
        ..ExitFacts::default()
    };
    expect(&facts, "exit-124-timeout-command", AnalysisType::Timeout);
}

#[test]
fn exit_137_is_killed_quoting_the_shell() {
    let a = expect(
        &exited(137, sample!("bash_reports_killed.txt")),
        "exit-137-sigkill",
        AnalysisType::Killed,
    );
    assert!(a.root_cause.contains(" Killed "), "{}", a.root_cause);
}

#[test]
fn exit_139_is_a_segfault() {
    // A wrapper that reports the crash only through its exit code.
    expect(&exited(139, ""), "exit-139-sigsegv", AnalysisType::Segfault);
}

#[test]
fn exit_134_is_an_abort() {
    expect(&exited(134, ""), "exit-134-sigabrt", AnalysisType::Abort);
}

#[test]
fn exit_143_after_sigterm_is_killed() {
    // Claude Code catches SIGTERM and exits 143 without a result line.
    let facts = ExitFacts {
        exit_code: Some(143),
        stdout_tail: sample!("claude-cli/sig_term_during_bash_tool.stream-json.jsonl"),
        ..ExitFacts::default()
    };
    let a = expect(&facts, "exit-128-plus-term", AnalysisType::Killed);
    assert!(a.root_cause.contains("Exit code 143"));
}

// ---- No match, and precedence ---------------------------------------------

#[test]
fn unknown_output_is_unknown_with_low_confidence() {
    let facts = claude(sample!("claude-cli/err_max_turns.txt"));
    assert!(classify(&facts).is_none());
    let a = analyze(&facts);
    assert_eq!(a.kind, AnalysisType::Unknown);
    assert!(a.confidence <= 0.2);
    assert!(a.root_cause.contains("exited with code 1"));
    assert!(a
        .root_cause
        .contains("Last output line (stdout): \"Error: Reached max turns (1)\""));
}

#[test]
fn an_unknown_agent_failure_quotes_the_result_message() {
    // --max-turns reached, in stream-json: no rule, but the reader gets the
    // CLI's own words rather than a line of JSON.
    let facts = claude(sample!("claude-cli/err_max_turns.stream-json.jsonl"));
    let a = analyze(&facts);
    assert_eq!(a.kind, AnalysisType::Unknown);
    assert!(
        a.root_cause
            .ends_with("(stdout): \"Reached maximum number of turns (2)\""),
        "{}",
        a.root_cause
    );
}

#[test]
fn an_interrupted_agent_run_is_unknown_and_says_there_was_no_result() {
    // Claude Code killed by SIGTERM mid-tool: transcript lines only, exit 143
    // would say Killed; without the exit code there is nothing to go on.
    let facts = ExitFacts {
        stdout_tail: sample!("claude-cli/sig_term_during_bash_tool.stream-json.jsonl"),
        ..ExitFacts::default()
    };
    let a = analyze(&facts);
    assert_eq!(a.kind, AnalysisType::Unknown);
    assert!(a.root_cause.contains("no result line"), "{}", a.root_cause);
}

#[test]
fn no_output_at_all_is_unknown_and_says_so() {
    let a = analyze(&exited(3, ""));
    assert_eq!(a.kind, AnalysisType::Unknown);
    assert!(a.root_cause.contains("It wrote no output."));
}

#[test]
fn facts_win_over_misleading_text() {
    let refused = sample!("python_connection_refused.txt");
    // The cgroup counted an OOM kill: whatever the output says.
    let facts = ExitFacts {
        signal: Some(libc::SIGKILL),
        oom_kills: 2,
        stderr_tail: refused,
        ..ExitFacts::default()
    };
    expect(&facts, "oom-counter", AnalysisType::OOM);
    // The controller stopped it for time while it was printing 401s.
    let facts = ExitFacts {
        signal: Some(libc::SIGTERM),
        stop_reason: Some("TimedOut"),
        stderr_tail: sample!("python_http_401.txt"),
        ..ExitFacts::default()
    };
    expect(&facts, "stop-timed-out", AnalysisType::Timeout);
    // A stop for memory beats an unrelated "Permission denied".
    let facts = ExitFacts {
        signal: Some(libc::SIGKILL),
        stop_reason: Some("MemoryLimitExceeded"),
        stderr_tail: sample!("python_permission_error.txt"),
        ..ExitFacts::default()
    };
    expect(&facts, "stop-memory-limit", AnalysisType::OOM);
    // It segfaulted after logging a rate limit.
    let facts = signalled(SIGSEGV, sample!("python_http_429.txt"));
    expect(&facts, "signal-segv", AnalysisType::Segfault);
    // And the text rules do fire for the same outputs without those facts.
    expect(
        &exited(1, refused),
        "connection-refused",
        AnalysisType::Network,
    );
}

#[test]
fn the_agents_own_tool_output_is_not_taken_for_the_sessions_failure() {
    // A real transcript whose Bash tool output is replaced by a real curl
    // failure: the agent saw a refused connection, the CLI did not fail on one.
    let transcript = sample!("claude-cli/ok_bash_tool.stream-json.jsonl").replace(
        "hello-from-fake",
        sample!("curl_connection_refused.txt").trim(),
    );
    assert!(transcript.contains("Couldn't connect to server"));
    let a = analyze(&claude(&transcript));
    assert_eq!(a.kind, AnalysisType::Unknown, "{}", a.root_cause);
    assert!(!a.root_cause.contains("Couldn't connect"));
}

// ---- Rendering ------------------------------------------------------------

#[test]
fn a_long_matching_line_is_quoted_around_the_match() {
    let line = format!("{} Connection refused {}", "x".repeat(400), "y".repeat(400));
    let a = expect(
        &exited(1, &line),
        "connection-refused",
        AnalysisType::Network,
    );
    let quote = a
        .root_cause
        .split("Evidence (stderr): \"")
        .nth(1)
        .unwrap_or_default();
    assert!(quote.starts_with('…') && quote.ends_with("…\""), "{quote}");
    assert!(quote.contains("Connection refused"));
    assert!(quote.chars().count() <= EVIDENCE_MAX_CHARS + 3);
}

#[test]
fn quoted_evidence_has_no_terminal_escapes() {
    let a = analyze(&exited(
        1,
        "\x1b[31merror:\x1b[0m connect ECONNREFUSED 127.0.0.1:5432\x07",
    ));
    assert!(!a.root_cause.contains('\x1b') && !a.root_cause.contains('\x07'));
    assert!(a
        .root_cause
        .contains("error: connect ECONNREFUSED 127.0.0.1:5432"));
}

#[test]
fn the_last_redraw_of_a_progress_line_is_what_counts() {
    let a = analyze(&exited(
        7,
        "  % Total    % Received\r  0     0    0 \rcurl: (7) Couldn't connect to server\n",
    ));
    assert!(
        a.root_cause
            .ends_with("\"curl: (7) Couldn't connect to server\""),
        "{}",
        a.root_cause
    );
}

#[test]
fn the_analysis_serializes_with_the_status_field_names() {
    let a = analyze(&ExitFacts {
        oom_kills: 1,
        ..ExitFacts::default()
    });
    let json = serde_json::to_value(&a).unwrap_or_default();
    assert_eq!(json["type"], "OOM");
    for key in [
        "rootCause",
        "recommendation",
        "confidence",
        "suggestedFixes",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    let back: Analysis = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, a);
    for kind in AnalysisType::ALL {
        let name = serde_json::to_value(kind).unwrap_or_default();
        assert_eq!(name, kind.as_str());
        assert_eq!(kind.to_string(), kind.as_str());
    }
}

#[test]
fn limits_read_the_way_manifests_write_them() {
    assert_eq!(format_bytes(900), "900 bytes");
    assert_eq!(format_bytes(512 * 1024 * 1024), "512 MiB");
    assert_eq!(format_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(signal_name(9), "SIGKILL (signal 9)");
    assert_eq!(signal_name(77), "signal 77");
}

#[test]
fn the_rule_table_is_well_formed() {
    let mut ids = std::collections::HashSet::new();
    for (rule, compiled) in RULES.iter().zip(COMPILED.iter()) {
        assert!(ids.insert(rule.id), "duplicate rule id {}", rule.id);
        assert!((0.0..=1.0).contains(&rule.confidence), "{}", rule.id);
        // Forcing COMPILED compiled every pattern; check each got its regex.
        if matches!(rule.matcher, Matcher::Output(_) | Matcher::SpawnError(_)) {
            assert!(compiled.matcher.is_some(), "{}", rule.id);
        }
        assert_eq!(rule.evidence.is_some(), compiled.evidence.is_some());
        for text in [rule.root_cause, rule.recommendation]
            .into_iter()
            .chain(rule.fixes.iter().copied())
        {
            for name in text.split('{').skip(1).filter_map(|s| s.split('}').next()) {
                assert!(
                    PLACEHOLDERS.contains(&name),
                    "{}: unknown {{{name}}}",
                    rule.id
                );
            }
        }
    }
    assert_eq!(RULES.len(), COMPILED.len());
}
