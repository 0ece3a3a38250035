//! The fleet simulation, small (feature `etcd`): `sessionlet-fleet-sim`
//! runs 10 virtual members (the real coordinator each) over 2,000 sessions
//! against its own real three-member etcd cluster, kills 1 and then 3 of
//! them, and after each phase checks from etcd and from the members that
//! every session is owned by exactly one live member. Figures are printed,
//! not asserted (speed belongs in the benchmark itself).
#![cfg(feature = "etcd")]

mod common;
mod fleet_common;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

#[test]
fn every_session_is_owned_by_one_live_member_before_and_after_losing_members() {
    if !fleet_common::have_etcd("fleet_sim") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("sim.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sessionlet-fleet-sim"))
        .args(["--sessions", "2000", "--members", "10"])
        .args(["--lease-ttl", "3", "--fence-margin", "1"])
        .args(["--kill", "1,3", "--idle-secs", "1", "--phase-limit", "60"])
        .arg("--out")
        .arg(&out)
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sessionlet-fleet-sim");
    // The simulation ends its own etcd members; the deadline only guards a hang.
    let status = common::wait_for_within(Duration::from_secs(240), "the simulation to end", || {
        child.try_wait().expect("wait")
    });
    assert!(status.success(), "sessionlet-fleet-sim failed: {status}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("sim.json"))
        .expect("sim.json is JSON");
    assert_eq!(r["ok"], true, "{r:#}");
    let checks = r["checks"].as_array().expect("checks");
    let phases: Vec<&str> = checks.iter().filter_map(|c| c["phase"].as_str()).collect();
    assert_eq!(phases, ["claim", "kill 1", "kill 3"], "{r:#}");
    for (c, live) in checks.iter().zip([10, 9, 6]) {
        let c = &c["check"];
        assert_eq!(c["ok"], true, "{c:#}");
        assert_eq!(c["problems"], 0, "{c:#}");
        assert_eq!(c["owners"], 2000, "{c:#}");
        assert_eq!(c["live_members"], live, "{c:#}");
        assert_eq!(c["by_kind"]["members"]["keys"], live, "{c:#}");
    }
    // The killed members owned sessions, so something did move.
    for x in r["reclaim"].as_array().expect("reclaim") {
        assert!(x["sessions_moved"].as_u64().unwrap_or(0) > 0, "{x}");
    }
    // Every etcd the simulation started is gone with it.
    let left = std::fs::read_dir(tmp.path())
        .expect("tmp")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("sessionlet-fleet-sim-")
        })
        .count();
    assert_eq!(left, 0, "the simulation left its etcd folder behind");
}
