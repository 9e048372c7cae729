//! The alert console in a real browser: `vigil run` on the tansu broker
//! with `console.enabled`, the Kubernetes audit and Tetragon samples
//! detected, and Debian's headless Chromium, driven through chromedriver
//! (WebDriver, spoken with reqwest), loading `/console`, filtering,
//! opening an alert. Screenshots go to docs/screenshots/.
//!
//! Needs `chromium` and `chromedriver` on PATH (Debian's `chromium` and
//! `chromium-driver`); under CI (`CI` set, as `.ci/run` does) their
//! absence is a failure, not a skip. Chromedriver (and the browser it
//! starts) ends with the test, also on a panic.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;

/// A chromedriver process; killed on drop.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// chromedriver and chromium from PATH, or `None` (a failure under CI).
fn browser() -> Option<(PathBuf, PathBuf)> {
    let found = on_path("chromedriver").zip(on_path("chromium"));
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium or chromedriver is not on PATH, and CI is set: install Debian's chromium and chromium-driver packages (.ci/run does)"
        );
        eprintln!(
            "note: chromium or chromedriver not on PATH; the console browser test did not run"
        );
    }
    found
}

fn start_chromedriver(binary: &PathBuf) -> Chromedriver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = end_with_starting_thread(&mut Command::new(binary))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let driver = Chromedriver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    driver
}

/// A WebDriver session (W3C protocol), the few commands the test needs.
struct Session {
    http: reqwest::Client,
    base: String,
}

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Session {
    async fn new(driver: &str, chromium: &PathBuf, profile: &std::path::Path) -> Session {
        let http = reqwest::Client::new();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1440,900", format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let r: Value = http
            .post(format!("{driver}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"));
        Session {
            http,
            base: format!("{driver}/session/{id}"),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r: Value = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(r["value"]["error"].is_null(), "WebDriver {path}: {r}");
        r["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            json!({}),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn eval(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Wait until `script` returns true.
    async fn wait_for(&self, script: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.eval(script).await != json!(true) {
            assert!(Instant::now() < deadline, "the console never showed {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self
            .http
            .get(format!("{}/screenshot", self.base))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png["value"].as_str().unwrap())
            .unwrap();
        let dir = repo().join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    async fn close(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

/// The console's API answer for `query`.
fn api(vigil: &Vigil, query: &str) -> Value {
    let (status, body) = http_get(vigil.http_addr(), &format!("/console/api/alerts?{query}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_lists_filters_and_details_alerts_in_a_browser() {
    let Some((chromedriver, chromium)) = browser() else {
        return;
    };
    let addr = broker().addr.clone();
    let topics = Topics::new("console");
    topics.create(&addr).await;
    let dir = tempfile::tempdir().unwrap();
    // Teams from a site overlay, so the console shows them.
    let overlay = dir.path().join("site");
    std::fs::create_dir_all(overlay.join("lookups")).unwrap();
    std::fs::write(
        overlay.join("lookups/namespace_teams.csv"),
        "namespace,team\ndefault,platform\nkube-system,platform\nproduction,payments\ntenant-jobs,jobs\n",
    )
    .unwrap();
    let extra = format!(
        "overlays = [\"{}\"]\n\n[routing]\nstart = \"earliest\"\ncluster = \"test-cluster\"\nteam_lookup = \"namespace_teams\"\n\n[console]\nenabled = true\nmax_alerts = 100000\n",
        overlay.display()
    );
    let config = topics.write_config_with(dir.path(), &addr, &repo().join("sql-rules"), &extra);
    let vigil = Vigil::start(&config, dir.path().join("vigil.log"));
    produce(
        &addr,
        &topics.audit,
        0,
        &lines(&repo().join("samples/k8s-audit.jsonl")),
    )
    .await;
    produce(
        &addr,
        &topics.tetragon,
        0,
        &lines(&repo().join("samples/tetragon.jsonl")),
    )
    .await;
    // Wait until the window stops growing.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = (0, Instant::now());
    loop {
        let total = api(&vigil, "limit=1")["total"].as_u64().unwrap();
        if total != last.0 {
            last = (total, Instant::now());
        } else if total > 50 && last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the console window has {total} alerts; log:\n{}",
            vigil.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let driver = start_chromedriver(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let browser = Session::new(&driver.url, &chromium, profile.path()).await;
    let console = format!("http://{}/console", vigil.http_addr());
    browser.goto(&console).await;
    browser
        .wait_for(
            "return document.querySelectorAll('#rows tr').length > 0 && document.querySelectorAll('#chart rect').length > 0",
            "alerts and the chart",
        )
        .await;
    browser.screenshot("console.png").await;

    // Filter: high and above, Tetragon's rules only (free text). The page
    // must show exactly what the API answers for the same filters; a late
    // alert (a correlation window closing) can change both, so compare
    // again until they agree.
    // Live refresh off: the rows change only when the test applies.
    browser.click("#live").await;
    browser
        .click("select[name=severity] option[value=high]")
        .await;
    browser.type_into("input[name=q]", "tetragon.").await;
    browser.click("button.primary").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let ids: Vec<String> = loop {
        let filtered = api(&vigil, "severity=high&q=tetragon.&limit=500");
        let ids: Vec<String> = filtered["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["alert_id"].as_str().unwrap().to_string())
            .collect();
        let shown = browser
            .eval("return [document.getElementById('status').textContent, [...document.querySelectorAll('#rows tr')].map(r => [r.dataset.id, r.querySelector('.sev').textContent])]")
            .await;
        let status = shown[0].as_str().unwrap();
        let rows = shown[1].as_array().unwrap();
        let total = filtered["total"].as_u64().unwrap();
        let shown_ids: Vec<&str> = rows.iter().map(|r| r[0].as_str().unwrap()).collect();
        if total > 0 && status.starts_with(&format!("{total} matching")) && shown_ids == ids {
            for row in rows {
                assert!(
                    ["high", "critical"].contains(&row[1].as_str().unwrap()),
                    "{row}"
                );
            }
            break ids;
        }
        assert!(
            Instant::now() < deadline,
            "the page shows {status:?} {shown_ids:?}, the API {total} {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        browser.click("button.primary").await;
    };

    // Open the first alert: fields, events and their origins, techniques
    // with names, the rule's description.
    browser.click("#rows tr:first-child").await;
    browser
        .wait_for(
            "return document.getElementById('detail-title') !== null",
            "the alert's detail",
        )
        .await;
    let detail = browser
        .eval("return document.getElementById('detail').innerText")
        .await;
    let detail = detail.as_str().unwrap();
    for heading in ["Rule", "ATT&CK techniques", "Fields", "Triggering events"] {
        assert!(
            detail.contains(&heading.to_uppercase()) || detail.contains(heading),
            "{heading} missing: {detail}"
        );
    }
    assert!(detail.contains(&ids[0]), "{detail}");
    assert!(
        detail.contains(&format!("{}/0@", topics.tetragon)),
        "the event's origin: {detail}"
    );
    assert!(
        !detail.contains("name not in"),
        "every technique named: {detail}"
    );
    let state = browser.eval("return location.search").await;
    let state = state.as_str().unwrap();
    assert!(
        state.contains("severity=high") && state.contains(&format!("alert={}", ids[0])),
        "{state}"
    );
    browser.screenshot("console-detail.png").await;
    browser.close().await;
    let status = vigil.terminate();
    assert!(status.success(), "{status:?}");
}
