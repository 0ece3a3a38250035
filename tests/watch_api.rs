//! The local API through the real binary: every endpoint on the Unix
//! socket, the peer check, TCP acting with and without the token, the
//! OpenAPI description against the server, restart and stop.

mod common;
mod watch_common;

use std::path::Path;

use common::*;
use serde_json::Value;
use watch_common::*;

fn pool(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  template:\n    spec:\n      command: [/bin/sh, -c, 'while :; do sleep 0.2; done']\n      terminationGracePeriod: 2s\n"
    )
}

fn pid_of(s: &Value) -> Option<u64> {
    s["status"]["pid"].as_u64()
}

#[test]
fn every_read_endpoint_answers_on_the_socket() {
    let (_tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &long("web"));
    write_file(&dir.join("workers.yaml"), &pool("workers", 1));
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "web", "Running");
    wait_api(&dir);

    let socket = socket(&dir);
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(&socket).expect("the socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "only its owner may connect"
    );

    let list = wait_for("web Running in the list", || {
        let a = unix(&dir, "GET", "/api/v1/sessions");
        (a.status == 200).then_some(())?;
        let v = a.json();
        v["items"]
            .as_array()?
            .iter()
            .any(|d| d["metadata"]["name"] == "web" && d["status"]["phase"] == "Running")
            .then_some(v)
    });
    assert_eq!(list["kind"], "SessionList");

    let one = unix(&dir, "GET", "/api/v1/sessions/web");
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["metadata"]["name"], "web");
    assert_eq!(one.header("content-type"), Some("application/json"));

    let missing = unix(&dir, "GET", "/api/v1/sessions/nope");
    assert_eq!(missing.status, 404);
    let e = missing.json();
    assert!(e["error"].as_str().unwrap_or("").contains("nope"), "{e}");
    assert!(e["hint"].is_string(), "{e}");

    let pools = unix(&dir, "GET", "/api/v1/pools").json();
    assert!(
        pools["items"]
            .as_array()
            .is_some_and(|p| p.iter().any(|d| d["metadata"]["name"] == "workers")),
        "{pools}"
    );
    assert_eq!(unix(&dir, "GET", "/api/v1/pools/workers").status, 200);
    assert_eq!(unix(&dir, "GET", "/api/v1/pools/nope").status, 404);

    let ctl = unix(&dir, "GET", "/api/v1/controller").json();
    assert_eq!(ctl["kind"], "ControllerStatus");
    assert_eq!(ctl["healthy"], true, "{ctl}");

    let ev = unix(&dir, "GET", "/api/v1/events?object=web&since=1h");
    assert_eq!(ev.status, 200);
    assert!(ev.json()["items"].is_array());
    let bad = unix(&dir, "GET", "/api/v1/events?since=yesterday");
    assert_eq!(bad.status, 400);
    assert!(bad.json()["hint"]
        .as_str()
        .unwrap_or("")
        .contains("RFC 3339"));

    let logs = unix(&dir, "GET", "/api/v1/sessions/web/logs?tail=3").json();
    assert_eq!(logs["tail"], 3);
    assert!(logs["stdout"]["lines"].is_array(), "{logs}");
    assert_eq!(
        unix(&dir, "GET", "/api/v1/sessions/web/logs?tail=x").status,
        400
    );

    assert_eq!(unix(&dir, "GET", "/healthz").status, 200);
    assert_eq!(unix(&dir, "GET", "/nothing-here").status, 404);
    assert_eq!(unix(&dir, "DELETE", "/api/v1/sessions/web").status, 405);

    // The stream opens with the current documents, then `synced`.
    let events = watch_until(&dir, "synced", |e| e.iter().any(|(n, _)| n == "synced"));
    assert!(
        events
            .iter()
            .any(|(n, d)| n == "session" && d["metadata"]["name"] == "web"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(n, d)| n == "pool" && d["metadata"]["name"] == "workers"),
        "{events:?}"
    );
}

