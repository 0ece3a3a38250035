//! The crash analysis rules: one ordered table, first match wins.
//!
//! Order is the policy:
//! 1. facts that the process never ran (spawn errors);
//! 2. facts from the kernel and the controller (the cgroup OOM counter, the
//!    reason the controller stopped it), which no output can contradict;
//! 3. how it ended (exit code 127/126, the signal that killed it);
//! 4. what the program said, most specific first (an out-of-memory message
//!    comes before SIGABRT because runtimes abort when allocation fails);
//! 5. reasons that only say how little is known (a process that ended while
//!    no controller watched, an agent's error result or missing result),
//!    after the text, which usually says more (an agent's auth failure is
//!    Auth, not a stop);
//! 6. exit codes that are only conventions of wrappers (124 from
//!    `timeout(1)`, 128+N from a shell reporting a signal), after the text
//!    because the text usually says why the wrapper gave up;
//! 7. any other reason the controller recorded, without claiming more than
//!    the reason.
//!
//! Every analysis must agree with the reason of the exit: "stopped on
//! purpose" is said only of the deliberate stops (suspend, a spec change, a
//! removed manifest, a shutdown).
//!
//! Root causes, recommendations and fixes may use the placeholders
//! `{signal}`, `{exit_code}`, `{stop_reason}`, `{spawn_error}`,
//! `{memory_limit}`, `{timeout}` and `{oom_kills}`. Text patterns are
//! case-insensitive and matched one output line at a time; the line that
//! matched is quoted in the root cause.

use super::AnalysisType::{self, *};

