//! The scale-out flags of `sessionlet run`, checked before anything starts
//! (with or without the `etcd` feature).

mod common;

use std::process::Command;

fn run(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(common::bin())
        .arg("run")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run sessionlet");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_scale_out_flags_are_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--node", "n1"], "--node needs --coordinator etcd"),
        (
            vec!["--coordinator", "zk", "--node", "n1"],
            "unknown coordinator; use `etcd` or `none`",
        ),
        (
            vec!["--coordinator", "etcd", "--node", "n1"],
            if cfg!(feature = "etcd") {
                "needs --etcd-endpoints"
            } else {
                "cargo build --release --features etcd"
            },
        ),
        (
            vec![
                "--coordinator",
                "etcd",
                "--etcd-endpoints",
                "http://127.0.0.1:2379",
                "--node",
                "n1",
                "--lease-ttl",
                "4s",
                "--fence-margin",
                "3s",
            ],
            if cfg!(feature = "etcd") {
                "--fence-margin 3s: must be above 0 and at most half of --lease-ttl"
            } else {
                "built without etcd support"
            },
        ),
    ];
    for (args, want) in cases {
        let (ok, stderr) = run(dir, &args);
        assert!(!ok, "{args:?} was accepted");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        // Refused before the controller took its folder or started a keeper.
        assert!(
            !dir.join(".sessionlet").exists(),
            "{args:?} started something"
        );
    }
}

#[cfg(feature = "etcd")]
#[test]
fn an_unreachable_etcd_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A port on loopback where nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let url = format!("http://127.0.0.1:{port}");
    let (ok, stderr) = run(
        tmp.path(),
        &[
            "--coordinator",
            "etcd",
            "--etcd-endpoints",
            &url,
            "--node",
            "n1",
            "--lease-ttl",
            "2s",
            "--fence-margin",
            "1s",
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("cannot join the fleet over etcd") && stderr.contains(&url),
        "{stderr}"
    );
}