#[test]
fn the_stream_sends_a_change_as_it_happens() {
    let (_tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &long("web"));
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "web", "Running");
    wait_api(&dir);
    let dir2 = dir.clone();
    let edit = std::thread::spawn(move || {
        // Once the stream is open (its first lines were read), suspend.
        wait_for("the watcher to connect", || {
            std::fs::read_to_string(dir2.join("watching")).ok()
        });
        write_file(
            &dir2.join("web.yaml"),
            &format!("{}  suspend: true\n", long("web")),
        );
        // Once the stream said so, delete the manifest.
        wait_for("the watcher to see Cancelled", || {
            std::fs::read_to_string(dir2.join("cancelled")).ok()
        });
        std::fs::remove_file(dir2.join("web.yaml")).expect("remove the manifest");
    });
    let events = watch_until(&dir, "web deleted", |e| {
        if e.iter().any(|(n, _)| n == "synced") {
            let _ = std::fs::write(dir.join("watching"), "1");
        }
        if e.iter()
            .any(|(n, d)| n == "session" && d["status"]["phase"] == "Cancelled")
        {
            let _ = std::fs::write(dir.join("cancelled"), "1");
        }
        e.iter()
            .any(|(n, d)| n == "deleted" && d["name"] == "web" && d["kind"] == "Session")
    });
    edit.join().expect("edit");
    let synced = events
        .iter()
        .position(|(n, _)| n == "synced")
        .unwrap_or(usize::MAX);
    let cancelled = events
        .iter()
        .position(|(n, d)| n == "session" && d["status"]["phase"] == "Cancelled")
        .unwrap_or(0);
    assert!(
        synced < cancelled,
        "the change came live, after the snapshot: {events:?}"
    );
}

