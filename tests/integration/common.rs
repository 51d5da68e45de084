//! Test harness: the real `wasup` binary on port 0 with a fresh data dir, on
//! SQLite or on a fresh PostgreSQL database (`WASUP_TEST_DATABASE_URL`, made
//! and dropped by `wasup::db::testing::TestDatabase`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;
use wasup::db::testing::{current_test, TestDatabase};

pub const ADMIN_KEY: &str = "wsp_test_admin_key_0123456789abcdef";

/// Where a test server keeps its records.
pub enum TestDb {
    /// The server's own SQLite file in its data dir (the default).
    Sqlite,
    /// A fresh database on the PostgreSQL server, dropped with this value.
    Postgres(TestDatabase),
}

impl TestDb {
    pub fn label(&self) -> &'static str {
        match self {
            TestDb::Sqlite => "sqlite",
            TestDb::Postgres(_) => "postgres",
        }
    }

    /// The URL to give the server (None: its data dir's SQLite file).
    pub fn url(&self) -> Option<String> {
        match self {
            TestDb::Sqlite => None,
            TestDb::Postgres(t) => Some(t.url().to_string()),
        }
    }
}

/// Every backend to run a test on: SQLite always, PostgreSQL when
/// `WASUP_TEST_DATABASE_URL` names a server (else the test says it skips it).
pub fn backends() -> Vec<TestDb> {
    let mut dbs = vec![TestDb::Sqlite];
    dbs.extend(TestDatabase::postgres(&current_test()).map(TestDb::Postgres));
    dbs
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    pub stdout: Vec<String>,
    db_url: Option<String>,
    env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
    http: Client,
}

impl Server {
    /// A fresh server with a fresh data dir; the admin key is ADMIN_KEY.
    pub fn start(db: &TestDb) -> Server {
        Self::start_with(db, &[("WASUP_ADMIN_KEY", ADMIN_KEY)])
    }

    pub fn start_with(db: &TestDb, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut server = Server {
            child: None,
            base: String::new(),
            data_dir: dir.path().join("data"),
            stdout: Vec::new(),
            db_url: db.url(),
            env,
            _dir: Some(dir),
            http: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasup"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WASUP_BIND", "127.0.0.1:0")
            .env("WASUP_DATA_DIR", &self.data_dir)
            .env("WASUP_CONNECT_TIMEOUT", "3")
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or("info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(url) = &self.db_url {
            cmd.env("WASUP_DATABASE_URL", url);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn wasup");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let err = child.stderr.take().unwrap();
        let log_path = self.data_dir.with_extension("log");
        std::thread::spawn(move || {
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path)
                .ok();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(f) = log.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if std::env::var("TEST_SHOW_LOG").is_ok() {
                    eprintln!("[wasup] {line}");
                }
            }
        });
        self.stdout.clear();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let found = line.strip_prefix("wasup listening on ").map(str::to_string);
                    self.stdout.push(line);
                    if let Some(base) = found {
                        self.base = base;
                        break;
                    }
                }
                Err(_) => panic!(
                    "wasup did not start; stdout: {:?}; log: {}",
                    self.stdout,
                    self.log()
                ),
            }
        }
        // Keep collecting stdout in the background (nothing should follow).
        let rest = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = rest.clone();
        std::thread::spawn(move || {
            while let Ok(line) = rx.recv() {
                sink.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
    }

    /// The server process's id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the server logged so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    /// SIGTERM, wait for a clean exit, and return its status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                if status.code().is_none() {
                    // Ended by a signal (a crash on the way out): say which,
                    // with the log's end, since the caller only sees `None`.
                    use std::os::unix::process::ExitStatusExt;
                    let log = self.log();
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    eprintln!(
                        "wasup ended by signal {:?} (core dumped: {}); log tail:\n{}",
                        status.signal(),
                        status.core_dumped(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("wasup did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// After the test killed the process (`kill -9`): reap it, so that
    /// `restart_stopped` starts it again on the same data dir and database.
    pub fn reap_killed(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again after `stop`, on the same data dir and database.
    pub fn restart_stopped(&mut self) {
        assert!(self.child.is_none(), "stop first");
        self.spawn();
    }

    /// Stop and start again on the same data dir and database.
    pub fn restart(&mut self) {
        assert_eq!(self.stop(), Some(0), "clean exit on SIGTERM");
        self.spawn();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn req(&self, method: &str, path: &str, key: Option<&str>) -> RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.http.request(method, self.url(path));
        if let Some(key) = key {
            rb = rb.header("X-API-Key", key);
        }
        rb
    }

    /// Send as admin with an optional JSON body; (status, JSON or Null).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(ADMIN_KEY, method, path, body)
    }

    pub fn call_as(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self.req(method, path, Some(key));
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        split(rb.send().expect("request"))
    }

    /// Poll a session until `done` holds (or panic after `secs`).
    pub fn wait_session(&self, id: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
        poll(secs, "the session's expected state", || {
            let (status, body) = self.call("GET", &format!("/api/sessions/{id}"), None);
            assert_eq!(status, 200, "{body}");
            match done(&body) {
                true => Ok(body),
                false => Err(format!("{body}\nlog:\n{}", self.log())),
            }
        })
    }

    /// Webhook deliveries still waiting to be sent (the outbox depth the
    /// metrics report): at 0 nothing more goes out until a new event or a
    /// redrive, so "nothing else was delivered" can be read, not waited for.
    pub fn pending_deliveries(&self) -> u64 {
        let text = self
            .req("GET", "/metrics", None)
            .send()
            .expect("scrape")
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("wasup_webhook_outbox_depth "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no wasup_webhook_outbox_depth in the metrics:\n{text}"))
            as u64
    }

    /// Wait until no webhook delivery is pending (or panic after `secs`).
    pub fn wait_no_pending_deliveries(&self, secs: u64) {
        poll(secs, "an empty outbox", || {
            match self.pending_deliveries() {
                0 => Ok(()),
                n => Err(format!("{n} deliveries pending")),
            }
        })
    }

    pub fn create_session(&self, name: &str) -> String {
        let (status, body) = self.call(
            "POST",
            "/api/sessions",
            Some(serde_json::json!({"name": name})),
        );
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    pub fn data_path(&self, name: &str) -> PathBuf {
        Path::new(&self.data_dir).join(name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn split(res: Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Assert the contract's error body: all four fields, the given status and code.
pub fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "status for {body}");
    assert_eq!(body["statusCode"], want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
}

/// What an ordinary QR reader reads from a PNG (exactly one code expected).
pub fn decode_qr_png(png: &[u8]) -> String {
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

/// The same, from a `data:image/png;base64,…` URL.
pub fn decode_qr_data_url(url: &str) -> String {
    use base64::Engine as _;
    let b64 = url
        .strip_prefix("data:image/png;base64,")
        .expect("PNG data URL");
    decode_qr_png(
        &base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
}

/// Ask `probe` every 100 ms until it answers Ok (returned), or panic after
/// `secs` naming `what` and the probe's last Err (what it saw instead).
pub fn poll<T>(secs: u64, what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: not within {secs} s; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
