//! Budgets across sessions end to end: a Pool's agent members (the REAL
//! Claude Code CLI against the fake Messages API on 127.0.0.1) are stopped
//! with BudgetExceeded once together they reach `spec.budget`, and none
//! starts after it.
//!
//! Without the CLI the tests print "SKIPPED: no claude binary" and pass.

#[path = "common/agent_sandbox.rs"]
mod agent_sandbox;
#[path = "common/claude.rs"]
mod claude;
mod common;
#[path = "common/fake_api.rs"]
mod fake_api;

use agent_sandbox::{agent_yaml, q, wait_status, Sandbox};
use common::{wait_for_within, write_file, KeeperGuard};
use fake_api::{FakeApi, Scenario};

#[test]
fn pool_members_stop_at_the_budget_and_none_starts_after() {
    let bin = require_claude!("pool_members_stop_at_the_budget_and_none_starts_after");
    // A Bash call on every turn, forever: the members only end when stopped.
    let fake = FakeApi::start(Scenario::ToolLoop);
    let sb = Sandbox::new();
    let _keeper = KeeperGuard(sb.dir.clone());
    let template = format!(
        "{}{}workingDir: {}\nrestartPolicy: Always\nterminationGracePeriod: 20s\n",
        agent_yaml(&bin, "loop", ""),
        sb.env_yaml(&fake.base_url()),
        q(&sb.work.display().to_string()),
    );
    let indented: String = template.lines().map(|l| format!("      {l}\n")).collect();
    let pool = format!(
        "apiVersion: sessionlet.dev/v1alpha1\nkind: Pool\nmetadata:\n  name: spenders\nspec:\n  replicas: 2\n  budget:\n    maxTokens: 2000\n    per: day\n  template:\n    spec:\n{indented}"
    );
    write_file(&sb.dir.join("spenders.yaml"), &pool);
    let c = sb.controller(&[]);

    for member in ["spenders-0", "spenders-1"] {
        let s = wait_status(
            &sb,
            "spenders",
            &format!("{member} stopped by the budget"),
            |docs| {
                let _ = docs;
                member_status(&sb, member).is_some_and(|m| {
                    m["status"]["reason"] == "BudgetExceeded" && m["status"]["pid"].is_null()
                })
            },
        );
        let _ = s;
    }
    let pool_doc = pool_status(&sb).expect("the pool's status");
    let budget = &pool_doc["status"]["budget"];
    assert_eq!(budget["exceeded"], true, "{pool_doc:#}");
    assert!(
        budget["spentTokens"].as_u64().unwrap_or(0) >= 2000,
        "{pool_doc:#}"
    );
    assert!(budget["renewsAt"].is_string(), "{pool_doc:#}");
    for member in ["spenders-0", "spenders-1"] {
        let m = member_status(&sb, member).expect("member");
        let st = &m["status"];
        assert_eq!(st["phase"], "Pending", "{m:#}");
        assert_eq!(st["attempt"], 1, "{m:#}");
        assert_eq!(st["lastExit"]["reason"], "BudgetExceeded", "{m:#}");
        assert_eq!(st["consecutiveFailures"], 0, "{m:#}");
    }
    // None starts after: several more passes, still one attempt each.
    let requests = fake.message_requests();
    let pid = c.pid();
    let before = common::controller_status_of(&sb.dir).expect("controller status")
        ["reconcileCount"]
        .as_u64()
        .unwrap_or(0);
    wait_for_within(std::time::Duration::from_secs(60), "more passes", || {
        let n = common::controller_status_of(&sb.dir)?["reconcileCount"].as_u64()?;
        (n >= before + 5).then_some(())
    });
    let _ = pid;
    for member in ["spenders-0", "spenders-1"] {
        let m = member_status(&sb, member).expect("member");
        assert_eq!(m["status"]["attempt"], 1, "{m:#}");
        assert!(m["status"]["pid"].is_null(), "{m:#}");
    }
    assert_eq!(
        fake.message_requests(),
        requests,
        "no API call after the budget"
    );

    // The spend survives a controller restart: still nobody starts.
    let mut c = c;
    c.signal(nix::sys::signal::Signal::SIGKILL);
    c.wait();
    let c2 = sb.controller(&[]);
    let pid2 = c2.pid();
    wait_for_within(
        std::time::Duration::from_secs(60),
        "the new controller's passes",
        || {
            let cs = common::controller_status_of(&sb.dir)?;
            (cs["pid"].as_u64() == Some(u64::from(pid2)) && cs["reconcileCount"].as_u64()? >= 5)
                .then_some(())
        },
    );
    for member in ["spenders-0", "spenders-1"] {
        let m = member_status(&sb, member).expect("member");
        assert_eq!(m["status"]["attempt"], 1, "{m:#}");
        assert_eq!(m["status"]["reason"], "BudgetExceeded", "{m:#}");
    }
    let pool_doc = pool_status(&sb).expect("the pool's status");
    assert_eq!(
        pool_doc["status"]["budget"]["exceeded"], true,
        "{pool_doc:#}"
    );
    assert_eq!(
        fake.message_requests(),
        requests,
        "no API call after the restart"
    );
}

/// The status documents of `spenders.status.yaml`.
fn docs(sb: &Sandbox) -> Vec<serde_json::Value> {
    common::status_docs(&sb.dir.join("spenders.status.yaml")).unwrap_or_default()
}

fn member_status(sb: &Sandbox, name: &str) -> Option<serde_json::Value> {
    docs(sb)
        .into_iter()
        .find(|d| d["kind"] == "SessionStatus" && d["metadata"]["name"] == name)
}

fn pool_status(sb: &Sandbox) -> Option<serde_json::Value> {
    docs(sb).into_iter().find(|d| d["kind"] == "PoolStatus")
}

#[test]
fn an_account_budget_stops_the_accounts_sessions() {
    let bin = require_claude!("an_account_budget_stops_the_accounts_sessions");
    let fake = FakeApi::start(Scenario::ToolLoop);
    let sb = Sandbox::new();
    let _keeper = KeeperGuard(sb.dir.clone());
    for name in ["looper-a", "looper-b"] {
        let spec = format!(
            "{}{}workingDir: {}\nrestartPolicy: OnFailure\nterminationGracePeriod: 20s\n",
            agent_yaml(&bin, "loop", "account: shared"),
            sb.env_yaml(&fake.base_url()),
            q(&sb.work.display().to_string()),
        );
        sb.write(name, &spec);
    }
    let _c = sb.controller(&["--account-budget", "shared:maxTokens=2000,per=day"]);
    for name in ["looper-a", "looper-b"] {
        let s = wait_status(&sb, name, "stopped by the account's budget", |s| {
            s["status"]["reason"] == "BudgetExceeded" && s["status"]["pid"].is_null()
        });
        assert_eq!(s["status"]["phase"], "Pending", "{s:#}");
        assert_eq!(s["status"]["consecutiveFailures"], 0, "{s:#}");
    }
    let cs = common::controller_status_of(&sb.dir).expect("controller status");
    let b = &cs["extra"]["accountBudgets"]["shared"];
    assert_eq!(b["exceeded"], true, "{cs:#}");
    assert!(b["spentTokens"].as_u64().unwrap_or(0) >= 2000, "{cs:#}");
    // Kept for the next controller.
    let kept = std::fs::read_to_string(sb.dir.join(".sessionlet/budget-spend.json"))
        .expect("budget-spend.json");
    assert!(kept.contains("shared"), "{kept}");
}