#[test]
fn a_second_uid_cannot_connect_to_the_socket() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to drop to a second uid (uid 12345)");
        return;
    }
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: needs python3 to connect as uid 12345");
        return;
    }
    let (tmp, dir) = sessions_dir();
    // The folders must be reachable by uid 12345, so that only the socket's
    // own mode and the peer check stand in the way.
    use std::os::unix::fs::PermissionsExt;
    for p in [tmp.path(), dir.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    write_file(&dir.join("web.yaml"), &long("web"));
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "web", "Running");
    wait_api(&dir);
    std::fs::set_permissions(
        dir.join(".sessionlet"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let script = r#"
import os, socket, sys
os.setgid(12345); os.setuid(12345)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("refused", e.errno); sys.exit(0)
s.sendall(b"GET /api/v1/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
s.settimeout(30)
try:
    data = s.recv(65536)
except OSError:
    data = b""
print("got", len(data), data[:40])
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(socket(&dir))
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("refused") || text.starts_with("got 0"),
        "uid 12345 must not be answered: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Our own user still is.
    assert_eq!(unix(&dir, "GET", "/api/v1/sessions").status, 200);
}

#[test]
fn over_tcp_acting_needs_the_token() {
    let (tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &long("web"));
    {
        let c = Controller::start(&dir, &["--http-addr", "127.0.0.1:0"]);
        wait_phase(&dir, "web", "Running");
        let addr = http_addr(&c);
        let read = tcp(&addr, "GET", "/api/v1/sessions/web", &[]);
        assert_eq!(read.status, 200, "reads are open without a token file");
        let act = tcp(&addr, "POST", "/api/v1/sessions/web/restart", &[]);
        assert_eq!(act.status, 403);
        assert!(act.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("acting over TCP is off"));
        assert!(act.json()["hint"]
            .as_str()
            .unwrap_or("")
            .contains("--http-token-file"));
    }
    let token = "s3cret-token-0123456789";
    let file = tmp.path().join("token");
    std::fs::write(&file, format!("{token}\n")).expect("token");
    let file = file.display().to_string();
    let c = Controller::start(
        &dir,
        &["--http-addr", "127.0.0.1:0", "--http-token-file", &file],
    );
    let before = wait_phase(&dir, "web", "Running");
    let addr = http_addr(&c);
    assert_eq!(
        tcp(&addr, "GET", "/api/v1/sessions", &[]).status,
        401,
        "reads need the token too"
    );
    assert_eq!(
        tcp(&addr, "GET", "/healthz", &[]).status,
        200,
        "probes do not"
    );
    let wrong = tcp(
        &addr,
        "POST",
        "/api/v1/sessions/web/restart",
        &[("Authorization", "Bearer s3cret-token-0123456780")],
    );
    assert_eq!(wrong.status, 401);
    // The dashboard's way in: /?token=T once sets a cookie that carries it.
    let door = tcp(&addr, "GET", &format!("/?token={token}"), &[]);
    assert_eq!(door.status, 303, "{}", door.body);
    let cookie = door.header("set-cookie").unwrap_or("").to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap_or("").to_string();
    assert_eq!(
        tcp(&addr, "GET", "/api/v1/sessions", &[("Cookie", &pair)]).status,
        200
    );
    assert_eq!(tcp(&addr, "GET", "/?token=wrong", &[]).status, 401);
    let bearer = format!("Bearer {token}");
    let ok = tcp(
        &addr,
        "POST",
        "/api/v1/sessions/web/restart",
        &[("Authorization", &bearer)],
    );
    assert_eq!(ok.status, 202, "{}", ok.body);
    assert_eq!(ok.json()["accepted"], true);
    wait_status(&dir, "web", "a new attempt", |s| {
        s["status"]["phase"] == "Running" && pid_of(s).is_some() && pid_of(s) != pid_of(&before)
    });
    // The socket needs no token, even with one configured for TCP.
    wait_api(&dir);
    assert_eq!(unix(&dir, "POST", "/api/v1/sessions/web/stop").status, 202);
}

#[test]
fn a_restart_through_the_api_is_not_a_failure() {
    let (_tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &long("web"));
    let _c = Controller::start(&dir, &[]);
    let before = wait_phase(&dir, "web", "Running");
    wait_api(&dir);
    let a = unix(&dir, "POST", "/api/v1/sessions/web/restart");
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.json()["action"], "restart");
    // backoff.initialDelay is 60s: an ordinary exit would wait it out in Recovering.
    let after = wait_status(&dir, "web", "a new attempt running", |s| {
        s["status"]["phase"] == "Running" && pid_of(s).is_some() && pid_of(s) != pid_of(&before)
    });
    assert_eq!(
        after["status"]["attempt"],
        before["status"]["attempt"].as_u64().unwrap_or(0) + 1
    );
    assert_eq!(
        after["status"]["restarts"], 0,
        "not counted as a restart after a failure"
    );
    assert_eq!(
        after["status"]["consecutiveFailures"].as_u64().unwrap_or(0),
        0
    );
    assert_eq!(after["status"]["lastExit"]["reason"], "RestartRequested");
    assert!(
        after["status"]["lastExit"]["crashDump"].is_null(),
        "no crash dump for a requested restart"
    );
    assert_eq!(
        unix(&dir, "POST", "/api/v1/sessions/nope/restart").status,
        404
    );
}

fn stopped(s: &Value) -> bool {
    s["status"]["phase"] == "Cancelled" && s["status"]["reason"] == "StoppedByRequest"
}

#[test]
fn a_stop_holds_until_the_spec_changes() {
    let (_tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &long("web"));
    let c = Controller::start(&dir, &[]);
    let before = wait_phase(&dir, "web", "Running");
    wait_api(&dir);
    let a = unix(&dir, "POST", "/api/v1/sessions/web/stop");
    assert_eq!(a.status, 202, "{}", a.body);
    wait_status(&dir, "web", "stopped by request", stopped);
    let pid = pid_of(&before).unwrap_or(0) as u32;
    wait_for("the old process gone", || (!alive(pid)).then_some(()));
    // A rescan (a resync, an unrelated file) does not start it.
    write_file(&dir.join("other.yaml"), &long("other"));
    wait_phase(&dir, "other", "Running");
    assert!(
        stopped(&status(&dir, "web").unwrap_or_default()),
        "still held"
    );
    assert!(
        c.log().contains("stop asked through the API"),
        "{}",
        c.log()
    );
    // A spec change releases it.
    write_file(
        &dir.join("web.yaml"),
        &long("web").replace("sleep 0.1", "sleep 0.15"),
    );
    wait_phase(&dir, "web", "Running");
}

#[test]
fn a_stop_survives_a_controller_restart_and_a_restart_releases_it() {
    let (_tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &long("web"));
    {
        let mut c = Controller::start(&dir, &[]);
        wait_phase(&dir, "web", "Running");
        wait_api(&dir);
        assert_eq!(unix(&dir, "POST", "/api/v1/sessions/web/stop").status, 202);
        wait_status(&dir, "web", "stopped by request", stopped);
        assert!(c.stop().success());
    }
    let c = Controller::start(&dir, &[]);
    wait_api(&dir);
    // The new controller has written its statuses once its API answers a pass.
    wait_for("the new controller's first pass", || {
        let v = unix(&dir, "GET", "/api/v1/sessions/web");
        (v.status == 200).then(|| v.json())
    });
    let s = status(&dir, "web").unwrap_or_default();
    assert!(stopped(&s), "still held after the restart: {s}");
    assert!(!c.log().contains("web: spawned"), "{}", c.log());
    // `restart` releases the hold.
    assert_eq!(
        unix(&dir, "POST", "/api/v1/sessions/web/restart").status,
        202
    );
    let s = wait_phase(&dir, "web", "Running");
    assert_eq!(s["status"]["restarts"], 0);
}

// ---------------------------------------------------------------------------
// The OpenAPI description against the server.

fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => {
            let mut at = spec;
            for part in r.trim_start_matches("#/").split('/') {
                at = &at[part];
            }
            resolve(spec, at)
        }
        None => v,
    }
}

