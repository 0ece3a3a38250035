//! The web dashboard in real headless Chromium, driven through chromedriver
//! (WebDriver): it loads from the real controller, shows the sessions, shows
//! a phase change without a reload, and shows a log line containing
//! `<script>` as text without running it. A screenshot is saved under
//! target/ (never the repository). Skips when chromium or chromedriver is
//! missing (`.ci/run` installs both).

mod common;
mod watch_common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{ClientBuilder, Locator};
use watch_common::*;

fn which(name: &str) -> Option<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !p.is_empty()).then_some(p)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Ends chromedriver (which ends its browsers) when the test ends, pass or fail.
struct Driver(std::process::Child);
impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` (async) until it gives `Some`, or panics after the deadline.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_dashboard_shows_sessions_live_and_output_as_text() {
    let (Some(chromium), Some(chromedriver)) = (which("chromium"), which("chromedriver")) else {
        eprintln!("SKIPPED: needs chromium and chromedriver (apt-get install -y chromium chromium-driver)");
        return;
    };
    let (tmp, dir) = sessions_dir();
    write_file(
        &dir.join("web.yaml"),
        &session(
            "web",
            "command: [/bin/sh, -c, 'echo \"<script>window.__pwned=1</script><b>bold</b>\"; while :; do sleep 0.2; done']\nterminationGracePeriod: 2s",
        ),
    );
    write_file(&dir.join("other.yaml"), &long("other"));
    let c = Controller::start(&dir, &["--http-addr", "127.0.0.1:0"]);
    wait_phase(&dir, "web", "Running");
    wait_phase(&dir, "other", "Running");
    let addr = http_addr(&c);

    // The page and its headers, before a browser is involved.
    let page = tcp(&addr, "GET", "/", &[]);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-security-policy"),
        Some("default-src 'self'")
    );
    assert!(
        !page.body.contains("<script>"),
        "no inline script: {}",
        page.body
    );
    assert!(page.body.contains("src=\"/dashboard.js\""));
    let js = tcp(&addr, "GET", "/dashboard.js", &[]);
    assert_eq!(js.status, 200);
    assert!(
        !js.body.contains("innerHTML"),
        "the script builds text nodes only"
    );

    let port = free_port();
    let driver = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let _driver = Driver(driver);
    let profile = tmp.path().join("chromium-profile");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("watch_dashboard.png");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let webdriver = format!("http://127.0.0.1:{port}");
        // chromedriver answers once it listens.
        let client = eventually("chromedriver to accept a session", || async {
            let mut caps = serde_json::Map::new();
            caps.insert(
                "goog:chromeOptions".into(),
                serde_json::json!({
                    "binary": chromium,
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        format!("--user-data-dir={}", profile.display()),
                    ],
                }),
            );
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&webdriver)
                .await
                .ok()
        })
        .await;
        let url = format!("http://{addr}/");
        client.goto(&url).await.expect("open the dashboard");

        let row_text = |name: &'static str| {
            let client = client.clone();
            async move {
                let row = client
                    .find(Locator::Css(&format!("#sessions tr[data-name=\"{name}\"]")))
                    .await
                    .ok()?;
                row.text().await.ok()
            }
        };
        eventually("both sessions Running on the page", || async {
            let web = row_text("web").await?;
            let other = row_text("other").await?;
            (web.contains("Running") && other.contains("Running")).then_some(())
        })
        .await;

        // A mark in the page: a reload would lose it.
        client
            .execute("window.__mark = 'same page'; return true;", vec![])
            .await
            .expect("mark the page");
        write_file(&dir.join("other.yaml"), &format!("{}  suspend: true\n", long("other")));
        eventually("other Cancelled on the page", || async {
            row_text("other").await.filter(|t| t.contains("Cancelled"))
        })
        .await;
        let mark = client
            .execute("return window.__mark;", vec![])
            .await
            .expect("read the mark");
        assert_eq!(mark, serde_json::json!("same page"), "updated without a reload");

        // The session page: its output, as text.
        client
            .execute("location.hash = '#session=web'; return true;", vec![])
            .await
            .expect("open the session");
        let log = eventually("web's output on its page", || async {
            let pre = client.find(Locator::Css("#log-stdout")).await.ok()?;
            pre.text().await.ok().filter(|t| t.contains("<script>"))
        })
        .await;
        assert!(log.contains("<script>window.__pwned=1</script><b>bold</b>"), "{log}");
        let ran = client
            .execute(
                "return [typeof window.__pwned, document.querySelectorAll('#log-stdout script, #log-stdout b').length];",
                vec![],
            )
            .await
            .expect("check the page");
        assert_eq!(ran, serde_json::json!(["undefined", 0]), "the line's markup stayed text");
        let title = client
            .find(Locator::Css("#detail-title"))
            .await
            .expect("title")
            .text()
            .await
            .expect("text");
        assert_eq!(title, "Session web");
        let conditions = client
            .find_all(Locator::Css("#detail-conditions tbody tr"))
            .await
            .expect("conditions");
        assert!(!conditions.is_empty(), "the session's conditions are shown");

        let png = client.screenshot().await.expect("screenshot");
        std::fs::write(&shot, png).expect("save the screenshot");
        eprintln!("screenshot: {}", shot.display());
        let _ = client.close().await;
    });
    assert!(shot.exists());
}
