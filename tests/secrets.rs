//! Secrets, through the real binary: a session sees the minimal base
//! environment, what `--pass-env` names, its `envFrom` files and `spec.env`,
//! nothing else of the controller's; and no value of `env` or `envFrom`
//! appears in anything sessionlet writes or prints.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Starts `sessionlet run --dir DIR` with `envs` added to the controller's
/// environment (the caller's environment otherwise, as `Controller::start`).
fn start_with_env(dir: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Controller {
    let log = dir
        .parent()
        .unwrap_or(dir)
        .join(format!("controller-{}.log", std::process::id()));
    let child = Command::new(bin())
        .arg("run")
        .arg("--dir")
        .arg(dir)
        .args(["--resync-interval", "2s"])
        .args(extra)
        .env("RUST_LOG", "debug")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start sessionlet");
    Controller {
        child: Some(child),
        dir: dir.to_path_buf(),
        status_dir: dir.to_path_buf(),
        log,
    }
}

/// Runs a CLI command and returns its stdout and stderr together.
fn cli(args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run sessionlet");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file under `root`, with its content (binary files lossily).
fn all_files(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                let text =
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned();
                out.push((p, text));
            }
        }
    }
    out
}

/// Everything sessionlet wrote under `dir` (status files, crash dumps, the
/// controller's files) except the sessions' own output logs and the
/// manifests themselves, plus what `get -o yaml`, `get -o json`,
/// `describe NAME` and the controller's stderr say.
fn everything_said(dir: &Path, names: &[&str], c: &Controller) -> Vec<(String, String)> {
    let d = dir.to_str().unwrap();
    let mut said: Vec<(String, String)> = all_files(dir)
        .into_iter()
        .filter(|(p, _)| {
            let path = p.to_string_lossy();
            let output_log = path.ends_with(".log") && path.contains(".logs/");
            let env_file = path.ends_with(".env");
            // The manifests are what the user wrote.
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let manifest = name.ends_with(".yaml")
                && !name.ends_with(".status.yaml")
                && p.parent() == Some(dir);
            !output_log && !env_file && !manifest
        })
        .map(|(p, t)| (p.display().to_string(), t))
        .collect();
    said.push((
        "get -o yaml".into(),
        cli(&["get", "--dir", d, "-o", "yaml"]),
    ));
    said.push((
        "get -o json".into(),
        cli(&["get", "--dir", d, "-o", "json"]),
    ));
    said.push((
        "get -o wide".into(),
        cli(&["get", "--dir", d, "-o", "wide"]),
    ));
    for name in names {
        said.push((
            format!("describe {name}"),
            cli(&["describe", name, "--dir", d]),
        ));
    }
    said.push(("the controller's stderr".into(), c.log()));
    said
}

/// Fails naming every place `secret` appears in.
fn assert_nowhere(said: &[(String, String)], secret: &str) {
    let found: Vec<&str> = said
        .iter()
        .filter(|(_, text)| text.contains(secret))
        .map(|(place, _)| place.as_str())
        .collect();
    assert!(found.is_empty(), "{secret:?} appears in {found:?}");
}

/// The stdout log of a session's first attempt.
fn stdout_of(dir: &Path, stem: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{stem}.logs/attempt-1.stdout.log")))
        .unwrap_or_default()
}

/// ROT13 on letters and ROT5 on digits: what the sessions print instead of
/// a value, to prove they received it without writing it.
fn rot(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' => (((c as u8 - b'a') + 13) % 26 + b'a') as char,
            'A'..='Z' => (((c as u8 - b'A') + 13) % 26 + b'A') as char,
            '0'..='9' => (((c as u8 - b'0') + 5) % 10 + b'0') as char,
            c => c,
        })
        .collect()
}

/// A shell command printing `$VAR` rotated (see [`rot`]).
fn print_rotated(var: &str) -> String {
    format!("printf '{var}=%s\\n' \"$(printf %s \"${var}\" | tr a-zA-Z0-9 n-za-mN-ZA-M5-90-4)\"")
}

// ---------------------------------------------------------------------------