/// Checks that `value` has every required field of `schema`, recursively
/// (objects, array items), and the right JSON types where one is given.
fn check(spec: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string() || (value.is_null() && schema["nullable"] == true),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !ok {
        problems.push(format!("{at}: expected {ty}, got {value}"));
        return;
    }
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(value) {
            problems.push(format!("{at}: {value} is not one of {e:?}"));
        }
    }
    for r in schema["required"].as_array().into_iter().flatten() {
        let k = r.as_str().unwrap_or("");
        if value.get(k).is_none() {
            problems.push(format!("{at}: required field {k} missing"));
        }
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, s) in props {
            if let Some(v) = value.get(k) {
                check(spec, s, v, &format!("{at}.{k}"), problems);
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check(spec, items, v, &format!("{at}[{i}]"), problems);
        }
    }
}

fn openapi() -> Value {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml"))
            .expect("docs/openapi.yaml");
    serde_saphyr::from_str(&text).expect("docs/openapi.yaml parses")
}

#[test]
fn the_openapi_description_matches_the_server() {
    let spec = openapi();
    assert!(spec["openapi"].as_str().unwrap_or("").starts_with("3."));
    let (_tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &long("web"));
    write_file(&dir.join("workers.yaml"), &pool("workers", 1));
    let _c = Controller::start(&dir, &[]);
    wait_phase(&dir, "web", "Running");
    wait_api(&dir);
    wait_for("the pool in the API", || {
        (unix(&dir, "GET", "/api/v1/pools/workers").status == 200).then_some(())
    });
    let paths = spec["paths"].as_object().expect("paths");
    let mut problems = Vec::new();
    let mut tried = 0;
    // Acts last: a stop changes what the reads see.
    let mut ops: Vec<(String, String, Value)> = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            ops.push((path.clone(), method.clone(), op.clone()));
        }
    }
    ops.sort_by_key(|(_, m, _)| m == "post");
    let expected = ops.len() + ops.iter().filter(|(p, _, _)| p.contains("{name}")).count();
    assert!(
        ops.len() >= 13,
        "the description has every endpoint ({})",
        ops.len()
    );
    for (path, method, op) in ops {
        let name = if path.starts_with("/api/v1/pools/") {
            "workers"
        } else {
            "web"
        };
        let concrete = path.replace("{name}", name);
        let responses = op["responses"].as_object().expect("responses");
        // The described success, and the described 404 for an unknown name.
        let mut cases = vec![(
            concrete.clone(),
            responses.keys().find(|k| k.starts_with('2')).cloned(),
        )];
        if path.contains("{name}") {
            cases.push((
                path.replace("{name}", "nobody-has-this"),
                Some("404".into()),
            ));
        }
        for (url, want) in cases {
            let Some(want) = want else { continue };
            tried += 1;
            if path == "/api/v1/watch" {
                let ev = watch_until(&dir, "synced", |e| e.iter().any(|(n, _)| n == "synced"));
                let docs: Vec<&Value> = ev
                    .iter()
                    .filter(|(n, _)| n == "session")
                    .map(|(_, d)| d)
                    .collect();
                for d in docs {
                    check(
                        &spec,
                        &spec["components"]["schemas"]["SessionStatus"],
                        d,
                        "watch session",
                        &mut problems,
                    );
                }
                continue;
            }
            let a = unix(&dir, &method.to_uppercase(), &url);
            if a.status.to_string() != want {
                problems.push(format!(
                    "{} {url}: answered {}, described {want}: {}",
                    method.to_uppercase(),
                    a.status,
                    a.body
                ));
                continue;
            }
            let content = &responses[&want]["content"];
            let Some((ctype, media)) = content.as_object().and_then(|c| c.iter().next()) else {
                problems.push(format!("{method} {path} {want}: no content described"));
                continue;
            };
            let got = a.header("content-type").unwrap_or("");
            if !got.starts_with(ctype.as_str()) {
                problems.push(format!(
                    "{method} {url}: content-type {got}, described {ctype}"
                ));
            }
            if ctype == "application/json" {
                check(
                    &spec,
                    &media["schema"],
                    &a.json(),
                    &format!("{method} {url}"),
                    &mut problems,
                );
            }
        }
    }
    assert_eq!(tried, expected, "every path and method was tried");
    assert!(
        problems.is_empty(),
        "the server differs from docs/openapi.yaml:\n{}",
        problems.join("\n")
    );
    // And the server serves nothing under /api/v1 that the description lacks.
    let undescribed = [
        "/api/v1/sessions/web/logs",
        "/api/v1/controller",
        "/api/v1/events",
    ];
    for p in undescribed {
        assert!(
            paths.keys().any(|k| k.replace("{name}", "web") == p),
            "{p} described"
        );
    }
}

#[test]
fn a_bad_token_file_is_refused_with_the_fix() {
    let (tmp, dir) = sessions_dir();
    write_file(&dir.join("web.yaml"), &long("web"));
    let short = tmp.path().join("short-token");
    std::fs::write(&short, "abc\n").expect("token");
    for file in [short, tmp.path().join("missing-token")] {
        let out = std::process::Command::new(bin())
            .args(["run", "--dir"])
            .arg(&dir)
            .args(["--http-addr", "127.0.0.1:0", "--http-token-file"])
            .arg(&file)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("--http-token-file")
                && err.contains(&file.display().to_string())
                && err.contains("fix"),
            "{err}"
        );
    }
    assert!(
        !dir.join(".sessionlet").join("api.sock").exists(),
        "nothing started"
    );
}
