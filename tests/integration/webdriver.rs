//! A minimal W3C WebDriver client over reqwest's blocking client, driving
//! Debian's headless Chromium through `chromedriver` (both from the
//! `chromium` and `chromium-driver` packages, installed by `.ci/run`).
//! Only what the dashboard test needs: navigate, find, click, type, read
//! text and attributes, run a script, take a screenshot.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::blocking::Client;
use serde_json::{json, Value};

use crate::common::free_port;

/// The key W3C WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    http: Client,
    base: String,
    session: String,
    /// Where screenshots go: `target/dashboard-screenshots/<name>/`.
    pub shots: PathBuf,
    step: usize,
    _profile: tempfile::TempDir,
}

/// An element of the page.
#[derive(Clone)]
pub struct El(String);

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

impl Browser {
    /// Headless Chromium at 1280×900. None (with the reason printed) when
    /// Chromium or chromedriver is not installed, except under CI, where
    /// that fails the test.
    pub fn launch(name: &str) -> Option<Browser> {
        let chromium = find_binary(&["chromium", "chromium-browser", "google-chrome"]);
        let driver = find_binary(&["chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            let why = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{name}: {why}; CI must run the browser test");
            }
            eprintln!("{name}: skipped: {why}");
            return None;
        };
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http
                .get(format!("{base}/status"))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    "--no-first-run", "--no-default-browser-check",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let res: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .expect("new WebDriver session")
            .json()
            .unwrap();
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {res}"))
            .to_string();
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target dir")
            .join("dashboard-screenshots")
            .join(name);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Some(Browser {
            driver: child,
            http,
            base,
            session,
            shots,
            step: 0,
            _profile: profile,
        })
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let rb = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or(json!({}))),
        };
        let res = rb.send().map_err(|e| e.to_string())?;
        let ok = res.status().is_success();
        let v: Value = res.json().map_err(|e| e.to_string())?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{}: {}",
                v["value"]["error"], v["value"]["message"]
            ))
        }
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})))
            .expect("navigate");
    }

    pub fn set_size(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .expect("resize");
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<El> {
        let found = self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        found
            .ok()?
            .as_array()?
            .first()
            .map(|e| El(e[ELEMENT].as_str().unwrap().to_string()))
    }

    pub fn count(&self, css: &str) -> usize {
        self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0)
    }

    /// Wait (bounded) for an element matching `css` that is displayed.
    pub fn wait(&self, secs: u64, css: &str) -> El {
        crate::common::poll(secs, &format!("element {css}"), || {
            let el = self.find(css).ok_or("absent")?;
            if self.displayed(&el) {
                Ok(el)
            } else {
                Err("not displayed".into())
            }
        })
    }

    /// Wait (bounded) until the text of `css` satisfies `done`; the text.
    pub fn wait_text(&self, secs: u64, css: &str, done: impl Fn(&str) -> bool) -> String {
        crate::common::poll(secs, &format!("text of {css}"), || {
            let el = self.find(css).ok_or("absent")?;
            let text = self.text(&el);
            if done(&text) {
                Ok(text)
            } else {
                Err(format!("text {text:?}"))
            }
        })
    }

    pub fn displayed(&self, el: &El) -> bool {
        self.cmd("GET", &format!("/element/{}/displayed", el.0), None)
            .is_ok_and(|v| v == true)
    }

    /// Click the element matching `css` once it is there and clickable
    /// (found again on each try: the page may replace it meanwhile).
    pub fn click_on(&self, secs: u64, css: &str) {
        crate::common::poll(secs, &format!("click {css}"), || {
            let el = self.find(css).ok_or("absent")?;
            self.cmd("POST", &format!("/element/{}/click", el.0), Some(json!({})))
                .map(|_| ())
        })
    }

    pub fn click(&self, el: &El) {
        self.cmd("POST", &format!("/element/{}/click", el.0), Some(json!({})))
            .expect("click");
    }

    pub fn type_text(&self, el: &El, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{}/value", el.0),
            Some(json!({"text": text})),
        )
        .expect("send keys");
    }

    pub fn clear(&self, el: &El) {
        self.cmd("POST", &format!("/element/{}/clear", el.0), Some(json!({})))
            .expect("clear");
    }

    pub fn text(&self, el: &El) -> String {
        self.cmd("GET", &format!("/element/{}/text", el.0), None)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    }

    pub fn attr(&self, el: &El, name: &str) -> Option<String> {
        self.cmd("GET", &format!("/element/{}/attribute/{name}", el.0), None)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
    }

    /// Run `script` (a function body; `arguments` holds `args`) in the page.
    pub fn run(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .expect("execute script")
    }

    /// Run an async script: it calls `arguments[arguments.length - 1]` with its result.
    pub fn run_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
        .expect("execute async script")
    }

    /// Save a screenshot as `<shots>/<name>.png`; its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let path = self.shots.join(format!("{name}.png"));
        if let Ok(v) = self.cmd("GET", "/screenshot", None) {
            if let Some(b64) = v.as_str() {
                let png = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap_or_default();
                let _ = std::fs::write(&path, png);
            }
        }
        path
    }

    /// One step of a test: run it; on failure save a screenshot named after
    /// the step (then fail); on success save one too, for a person to look at.
    pub fn step<T>(&mut self, name: &str, f: impl FnOnce(&Browser) -> T) -> T {
        self.step += 1;
        let label = format!("{:02}-{name}", self.step);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))) {
            Ok(v) => {
                self.screenshot(&label);
                v
            }
            Err(panic) => {
                let shot = self.screenshot(&format!("{label}-FAILED"));
                eprintln!("step {label} failed; screenshot: {}", shot.display());
                std::panic::resume_unwind(panic)
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.cmd("DELETE", "", None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