#[test]
fn a_non_string_env_value_appears_in_no_message() {
    let (_tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    write_file(
        &dir.join("pin.yaml"),
        &session(
            "pin",
            "command: ['true']\nenv:\n  PIN: 998877665544\n  RATIO: 0.7319\n  LIST: [424242]",
        ),
    );
    let file = dir.join("pin.yaml");
    let validate = cli(&["validate", file.to_str().unwrap()]);
    let json = cli(&["validate", "-o", "json", file.to_str().unwrap()]);
    assert!(
        validate.contains("spec.env.PIN: expected a string, found an integer"),
        "{validate}"
    );
    let mut c = start_with_env(&dir, &[], &[]);
    let s = wait_phase(&dir, "pin", "Invalid");
    assert!(
        serde_json::to_string(&s).unwrap().contains("spec.env.PIN"),
        "the status names the key: {s:#?}"
    );
    prove_rescan(&dir);
    let mut said = everything_said(&dir, &["pin"], &c);
    said.push(("validate".into(), validate));
    said.push(("validate -o json".into(), json));
    for secret in ["998877665544", "0.7319", "424242"] {
        assert_nowhere(&said, secret);
    }
    assert!(c.stop().success(), "{}", c.log());
}

/// Drops a one-shot manifest in and waits for it to complete.
fn prove_rescan(dir: &Path) {
    write_file(
        &dir.join("probe.yaml"),
        &session("probe", "command: ['true']\nrestartPolicy: Never"),
    );
    wait_phase(dir, "probe", "Completed");
}

#[test]
fn sessions_do_not_inherit_the_controller_environment_unless_passed() {
    const SECRET: &str = "controller-secret-3141";
    let controller_env = [
        ("SESSIONLET_TEST_SECRET", SECRET),
        ("SESSIONLET_GLOB_A", "glob-a-2718"),
        ("SESSIONLET_GLOB_B", "glob-b-1618"),
        ("SESSIONLET_OTHER", "other-1414"),
        ("LANG", "C.UTF-8"),
    ];
    // A session that prints its whole environment and fails, so that its
    // output also lands in a crash dump.
    let printenv = "command: [/bin/sh, -c, 'env | sort; exit 3']\nrestartPolicy: Never";

    // Without --pass-env: only the base.
    let (_tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    write_file(&dir.join("show.yaml"), &session("show", printenv));
    let mut c = start_with_env(&dir, &[], &controller_env);
    wait_phase(&dir, "show", "Failed");
    let out = stdout_of(&dir, "show");
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for name in &names {
        assert!(
            ["PATH", "HOME", "LANG", "TZ", "USER", "PWD", "SHLVL", "_"].contains(name)
                || name.starts_with("SESSIONLET_SESSION")
                || name.starts_with("SESSIONLET_ATTEMPT"),
            "{name} reached the session:\n{out}"
        );
    }
    assert!(names.contains(&"PATH"), "{out}");
    assert!(out.contains("LANG=C.UTF-8"), "the base passes LANG:\n{out}");
    let said = everything_said(&dir, &["show"], &c);
    for (_, value) in controller_env.iter().filter(|(k, _)| *k != "LANG") {
        assert!(!out.contains(value), "{value} reached the session:\n{out}");
        assert_nowhere(&said, value);
    }
    assert!(c.stop().success(), "{}", c.log());

    // With --pass-env: a name and a glob, nothing more.
    let (_tmp2, dir2) = sessions_dir();
    let _keeper2 = KeeperGuard(dir2.clone());
    write_file(&dir2.join("show.yaml"), &session("show", printenv));
    let mut c = start_with_env(
        &dir2,
        &[
            "--pass-env",
            "SESSIONLET_TEST_SECRET",
            "--pass-env",
            "SESSIONLET_GLOB_*",
        ],
        &controller_env,
    );
    wait_phase(&dir2, "show", "Failed");
    let out = stdout_of(&dir2, "show");
    for line in [
        format!("SESSIONLET_TEST_SECRET={SECRET}"),
        "SESSIONLET_GLOB_A=glob-a-2718".to_string(),
        "SESSIONLET_GLOB_B=glob-b-1618".to_string(),
    ] {
        assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
    }
    assert!(!out.contains("other-1414"), "not passed, yet seen:\n{out}");
    assert!(c.stop().success(), "{}", c.log());
}

#[test]
fn a_pass_env_assignment_is_refused_without_echoing_its_value() {
    let (_tmp, dir) = sessions_dir();
    let out = Command::new(bin())
        .args(["run", "--dir", dir.to_str().unwrap()])
        .args(["--pass-env", "TOKEN=hunter2-9876"])
        .output()
        .expect("run sessionlet");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("not an assignment"), "{text}");
    // clap quotes the argument it refused: the value is in the user's own
    // command line, not in anything sessionlet made up, but say nothing more.
    assert!(!text.contains("controller started"), "{text}");
}

#[test]
fn env_from_files_reach_the_session_and_their_values_appear_nowhere() {
    let (tmp, dir) = sessions_dir();
    let _keeper = KeeperGuard(dir.clone());
    const TOKEN: &str = "tok5f3a9cxq";
    const RELATIVE: &str = "relative77aa";
    const OVERRIDDEN: &str = "overridden-4d4d";
    // An absolute path outside the manifest directory, and a relative one.
    let absolute = tmp.path().join("app.env");
    std::fs::write(
        &absolute,
        format!("# credentials\nexport APP_TOKEN={TOKEN}\nSHARED={OVERRIDDEN}\n"),
    )
    .unwrap();
    std::fs::create_dir(dir.join("creds")).unwrap();
    std::fs::write(
        dir.join("creds/rel.env"),
        format!("REL='{RELATIVE}'\nSHARED=from-the-second-file\n"),
    )
    .unwrap();
    let command = format!(
        "{}; {}; {}; exit 3",
        print_rotated("APP_TOKEN"),
        print_rotated("REL"),
        print_rotated("SHARED")
    );
    write_file(
        &dir.join("uses.yaml"),
        &session(
            "uses",
            &format!(
                "command: [/bin/sh, -c, {command:?}]\nrestartPolicy: Never\nenvFrom:\n  - file: {}\n  - file: creds/rel.env\nenv:\n  VISIBLE: plain",
                absolute.display()
            ),
        ),
    );
    // A malformed file: the spawn fails naming the file and the line.
    std::fs::write(
        dir.join("creds/bad.env"),
        "OK=1\nthis-line-is-the-secret-5150\n",
    )
    .unwrap();
    write_file(
        &dir.join("broken.yaml"),
        &session(
            "broken",
            "command: ['true']\nrestartPolicy: Never\nenvFrom: [{file: creds/bad.env}]",
        ),
    );
    write_file(
        &dir.join("missing.yaml"),
        &session(
            "missing",
            "command: ['true']\nrestartPolicy: Never\nenvFrom: [{file: creds/none.env}]",
        ),
    );
    let mut c = start_with_env(&dir, &[], &[]);
    let failed = wait_phase(&dir, "uses", "Failed");
    let out = stdout_of(&dir, "uses");
    assert!(out.contains(&format!("APP_TOKEN={}", rot(TOKEN))), "{out}");
    assert!(out.contains(&format!("REL={}", rot(RELATIVE))), "{out}");
    // A later file overrides an earlier one.
    assert!(
        out.contains(&format!("SHARED={}", rot("from-the-second-file"))),
        "{out}"
    );
    assert!(
        std::fs::read_dir(dir.join("uses.crashes")).is_ok_and(|mut d| d.next().is_some()),
        "no crash dump was written: {failed:#?}"
    );

    let broken = wait_phase(&dir, "broken", "Failed");
    let text = serde_json::to_string(&broken).unwrap();
    assert!(
        text.contains("bad.env") && text.contains("line 2: expected NAME=VALUE"),
        "the status names the file and the line: {broken:#?}"
    );
    let missing = wait_phase(&dir, "missing", "Failed");
    let text = serde_json::to_string(&missing).unwrap();
    assert!(
        text.contains("none.env") && text.contains("cannot read the file"),
        "{missing:#?}"
    );

    let said = everything_said(&dir, &["uses", "broken", "missing"], &c);
    for secret in [TOKEN, RELATIVE, OVERRIDDEN, "this-line-is-the-secret-5150"] {
        assert_nowhere(&said, secret);
    }
    assert!(c.stop().success(), "{}", c.log());
}