/// What a rule looks at.
#[derive(Debug, Clone, Copy)]
pub(super) enum Matcher {
    /// The spawn error (reason and message) matches this regex.
    SpawnError(&'static str),
    /// Any spawn error.
    AnySpawnError,
    /// The cgroup's OOM kill counter went up.
    OomKilled,
    /// The controller stopped the attempt for one of these reasons.
    StopReason(&'static [&'static str]),
    /// The controller stopped the attempt for any reason.
    AnyStopReason,
    /// One of these signals killed the process.
    Signal(&'static [i32]),
    /// Any signal killed the process.
    AnySignal,
    /// The process exited with one of these codes.
    ExitCode(&'static [i32]),
    /// A line of stderr or stdout matches this regex.
    Output(&'static str),
}

/// One row of the table.
#[derive(Debug)]
pub(super) struct Rule {
    /// A stable name, for tests and debugging.
    pub id: &'static str,
    /// The type reported when the rule matches.
    pub kind: AnalysisType,
    /// What the rule looks at.
    pub matcher: Matcher,
    /// For fact rules: a regex picking the output line to quote as
    /// supporting evidence, when there is one (text rules quote their match).
    pub evidence: Option<&'static str>,
    /// What happened; the quoted evidence is appended to it.
    pub root_cause: &'static str,
    /// What to do about it.
    pub recommendation: &'static str,
    /// How sure the rule is when it matches (0 to 1).
    pub confidence: f64,
    /// Concrete changes that would likely fix it.
    pub fixes: &'static [&'static str],
}

// Patterns used by more than one rule.

/// A program or its runtime saying it ran out of memory.
const OOM_TEXT: &str = r"\bMemoryError\b|OutOfMemoryError|cannot allocate memory|out of memory|\bENOMEM\b|std::bad_alloc|memory allocation of \d+ bytes failed";
/// A crash report for an invalid memory access.
const SEGFAULT_TEXT: &str = r"segmentation fault|\bSIGSEGV\b|\bsegfault\b|\bbus error\b|\bSIGBUS\b|EXC_BAD_ACCESS|access violation";
/// A program aborting itself, or a shell reporting that it did.
const ABORT_TEXT: &str = r"\d+ Aborted\b|^Aborted\b|Aborted \(core dumped\)|Fatal Python error: Aborted|terminate called (?:after throwing|without an active exception)|double free|free\(\): invalid|malloc\(\): |corrupted (?:size|double-linked)|stack smashing detected|Assertion .+ failed|\bSIGABRT\b|fatal runtime error";

const MEMORY_FIXES: &[&str] = &[
    "Raise resources.maxMemory in the session manifest if the work needs more memory.",
    "Process the input in smaller batches or stream it instead of loading it all at once.",
    "Run fewer parallel workers or threads inside the session.",
];

pub(super) static RULES: &[Rule] = &[
    // ---- 1. The process never ran ----------------------------------------
    Rule {
        id: "spawn-command-not-found",
        kind: NotFound,
        matcher: Matcher::SpawnError(r"^\s*CommandNotFound\b"),
        evidence: None,
        root_cause: "The command could not be started because it does not exist: {spawn_error}.",
        recommendation: "Check spec.command: install the program or give its absolute path.",
        confidence: 0.95,
        fixes: &[
            "Correct the program name in spec.command, or install the program.",
            "Use an absolute path (`command -v NAME` prints it).",
            "Set PATH in the session's env if the program lives outside the default PATH.",
        ],
    },
    Rule {
        id: "spawn-permission-denied",
        kind: Permission,
        matcher: Matcher::SpawnError(
            r"^\s*PermissionDenied\b|permission denied|\bEACCES\b|os error 13\b",
        ),
        evidence: None,
        root_cause: "The command could not be started: permission denied ({spawn_error}).",
        recommendation: "Make the program executable and make sure the user running sessionlet \
                         may enter every directory on its path and the working directory.",
        confidence: 0.95,
        fixes: &[
            "chmod +x the program or script.",
            "If it is a script, check that its #! line names an interpreter that exists.",
            "Check the permissions of spec.workingDir for the user running sessionlet.",
            "Check that the file system holding the program is not mounted noexec.",
        ],
    },
    Rule {
        id: "spawn-missing-path",
        kind: NotFound,
        matcher: Matcher::SpawnError(r"No such file or directory|\bENOENT\b|os error 2\b|not found"),
        evidence: None,
        root_cause: "The command could not be started because a path it needs does not exist \
                     ({spawn_error}): the program itself, the interpreter on a script's #! line, \
                     or the working directory.",
        recommendation: "Check spec.command, the script's #! line and spec.workingDir.",
        confidence: 0.85,
        fixes: &[
            "Create the working directory or correct spec.workingDir.",
            "Correct the program path, or the interpreter path on the script's #! line.",
        ],
    },
    Rule {
        id: "spawn-failed",
        kind: Unknown,
        matcher: Matcher::AnySpawnError,
        evidence: None,
        root_cause: "The command could not be started: {spawn_error}.",
        recommendation: "Fix what the error names; the process never ran, so it has no output.",
        confidence: 0.6,
        fixes: &["Run the command by hand as the same user to see the error in context."],
    },
    // ---- 2. Kernel and controller facts -------------------------------------
    Rule {
        id: "oom-counter",
        kind: OOM,
        matcher: Matcher::OomKilled,
        evidence: None,
        root_cause: "The kernel's OOM killer killed the session's processes ({oom_kills} kill(s) \
                     in its cgroup): together they needed more than the memory limit{memory_limit}.",
        recommendation: "Give the session more memory or make it use less.",
        confidence: 0.98,
        fixes: MEMORY_FIXES,
    },
    Rule {
        id: "stop-memory-limit",
        kind: OOM,
        matcher: Matcher::StopReason(&["MemoryLimitExceeded", "OOMKilled"]),
        evidence: None,
        root_cause: "The controller stopped the session ({stop_reason}): its process tree used \
                     more than the memory limit{memory_limit}.",
        recommendation: "Give the session more memory or make it use less.",
        confidence: 0.95,
        fixes: MEMORY_FIXES,
    },
    Rule {
        id: "stop-timed-out",
        kind: Timeout,
        matcher: Matcher::StopReason(&["TimedOut"]),
        evidence: None,
        root_cause: "The controller stopped the attempt ({stop_reason}): it ran longer than its \
                     timeout{timeout}.",
        recommendation: "Raise the timeout if the work legitimately takes this long; otherwise \
                         find where it hangs (the last output lines show how far it got).",
        confidence: 0.95,
        fixes: &[
            "Raise timeout in the session manifest.",
            "Split the work into smaller sessions.",
            "Give network calls inside the program their own, shorter timeouts.",
        ],
    },
    Rule {
        id: "stop-deadline-exceeded",
        kind: Timeout,
        matcher: Matcher::StopReason(&["DeadlineExceeded"]),
        evidence: None,
        root_cause: "The controller stopped the session ({stop_reason}): the session as a whole, \
                     retries included, ran past its active deadline.",
        recommendation: "Raise activeDeadline, or find out why the attempts take so long or keep \
                         failing and retrying (sessionlet events NAME lists every attempt, \
                         its exit and its backoff).",
        confidence: 0.95,
        fixes: &[
            "Raise activeDeadline in the session manifest.",
            "Lower the number of retries, or fix the failure that makes it retry.",
        ],
    },
    Rule {
        id: "stop-cpu-time-limit",
        kind: Timeout,
        matcher: Matcher::StopReason(&["CpuTimeLimitExceeded"]),
        evidence: None,
        root_cause: "The controller stopped the session ({stop_reason}): its process tree used \
                     more CPU time than resources.maxCpuTime allows.",
        recommendation: "Raise resources.maxCpuTime if the work needs it; a busy loop or a \
                         runaway child process also burns CPU time.",
        confidence: 0.95,
        fixes: &[
            "Raise resources.maxCpuTime in the session manifest.",
            "Look for a busy loop or a child process that never exits.",
        ],
    },
    Rule {
        id: "stop-stale",
        kind: Timeout,
        matcher: Matcher::StopReason(&["Stale"]),
        evidence: None,
        root_cause: "The controller restarted the session ({stop_reason}): it wrote no output for \
                     longer than staleAfter, so it was probably hung (a lock, a network call \
                     without a timeout, or input that never came).",
        recommendation: "Find what it waits on (the last output lines show where it stopped); \
                         raise staleAfter if long silent stretches are normal for this work.",
        confidence: 0.9,
        fixes: &[
            "Raise staleAfter, or make the program log progress during long steps.",
            "Give network calls inside the program their own timeouts.",
            "Make sure the program does not wait for input on stdin.",
        ],
    },
    Rule {
        id: "stop-token-budget",
        kind: Killed,
        matcher: Matcher::StopReason(&["TokenBudgetExceeded"]),
        evidence: None,
        root_cause: "The controller stopped the agent ({stop_reason}): it used more tokens than \
                     its maxTokens budget.",
        recommendation: "Raise maxTokens, or narrow the task so it needs fewer turns.",
        confidence: 0.95,
        fixes: &[
            "Raise the agent's maxTokens in the session manifest.",
            "Give the agent a smaller, more specific task or a lower agent.maxTurns.",
        ],
    },
    Rule {
        id: "stop-policy-violation",
        kind: Killed,
        matcher: Matcher::StopReason(&["PolicyViolation"]),
        evidence: None,
        root_cause: "The controller stopped the agent ({stop_reason}): it ran a command its \
                     policy forbids.",
        recommendation: "The status message (sessionlet describe NAME) names the command that \
                         was refused; change the prompt or, if the command is acceptable, the policy.",
        confidence: 0.95,
        fixes: &[
            "Tell the agent in its prompt which commands it must not run.",
            "Relax the policy's forbidden patterns if the command is in fact safe.",
        ],
    },
    Rule {
        id: "stop-deliberate",
        kind: Killed,
        matcher: Matcher::StopReason(&["Suspended", "SpecChanged", "Removed", "ControllerStopped"]),
        evidence: None,
        root_cause: "The controller stopped the session on purpose ({stop_reason}): it was \
                     suspended, its spec changed, its manifest was removed or the controller \
                     shut down. It did not crash.",
        recommendation: "Nothing is wrong with the program; the status message (sessionlet \
                         describe NAME) says why it was stopped.",
        confidence: 0.9,
        fixes: &[],
    },
    // ---- 3. How it ended -------------------------------------------------------
    Rule {
        id: "exit-127-command-not-found",
        kind: NotFound,
        matcher: Matcher::ExitCode(&[127]),
        evidence: Some(r"not found|No such file or directory"),
        root_cause: "The shell could not find a command it was asked to run (exit code 127).",
        recommendation: "Install the missing command or correct its name; check PATH in the \
                         session's env.",
        confidence: 0.9,
        fixes: &[
            "Correct the command name in spec.command or in the script.",
            "Install the missing program in the environment the session runs in.",
            "Set PATH in the session's env if the program lives outside the default PATH.",
        ],
    },
    Rule {
        id: "exit-126-cannot-execute",
        kind: Permission,
        matcher: Matcher::ExitCode(&[126]),
        evidence: Some(r"permission denied|cannot execute|is a directory"),
        root_cause: "The shell found the command but could not execute it (exit code 126): it is \
                     not executable, is a directory, or has a bad #! line.",
        recommendation: "Make the file executable (chmod +x) and check its #! line.",
        confidence: 0.85,
        fixes: &[
            "chmod +x the program or script.",
            "Check that the script's #! line names an interpreter that exists.",
            "Check that the file system is not mounted noexec.",
        ],
    },
    Rule {
        id: "signal-segv",
        kind: Segfault,
        matcher: Matcher::Signal(&[libc::SIGSEGV, libc::SIGBUS]),
        evidence: Some(SEGFAULT_TEXT),
        root_cause: "The process crashed on an invalid memory access: {signal}. This is a bug in \
                     the program or in a native library it loads, not in its input.",
        recommendation: "Get a backtrace (run it under gdb, or enable core dumps) and report it \
                         to the program's maintainers; try another version of the program or of \
                         its native dependencies.",
        confidence: 0.95,
        fixes: &[
            "Upgrade or downgrade the program or the native library that crashes.",
            "For Python, run with -X faulthandler to print the stack at the crash.",
            "Enable core dumps (ulimit -c unlimited) and inspect the core with gdb.",
        ],
    },
    Rule {
        id: "signal-kill",
        kind: Killed,
        matcher: Matcher::Signal(&[libc::SIGKILL]),
        evidence: Some(r"\bKilled\b"),
        root_cause: "The process was killed by {signal}, which sessionlet did not send for a \
                     limit. SIGKILL cannot be caught, so the program could not say anything. The \
                     usual senders are the kernel's OOM killer when no cgroup counter is \
                     available, a person or tool running kill -9, or a container runtime.",
        recommendation: "Check the kernel log (dmesg or journalctl -k) for \"Out of memory: \
                         Killed process\"; if it is there, treat this as out of memory.",
        confidence: 0.8,
        fixes: &[
            "Set resources.maxMemory so an OOM kill is detected and reported as such.",
            "Find who else sends signals to the session's processes (cron jobs, watchdogs).",
        ],
    },
    Rule {
        id: "signal-terminate",
        kind: Killed,
        matcher: Matcher::Signal(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT]),
        evidence: None,
        root_cause: "The process was told to stop by {signal}, which sessionlet did not send: a \
                     person or tool ran kill, the terminal closed, or the system is shutting \
                     down.",
        recommendation: "Find who sent the signal; stop sessions through sessionlet (suspend: \
                         true) so the reason is recorded.",
        confidence: 0.85,
        fixes: &["Use suspend: true in the manifest instead of killing the process by hand."],
    },
    Rule {
        id: "signal-cpu-rlimit",
        kind: Timeout,
        matcher: Matcher::Signal(&[libc::SIGXCPU]),
        evidence: None,
        root_cause: "The process was killed by {signal}: it used up its CPU time rlimit \
                     (RLIMIT_CPU, as set by ulimit -t).",
        recommendation: "Raise or remove the CPU time rlimit, or make the work cheaper.",
        confidence: 0.85,
        fixes: &["Raise the CPU time rlimit (ulimit -t) set for the session or its wrapper."],
    },
    // ---- 4. What the program said -------------------------------------------
    // Before SIGABRT: V8, the C++ runtime and Rust's allocator abort when
    // allocation fails, and the message is the real cause.
    Rule {
        id: "oom-text",
        kind: OOM,
        matcher: Matcher::Output(OOM_TEXT),
        evidence: None,
        root_cause: "The program ran out of memory: an allocation failed.",
        recommendation: "Give the session more memory or make the program use less; a runtime \
                         heap limit (Node's --max-old-space-size, Java's -Xmx) may be lower \
                         than the machine's.",
        confidence: 0.85,
        fixes: &[
            "Raise resources.maxMemory, or the runtime's own heap limit (--max-old-space-size, -Xmx).",
            "Process the input in smaller batches or stream it instead of loading it all at once.",
            "Check for a memory leak: memory that grows with every request or item.",
        ],
    },
    Rule {
        id: "signal-abort",
        kind: Abort,
        matcher: Matcher::Signal(&[libc::SIGABRT]),
        evidence: Some(ABORT_TEXT),
        root_cause: "The process aborted itself ({signal}): a failed assertion, an uncaught C++ \
                     exception, detected heap corruption or a fatal runtime error.",
        recommendation: "Read the last lines of stderr for the assertion or error; it is a bug \
                         or an unexpected state in the program.",
        confidence: 0.9,
        fixes: &[
            "Fix the condition the failed assertion or error names.",
            "Enable core dumps (ulimit -c unlimited) and inspect the core with gdb.",
        ],
    },
    Rule {
        id: "signal-trap",
        kind: Abort,
        matcher: Matcher::Signal(&[libc::SIGILL, libc::SIGFPE, libc::SIGTRAP, libc::SIGSYS]),
        evidence: None,
        root_cause: "The process crashed on {signal}: a CPU trap (an illegal instruction, an \
                     integer division by zero, a breakpoint or a forbidden system call). \
                     Compilers emit such traps for unreachable code and some runtimes use them \
                     to abort.",
        recommendation: "Get a backtrace with gdb; check the binary was built for this CPU \
                         (illegal instructions) and that no seccomp filter blocks it (SIGSYS).",
        confidence: 0.7,
        fixes: &[
            "Use a build of the program for this CPU and architecture.",
            "Enable core dumps (ulimit -c unlimited) and inspect the core with gdb.",
        ],
    },
    Rule {
        id: "signal-other",
        kind: Killed,
        matcher: Matcher::AnySignal,
        evidence: None,
        root_cause: "The process was killed by {signal}, which sessionlet did not send.",
        recommendation: "Find what sends this signal (its default action ends the process).",
        confidence: 0.6,
        fixes: &["Handle or ignore the signal in the program if it is expected."],
    },
    Rule {
        id: "segfault-text",
        kind: Segfault,
        matcher: Matcher::Output(SEGFAULT_TEXT),
        evidence: None,
        root_cause: "A process in the session crashed on an invalid memory access (a \
                     segmentation fault) and the session exited because of it.",
        recommendation: "Get a backtrace of the crashing program (gdb, core dumps, or -X \
                         faulthandler for Python) and report it to its maintainers.",
        confidence: 0.8,
        fixes: &[
            "Upgrade or downgrade the program or the native library that crashes.",
            "Enable core dumps (ulimit -c unlimited) and inspect the core with gdb.",
        ],
    },
    Rule {
        id: "abort-text",
        kind: Abort,
        matcher: Matcher::Output(ABORT_TEXT),
        evidence: None,
        root_cause: "A process in the session aborted (a failed assertion, an uncaught C++ \
                     exception, detected heap corruption or a fatal runtime error).",
        recommendation: "Read the quoted line and the lines before it for the failed condition.",
        confidence: 0.75,
        fixes: &["Fix the condition the failed assertion or error names."],
    },
    Rule {
        id: "auth-rejected",
        kind: Auth,
        matcher: Matcher::Output(concat!(
            r"\bHTTP Error 40[13]\b|\bHTTP/\d(?:\.\d)? 40[13]\b|\breturned error: 40[13]\b",
            r#"|\bstatus(?: code)?:? ?40[13]\b|\berror:? 40[13]\b|"(?:api_)?error_status":\s*40[13]\b"#,
            r"|\(40[13]\)|\b40[13] (?:Unauthorized|Forbidden)\b|\bUnauthorized\b",
            r"|invalid[ _-]?api[ _-]?key|invalid x-api-key|incorrect api key",
            r"|authentication[ _-](?:failed|error|required)|failed to authenticate",
            r"|\bnot logged in\b|invalid[ _-](?:auth[ _-])?token|token (?:has )?expired",
            r"|permission denied \(publickey",
        )),
        evidence: None,
        root_cause: "A server rejected the session's credentials (missing, invalid or expired, \
                     or not allowed to do this).",
        recommendation: "Check the credential the session uses (API key, token, login) is set in \
                         its environment and still valid; retrying will not help.",
        confidence: 0.85,
        fixes: &[
            "Set the API key or token in the session's env (e.g. ANTHROPIC_API_KEY for Claude Code).",
            "Rotate the key if it was revoked or expired, and check it belongs to the right account.",
            "For HTTP 403, check the account or key is allowed to use this resource.",
        ],
    },
    Rule {
        id: "rate-limited",
        kind: RateLimited,
        matcher: Matcher::Output(concat!(
            r"\bHTTP Error 429\b|\bHTTP/\d(?:\.\d)? 429\b|\breturned error: 429\b",
            r#"|\bstatus(?: code)?:? ?429\b|\berror:? 429\b|"(?:api_)?error_status":\s*429\b"#,
            r"|\(429\)|too many requests|rate[ _-]?limit(?:ed|s|ing)?\b",
            r"|\bquota (?:exceeded|exhausted)|\bRESOURCE_EXHAUSTED\b",
        )),
        evidence: None,
        root_cause: "A server rate limited the session (HTTP 429): too many requests or tokens \
                     in too short a time.",
        recommendation: "Run fewer of these sessions at once (a pool with a lower limit) and let \
                         the restart backoff space out the retries.",
        confidence: 0.85,
        fixes: &[
            "Put these sessions in a pool with a lower concurrency limit.",
            "Raise the restart backoff so retries wait longer.",
            "Ask the provider for a higher rate limit or quota.",
        ],
    },
    Rule {
        id: "api-overloaded",
        kind: RateLimited,
        matcher: Matcher::Output(concat!(
            r"\boverloaded_error\b|\bRepeated 529\b|\b529 Overloaded\b|API Error: Overloaded",
            r#"|"error":\s*"overloaded"|"(?:api_)?error_status":\s*529\b|\bHTTP Error 529\b"#,
            r"|API is at capacity",
        )),
        evidence: None,
        root_cause: "The remote API was over capacity (HTTP 529 Overloaded) and the client gave \
                     up. This is on the provider's side and usually temporary.",
        recommendation: "Retry later with backoff; the restart policy does this if it allows \
                         enough attempts.",
        confidence: 0.75,
        fixes: &[
            "Allow more restarts with a longer backoff.",
            "Give Claude Code a fallback model: agent.extraArgs: [--fallback-model, MODEL].",
        ],
    },
    Rule {
        id: "connection-refused",
        kind: Network,
        matcher: Matcher::Output(concat!(
            r"connection refused|\bECONNREFUSED\b|\bConnectionRefused(?:Error)?\b",
            r"|couldn'?t connect to server|could not connect to server|\[Errno 111\]|os error 111\b",
        )),
        evidence: None,
        root_cause: "A connection was refused: nothing was listening at the address the session \
                     connects to, or a firewall rejected it.",
        recommendation: "Check the server the session depends on is running and that the \
                         session has its right host and port (base URL, proxy settings).",
        confidence: 0.85,
        fixes: &[
            "Start the service the session depends on before the session.",
            "Correct the host or port in the session's config or env (e.g. a *_BASE_URL).",
            "Check HTTP(S)_PROXY / NO_PROXY in the session's env.",
        ],
    },
    Rule {
        id: "dns-failure",
        kind: Network,
        matcher: Matcher::Output(concat!(
            r"could not resolve host|couldn'?t resolve host|name or service not known",
            r"|temporary failure in name resolution|\bgetaddrinfo (?:ENOTFOUND|EAI_AGAIN|EAI_FAIL|EAI_NONAME)\b",
            r"|\bENOTFOUND\b|\bEAI_AGAIN\b|getaddrinfo failed|\bgaierror\b|no such host",
            r"|nodename nor servname provided|name does not resolve|failed to lookup address information",
            r"|dns error|\bNXDOMAIN\b",
        )),
        evidence: None,
        root_cause: "A host name could not be resolved (DNS failure): the name is wrong, or the \
                     machine has no working DNS or network.",
        recommendation: "Check the host name the session uses and the machine's DNS \
                         (/etc/resolv.conf); retry if the network was down.",
        confidence: 0.85,
        fixes: &[
            "Correct the host name in the session's config or env.",
            "Check the machine's network and /etc/resolv.conf.",
            "Allow more restarts with a backoff if the network is sometimes down.",
        ],
    },
    Rule {
        id: "tls-failure",
        kind: Network,
        matcher: Matcher::Output(concat!(
            r"certificate verify failed|\bCERTIFICATE_VERIFY_FAILED\b|SSL certificate problem",
            r"|self[- ]signed certificate|unable to (?:get local issuer|verify the first) certificate",
            r"|certificate has expired|\bCERT_HAS_EXPIRED\b|UNABLE_TO_VERIFY_LEAF_SIGNATURE",
            r"|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|ERR_TLS_CERT_ALTNAME_INVALID",
            r"|\[SSL: [A-Z_]+\]|\bSSLError\b|SSL routines|TLS handshake|handshake failure",
            r"|wrong version number|x509: certificate|invalid peer certificate|UnknownIssuer",
        )),
        evidence: None,
        root_cause: "A TLS connection failed: the server's certificate was not trusted (self-\
                     signed, unknown issuer, expired, wrong host name) or the handshake failed.",
        recommendation: "Check the URL (https vs http, right host) and that the session trusts \
                         the server's certificate authority.",
        confidence: 0.85,
        fixes: &[
            "Point the client at the right CA bundle (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, REQUESTS_CA_BUNDLE).",
            "Use https:// for TLS servers and http:// for plain ones.",
            "Renew the server's certificate if it expired.",
        ],
    },
    Rule {
        id: "network-unreachable",
        kind: Network,
        matcher: Matcher::Output(concat!(
            r"network is unreachable|\bENETUNREACH\b|no route to host|\bEHOSTUNREACH\b",
            r"|connection reset by peer|\bECONNRESET\b|\bFailedToOpenSocket\b|Unable to connect to API",
            r"|socket hang up|Stream ended without receiving any events|\bRemoteDisconnected\b",
            r"|connection aborted",
        )),
        evidence: None,
        root_cause: "The network connection failed: the host was unreachable or the connection \
                     was dropped.",
        recommendation: "Check the machine's network and the remote host; retry with backoff if \
                         the failure is intermittent.",
        confidence: 0.7,
        fixes: &[
            "Check the machine's network and firewall.",
            "Allow more restarts with a backoff for intermittent failures.",
        ],
    },
    Rule {
        id: "timeout-text",
        kind: Timeout,
        matcher: Matcher::Output(concat!(
            r"timed out|\bETIMEDOUT\b|\bESOCKETTIMEDOUT\b|deadline exceeded|\bTimeoutError\b",
            r"|timeout was reached|\bsocket\.timeout\b|\bRead ?Timeout\b|\bConnect ?Timeout\b",
            r"|operation timeout|request timeout|timeout exceeded",
        )),
        evidence: None,
        root_cause: "An operation inside the session timed out (usually a network request to a \
                     server that did not answer in time) and the program gave up.",
        recommendation: "Check the remote service is up and reachable; raise the program's own \
                         timeout if the service is just slow.",
        confidence: 0.7,
        fixes: &[
            "Raise the client's timeout (e.g. API_TIMEOUT_MS for Claude Code).",
            "Check the remote service's health and the network path to it.",
        ],
    },
    Rule {
        id: "server-error",
        kind: Network,
        matcher: Matcher::Output(concat!(
            r"\bAPI Error: 5\d\d\b|\bHTTP Error 5\d\d\b|\bHTTP/\d(?:\.\d)? 5\d\d\b|\breturned error: 5\d\d\b",
            r#"|"(?:api_)?error_status":\s*5\d\d\b|internal server error|bad gateway|service unavailable"#,
            r"|gateway time-?out",
        )),
        evidence: None,
        root_cause: "A remote server answered with an error (HTTP 5xx): the failure is on the \
                     server's side.",
        recommendation: "Retry later; if it persists, check the server or gateway the session \
                         talks to.",
        confidence: 0.65,
        fixes: &[
            "Allow more restarts with a backoff.",
            "Check the health of the server or gateway (its logs show the error).",
        ],
    },
    Rule {
        id: "permission-text",
        kind: Permission,
        matcher: Matcher::Output(concat!(
            r"permission denied|\bEACCES\b|operation not permitted|\bEPERM\b|\bPermissionError\b",
            r"|access is denied|read-only file system|\bEROFS\b|os error 13\b",
        )),
        evidence: None,
        root_cause: "The program was not allowed to access a file or run a command it needed \
                     (permission denied).",
        recommendation: "Check the ownership and mode of the path the quoted line names, for the \
                         user sessionlet runs the session as.",
        confidence: 0.7,
        fixes: &[
            "Fix the ownership or mode of the file or directory named in the error.",
            "Write to a directory the session owns (its working directory) instead.",
        ],
    },
    Rule {
        id: "not-found-text",
        kind: NotFound,
        matcher: Matcher::Output(concat!(
            r"command not found|: not found$|No such file or directory|\bENOENT\b",
            r"|\bFileNotFoundError\b|\bModuleNotFoundError\b|No module named|Cannot find module",
            r"|executable file not found|os error 2\b",
        )),
        evidence: None,
        root_cause: "Something the program needs was not found: a file, a command or a module.",
        recommendation: "Check the path or name in the quoted line: create the file, install the \
                         command or module, or correct the path (relative paths start from \
                         spec.workingDir).",
        confidence: 0.6,
        fixes: &[
            "Create the missing file or correct its path.",
            "Install the missing command or module in the session's environment.",
            "Check spec.workingDir: relative paths are resolved from it.",
        ],
    },
    Rule {
        id: "panic-text",
        kind: Abort,
        matcher: Matcher::Output(r"panicked at|^panic: "),
        evidence: None,
        root_cause: "The program panicked: it hit a state it treats as a bug and stopped.",
        recommendation: "The quoted line and the message after it say which condition failed; \
                         set RUST_BACKTRACE=1 (Rust) or read the goroutine trace (Go).",
        confidence: 0.6,
        fixes: &["Set RUST_BACKTRACE=1 in the session's env to get a backtrace."],
    },
    // ---- 5. Reasons that say how little is known --------------------------------
    Rule {
        id: "exited-while-away",
        kind: Unknown,
        matcher: Matcher::StopReason(&["ExitedWhileAway"]),
        evidence: None,
        root_cause: "The process ended while no controller was watching it ({stop_reason}): \
                     the controller, or the keeper that is the parent of the sessions, was not \
                     running, so its exit code or signal was not recorded. It may have exited \
                     by itself, crashed or been killed.",
        recommendation: "Read the last output lines (sessionlet logs NAME) and the kernel log \
                         (dmesg or journalctl -k, for an OOM kill) for why it ended; keep the \
                         controller running so that exits are recorded.",
        confidence: 0.5,
        fixes: &[
            "Run the controller under a supervisor that restarts it (deploy/sessionlet.service).",
            "Set resources.maxMemory so an OOM kill is detected and reported as such.",
        ],
    },
    Rule {
        id: "agent-failed",
        kind: Unknown,
        matcher: Matcher::StopReason(&["AgentFailed"]),
        evidence: Some(r#""is_error":\s*true|"type":\s*"result""#),
        root_cause: "The agent run ended with an error result ({stop_reason}) that matches no \
                     known failure pattern; the status message gives the result's subtype \
                     (for example error_max_turns or error_during_execution).",
        recommendation: "Read the final result in the session's output (sessionlet logs NAME) \
                         and the status message (sessionlet describe NAME) for what went wrong.",
        confidence: 0.6,
        fixes: &[
            "For error_max_turns, raise agent.maxTurns or give the agent a smaller task.",
            "For error_max_budget_usd, raise agent.maxBudgetUsd.",
        ],
    },
    Rule {
        id: "agent-abnormal",
        kind: Unknown,
        matcher: Matcher::StopReason(&["AgentAbnormal"]),
        evidence: None,
        root_cause: "The agent exited without writing its final result ({stop_reason}): the \
                     CLI crashed or was cut off before it finished, and its output matches no \
                     known failure pattern.",
        recommendation: "Read the end of its stderr (sessionlet logs NAME --stderr) for what \
                         the CLI reported before it exited.",
        confidence: 0.5,
        fixes: &["Check the agent binary runs by hand with the same arguments and environment."],
    },
    // ---- 6. Conventions of wrappers --------------------------------------------
    Rule {
        id: "exit-124-timeout-command",
        kind: Timeout,
        matcher: Matcher::ExitCode(&[124]),
        evidence: None,
        root_cause: "Exit code 124 is what timeout(1) returns when it kills a command for running \
                     too long: a wrapper inside the session put a time limit on it.",
        recommendation: "Raise the limit given to timeout(1), or find out why the command is \
                         slow (the last output lines show how far it got).",
        confidence: 0.6,
        fixes: &[
            "Raise the duration passed to timeout(1) in the session's command.",
            "Use the manifest's timeout instead, so the controller records the reason.",
        ],
    },
    Rule {
        id: "exit-137-sigkill",
        kind: Killed,
        matcher: Matcher::ExitCode(&[137]),
        evidence: Some(r"\bKilled\b"),
        root_cause: "Exit code 137 is 128 + 9: a shell or wrapper inside the session reported \
                     that its child was killed by SIGKILL, often the kernel's OOM killer.",
        recommendation: "Check the kernel log (dmesg or journalctl -k) for \"Out of memory: \
                         Killed process\"; if it is there, treat this as out of memory.",
        confidence: 0.6,
        fixes: &["Set resources.maxMemory so an OOM kill is detected and reported as such."],
    },
    Rule {
        id: "exit-139-sigsegv",
        kind: Segfault,
        matcher: Matcher::ExitCode(&[139]),
        evidence: Some(SEGFAULT_TEXT),
        root_cause: "Exit code 139 is 128 + 11: a shell or wrapper inside the session reported \
                     that its child crashed with SIGSEGV.",
        recommendation: "Get a backtrace of the crashing program (gdb, core dumps).",
        confidence: 0.7,
        fixes: &["Enable core dumps (ulimit -c unlimited) and inspect the core with gdb."],
    },
    Rule {
        id: "exit-134-sigabrt",
        kind: Abort,
        matcher: Matcher::ExitCode(&[134]),
        evidence: Some(ABORT_TEXT),
        root_cause: "Exit code 134 is 128 + 6: a shell or wrapper inside the session reported \
                     that its child aborted (SIGABRT).",
        recommendation: "Read stderr for the failed assertion or error of the child.",
        confidence: 0.7,
        fixes: &["Fix the condition the failed assertion or error names."],
    },
    Rule {
        id: "exit-128-plus-term",
        kind: Killed,
        matcher: Matcher::ExitCode(&[129, 130, 131, 143]),
        evidence: None,
        root_cause: "Exit code {exit_code} is 128 + the number of a signal asking it to stop \
                     (129 SIGHUP, 130 SIGINT, 131 SIGQUIT, 143 SIGTERM): the program, or a shell \
                     around it, was told to terminate and exited.",
        recommendation: "Find who sent the signal; stop sessions through sessionlet (suspend: \
                         true) so the reason is recorded.",
        confidence: 0.6,
        fixes: &["Use suspend: true in the manifest instead of killing the process by hand."],
    },
    // ---- 7. Any other reason the controller recorded ----------------------------
    Rule {
        id: "stop-other",
        kind: Unknown,
        matcher: Matcher::AnyStopReason,
        evidence: None,
        root_cause: "The attempt ended with reason {stop_reason}, and nothing else known about \
                     it explains why.",
        recommendation: "The status message (sessionlet describe NAME) says what the controller \
                         saw; the last output lines (sessionlet logs NAME) may say more.",
        confidence: 0.3,
        fixes: &[],
    },
];
