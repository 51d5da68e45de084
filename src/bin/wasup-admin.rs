//! `wasup-admin`: administer a running wasup server over its HTTP API.
//!
//! Talks to `WASUP_URL` (default `http://127.0.0.1:2785`) with the key in
//! `WASUP_API_KEY` (or `--url`, `--api-key`). Human-readable output by
//! default; `--json` prints the server's JSON body unchanged (pretty). On an
//! error the server's message goes to stderr as
//! `error: <message> (<code>, HTTP <status>)` and the exit code is 1; usage
//! errors exit 2.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use qrcode::{Color, EcLevel, QrCode};
use reqwest::blocking::Client;
use serde_json::{json, Value};

/// Administer a running wasup server (sessions, QR linking, API keys).
#[derive(Parser)]
#[command(name = "wasup-admin", version)]
struct Cli {
    /// Base URL of the server (with or without the trailing /api).
    #[arg(
        long,
        env = "WASUP_URL",
        default_value = "http://127.0.0.1:2785",
        global = true
    )]
    url: String,

    /// API key sent as X-API-Key.
    #[arg(long, env = "WASUP_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,

    /// Print the server's JSON body unchanged (pretty) instead of tables.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

/// Debug hides the API key.
impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field("url", &self.url)
            .field("api_key", &wasup_actors::redact::redacted(&self.api_key))
            .field("json", &self.json)
            .field("command", &self.command)
            .finish()
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Session counts by status and the server's memory use.
    Overview,
    /// Every session the key may see, newest first.
    List,
    /// Create a session (status `created`; `start` it to link it).
    Create {
        /// 3–50 characters of A-Z, a-z, 0-9 and '-'.
        name: String,
    },
    /// Start a session's engine (then `qr` or `pair` to link it).
    Start { id: String },
    /// Stop a session; its credentials are kept.
    Stop { id: String },
    /// Stop then start a session, from any state.
    Restart { id: String },
    /// Unlink the device at WhatsApp and wipe its credentials.
    Logout { id: String },
    /// Delete a session with its credentials and webhooks.
    Delete { id: String },
    /// Draw the session's current QR code in the terminal, to scan with
    /// WhatsApp (Linked devices → Link a device).
    Qr {
        id: String,
        /// While the session is starting, wait up to this many seconds for
        /// its QR code instead of failing at once.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        wait: u64,
    },
    /// Ask for a pairing code to enter on the phone instead of scanning a QR.
    Pair {
        id: String,
        /// The phone's number: country code and number, digits only.
        phone: String,
    },
    /// Print session events from the live stream, one line each: the
    /// stored ones first, then (with --follow) new ones as they happen,
    /// resuming after a dropped connection with Last-Event-ID.
    Events {
        /// Only this session (id or name).
        #[arg(long)]
        session: Option<String>,
        /// Keep following new events until interrupted.
        #[arg(long)]
        follow: bool,
    },
    /// Manage API keys (admin role).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Every API key (only their prefixes; revoked keys stay listed).
    List,
    /// Create a key; its secret is printed once and never shown again.
    Create {
        name: String,
        /// What the key may do.
        #[arg(long, value_enum, default_value_t = Role::Operator)]
        role: Role,
        /// Limit the key to this session (id or name); repeat for more.
        /// Default: every session.
        #[arg(long = "session", value_name = "ID")]
        sessions: Vec<String>,
        /// When the key stops working (ISO-8601, e.g. 2027-01-01T00:00:00Z).
        #[arg(long, value_name = "TIME", conflicts_with = "expires_in")]
        expires_at: Option<String>,
        /// When the key stops working, from now: e.g. 90d, 12h, 30m.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: Option<chrono::Duration>,
    },
    /// Revoke a key at once.
    Revoke { id: String },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// A value that is not a positive whole number with a unit.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a duration like 90d, 12h or 30m")]
struct BadDuration(String);

fn parse_duration(s: &str) -> Result<chrono::Duration, BadDuration> {
    let s = s.trim();
    let bad = || BadDuration(s.to_string());
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(bad());
    }
    match unit {
        'd' => chrono::Duration::try_days(n),
        'h' => chrono::Duration::try_hours(n),
        'm' => chrono::Duration::try_minutes(n),
        's' => chrono::Duration::try_seconds(n),
        _ => None,
    }
    .ok_or_else(bad)
}

/// Why a command failed; printed as one line on stderr, exit 1.
enum Failure {
    /// The server answered with its error body.
    Server {
        status: u16,
        code: String,
        message: String,
    },
    /// Anything else (unreachable server, a body that is not the API's).
    Other(String),
}

type Outcome<T> = Result<T, Failure>;

/// Characters of a path segment sent as they are; the rest is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

struct Api {
    base: String,
    key: Option<String>,
    http: Client,
}

impl Api {
    fn new(url: &str, key: Option<String>) -> Outcome<Api> {
        let mut base = url.trim().trim_end_matches('/').to_string();
        if let Some(stripped) = base.strip_suffix("/api") {
            base = stripped.to_string();
        }
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure::Other(format!(
                "the server URL (WASUP_URL or --url) must start with http:// or https://, not '{url}'"
            )));
        }
        let http = Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("wasup-admin/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Other(format!("cannot set up HTTP: {e}")))?;
        Ok(Api {
            base,
            key: key.filter(|k| !k.is_empty()),
            http,
        })
    }

    /// One API call: the body on 2xx, else the server's error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Outcome<Reply> {
        let url = format!("{}/api{}", self.base, path);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
        let mut req = self.http.request(method, &url);
        if let Some(key) = &self.key {
            req = req.header("X-API-Key", key);
        }
        if let Some(body) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let res = req.send().map_err(|e| {
            Failure::Other(format!(
                "cannot reach wasup at {}: {}",
                self.base,
                cause(&e)
            ))
        })?;
        let status = res.status();
        let text = res.text().map_err(|e| {
            Failure::Other(format!(
                "reading the answer from {} failed: {}",
                self.base,
                cause(&e)
            ))
        })?;
        let parsed: Option<Value> = if text.trim().is_empty() {
            None
        } else {
            serde_json::from_str(&text).ok()
        };
        if status.is_success() {
            if parsed.is_none() && !text.trim().is_empty() {
                return Err(Failure::Other(format!(
                    "the answer from {url} is not JSON (HTTP {}): is WASUP_URL a wasup server?",
                    status.as_u16()
                )));
            }
            return Ok(Reply {
                value: parsed.unwrap_or(Value::Null),
                raw: text,
            });
        }
        match parsed.as_ref().and_then(|v| {
            Some((
                v.get("code")?.as_str()?.to_string(),
                v.get("message")?.as_str()?.to_string(),
            ))
        }) {
            Some((code, message)) => Err(Failure::Server {
                status: status.as_u16(),
                code,
                message,
            }),
            None => {
                let snippet: String = text.trim().chars().take(200).collect();
                Err(Failure::Other(format!(
                    "HTTP {} from {url}{}{snippet} (is WASUP_URL a wasup server?)",
                    status,
                    if snippet.is_empty() { "" } else { ": " },
                )))
            }
        }
    }

    fn get(&self, path: &str) -> Outcome<Reply> {
        self.call("GET", path, None)
    }

    fn post(&self, path: &str, body: Option<Value>) -> Outcome<Reply> {
        self.call("POST", path, body)
    }
}

/// A successful answer: parsed (Null when empty) and as the server sent it.
struct Reply {
    value: Value,
    raw: String,
}

/// The innermost cause of a transport error ("Connection refused", …).
fn cause(e: &dyn std::error::Error) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let no_key = cli.api_key.as_deref().is_none_or(str::is_empty);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Server {
            status,
            code,
            message,
        }) => {
            eprintln!("error: {message} ({code}, HTTP {status})");
            if code == wasup_actors::ErrorCode::MissingApiKey.as_str() && no_key {
                eprintln!("hint: set WASUP_API_KEY or pass --api-key");
            }
            ExitCode::FAILURE
        }
        Err(Failure::Other(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Outcome<()> {
    let api = Api::new(&cli.url, cli.api_key)?;
    let json = cli.json;
    let out = |r: &Reply| print_json(json, r);
    match cli.command {
        Command::Overview => {
            let r = api.get("/sessions/stats/overview")?;
            if !out(&r) {
                print_overview(&r.value);
            }
        }
        Command::List => {
            let r = api.get("/sessions")?;
            if !out(&r) {
                print_sessions(&r.value);
            }
        }
        Command::Create { name } => {
            let r = api.post("/sessions", Some(json!({ "name": name })))?;
            if !out(&r) {
                println!("created session {}", text(&r.value["name"]));
                print_fields(&r.value, SESSION_FIELDS);
            }
        }
        Command::Start { id } => action(&api, &id, "start", out)?,
        Command::Stop { id } => action(&api, &id, "stop", out)?,
        Command::Restart { id } => action(&api, &id, "restart", out)?,
        Command::Logout { id } => action(&api, &id, "logout", out)?,
        Command::Delete { id } => {
            // 204: no body, so `--json` prints nothing.
            let r = api.call("DELETE", &format!("/sessions/{}", seg(&id)), None)?;
            if !out(&r) {
                println!("deleted session {id}");
            }
        }
        Command::Qr { id, wait } => {
            let r = qr(&api, &id, Duration::from_secs(wait))?;
            if !out(&r) {
                let v = &r.value;
                let raw = v["qr"].as_str().ok_or_else(|| {
                    Failure::Other("the server's QR answer has no 'qr' text".to_string())
                })?;
                let drawing = render_qr(raw).map_err(|e| Failure::Other(e.to_string()))?;
                print_drawing(&drawing);
                println!();
                println!(
                    "Scan it with WhatsApp: Settings → Linked devices → Link a device (expires {}).",
                    time(&v["expiresAt"])
                );
            }
        }
        Command::Pair { id, phone } => {
            let r = api.post(
                &format!("/sessions/{}/pairing-code", seg(&id)),
                Some(json!({ "phoneNumber": phone })),
            )?;
            if !out(&r) {
                println!("{}", text(&r.value["pairingCode"]));
                eprintln!(
                    "On the phone: WhatsApp → Linked devices → Link a device → \
                     Link with phone number instead, then enter this code."
                );
            }
        }
        Command::Keys { command } => keys(&api, command, out)?,
        Command::Events { session, follow } => events(&api, session.as_deref(), follow, cli.json)?,
    }
    Ok(())
}

/// With `--json`: print the server's body as it came, indented (nothing for
/// an empty body), and say so, so the caller skips its human output.
fn print_json(json: bool, reply: &Reply) -> bool {
    if json && !reply.raw.trim().is_empty() {
        println!("{}", pretty(&reply.raw));
    }
    json
}

/// Indent a JSON text without parsing it into a map, so the server's key
/// order and number spelling stay as they were.
fn pretty(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let mut chars = json.trim().chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push(c);
                let mut escaped = false;
                for c in chars.by_ref() {
                    out.push(c);
                    match c {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    out.push(chars.next().expect("peeked"));
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

fn action(api: &Api, id: &str, verb: &str, out: impl Fn(&Reply) -> bool) -> Outcome<()> {
    let r = api.post(&format!("/sessions/{}/{verb}", seg(id)), None)?;
    if !out(&r) {
        let v = &r.value;
        println!(
            "{} ({}): {}",
            text(&v["name"]),
            text(&v["id"]),
            text(&v["status"])
        );
    }
    Ok(())
}

/// The raw QR answer, waiting up to `wait` while the session is starting.
fn qr(api: &Api, id: &str, wait: Duration) -> Outcome<Reply> {
    let path = format!("/sessions/{}/qr?format=raw", seg(id));
    let deadline = Instant::now() + wait;
    loop {
        let answer = api.get(&path);
        let not_yet = matches!(&answer, Err(Failure::Server { code, .. }) if code == wasup_actors::ErrorCode::QrNotAvailable.as_str());
        if !not_yet || Instant::now() >= deadline {
            return answer;
        }
        let session = api.get(&format!("/sessions/{}", seg(id)))?;
        if !matches!(
            session.value["status"].as_str(),
            Some("initializing" | "qr_ready")
        ) {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn keys(api: &Api, command: KeysCommand, out: impl Fn(&Reply) -> bool) -> Outcome<()> {
    match command {
        KeysCommand::List => {
            let r = api.get("/auth/api-keys")?;
            if !out(&r) {
                print_keys(&r.value);
            }
        }
        KeysCommand::Create {
            name,
            role,
            sessions,
            expires_at,
            expires_in,
        } => {
            let mut body = json!({ "name": name, "role": role.as_str() });
            if !sessions.is_empty() {
                let ids = sessions
                    .iter()
                    .map(|s| session_id(api, s))
                    .collect::<Outcome<Vec<_>>>()?;
                body["allowedSessions"] = json!(ids);
            }
            let expires = expires_at.or_else(|| {
                expires_in.map(|d| {
                    (chrono::Utc::now() + d).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                })
            });
            if let Some(at) = expires {
                body["expiresAt"] = json!(at);
            }
            let r = api.post("/auth/api-keys", Some(body))?;
            if !out(&r) {
                print_fields(&r.value, KEY_FIELDS);
                println!("{:<10}  {}", "api key", text(&r.value["apiKey"]));
                eprintln!("Store the API key now: the server never shows it again.");
            }
        }
        KeysCommand::Revoke { id } => {
            // 204: no body, so `--json` prints nothing.
            let r = api.call("DELETE", &format!("/auth/api-keys/{}", seg(&id)), None)?;
            if !out(&r) {
                println!("revoked API key {id}");
            }
        }
    }
    Ok(())
}

/// A session's UUID from its id or name (keys are scoped by id).
fn session_id(api: &Api, id_or_name: &str) -> Outcome<String> {
    if uuid::Uuid::parse_str(id_or_name).is_ok() {
        return Ok(id_or_name.to_string());
    }
    let r = api.get(&format!("/sessions/{}", seg(id_or_name)))?;
    Ok(text(&r.value["id"]))
}

// ---- output -------------------------------------------------------------

/// A JSON value as a table cell: strings bare, null as "-".
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An ISO timestamp shortened to `YYYY-MM-DD HH:MM:SS` (UTC).
fn time(v: &Value) -> String {
    match v.as_str() {
        Some(s) if s.len() >= 19 && s.as_bytes()[10] == b'T' => {
            format!("{} {}Z", &s[..10], &s[11..19])
        }
        _ => text(v),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Align {
    Left,
    Right,
}

/// Aligned columns, two spaces apart, no trailing spaces.
fn table(headers: &[&str], align: &[Align], rows: &[Vec<String>]) -> String {
    let count = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| count(h)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(count(cell));
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i] - count(cell);
            if i > 0 {
                s.push_str("  ");
            }
            if align.get(i) == Some(&Align::Right) {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Statuses in lifecycle order (the order `overview` lists them in).
const STATUSES: &[&str] = &[
    "created",
    "initializing",
    "qr_ready",
    "authenticating",
    "ready",
    "disconnected",
    "failed",
];

fn words(key: &str) -> String {
    let mut out = String::new();
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn print_overview(v: &Value) {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let empty = serde_json::Map::new();
    let obj = v.as_object().unwrap_or(&empty);
    let mut seen = vec!["byStatus", "memoryUsage"];
    for key in ["total", "active", "ready", "disconnected"] {
        if let Some(n) = obj.get(key) {
            let label = match key {
                "total" => "sessions",
                "active" => "running engines",
                other => other,
            };
            rows.push(vec![label.to_string(), text(n)]);
            seen.push(key);
        }
    }
    if let Some(by) = obj.get("byStatus").and_then(Value::as_object) {
        let mut keys: Vec<&String> = by.keys().collect();
        keys.sort_by_key(|k| {
            (
                STATUSES.iter().position(|s| s == k).unwrap_or(usize::MAX),
                k.to_string(),
            )
        });
        for k in keys {
            rows.push(vec![format!("status {k}"), text(&by[k.as_str()])]);
        }
    }
    if let Some(mem) = obj.get("memoryUsage").and_then(Value::as_object) {
        let mut keys: Vec<&String> = mem.keys().collect();
        keys.sort_by_key(|k| {
            let known = ["heapUsed", "heapTotal", "rss"];
            (
                known.iter().position(|s| s == k).unwrap_or(usize::MAX),
                k.to_string(),
            )
        });
        for k in keys {
            rows.push(vec![
                format!("memory {} (MiB)", words(k)),
                text(&mem[k.as_str()]),
            ]);
        }
    }
    for (k, n) in obj {
        if !seen.contains(&k.as_str()) {
            rows.push(vec![words(k), text(n)]);
        }
    }
    print!(
        "{}",
        table(&["METRIC", "VALUE"], &[Align::Left, Align::Right], &rows)
    );
}

fn print_sessions(v: &Value) {
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no sessions");
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let note = if s["status"] == "failed" {
                text(&s["lastError"])
            } else if s["nextRetryAt"].is_string() {
                format!("retry at {}", time(&s["nextRetryAt"]))
            } else {
                "-".to_string()
            };
            vec![
                text(&s["id"]),
                text(&s["name"]),
                text(&s["status"]),
                text(&s["phone"]),
                text(&s["pushName"]),
                time(&s["lastActive"]),
                note,
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "ID",
                "NAME",
                "STATUS",
                "PHONE",
                "PUSH NAME",
                "LAST ACTIVE",
                "NOTE"
            ],
            &[],
            &rows
        )
    );
}

fn print_keys(v: &Value) {
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no API keys");
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|k| {
            vec![
                text(&k["id"]),
                text(&k["name"]),
                text(&k["keyPrefix"]),
                text(&k["role"]),
                sessions(&k["allowedSessions"]),
                expires(&k["expiresAt"]),
                time(&k["createdAt"]),
                time(&k["revokedAt"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ID", "NAME", "PREFIX", "ROLE", "SESSIONS", "EXPIRES", "CREATED", "REVOKED"],
            &[],
            &rows
        )
    );
}

fn sessions(v: &Value) -> String {
    match v.as_array() {
        Some(ids) if !ids.is_empty() => ids.iter().map(text).collect::<Vec<_>>().join(","),
        _ => "all".to_string(),
    }
}

fn expires(v: &Value) -> String {
    if v.is_null() {
        "never".to_string()
    } else {
        time(v)
    }
}

type Field = (&'static str, &'static str, fn(&Value) -> String);

const SESSION_FIELDS: &[Field] = &[
    ("id", "id", text),
    ("name", "name", text),
    ("status", "status", text),
    ("createdAt", "created", time),
];

const KEY_FIELDS: &[Field] = &[
    ("id", "id", text),
    ("name", "name", text),
    ("keyPrefix", "prefix", text),
    ("role", "role", text),
    ("allowedSessions", "sessions", sessions),
    ("expiresAt", "expires", expires),
];

fn print_fields(v: &Value, fields: &[Field]) {
    for (key, label, show) in fields {
        println!("{label:<10}  {}", show(&v[*key]));
    }
}

// ---- QR in the terminal ---------------------------------------------------

/// QR text too long (or otherwise unfit) for a QR code.
#[derive(Debug, thiserror::Error)]
#[error("the QR text cannot be drawn: {0}")]
struct UndrawableQr(#[from] qrcode::types::QrError);

/// Modules of light margin around the code (the QR standard's quiet zone).
const QUIET: usize = 4;

/// The QR code of `text` as lines of Unicode half blocks, two modules per
/// character cell vertically. Light modules (and the quiet zone) are drawn
/// with the glyph, dark ones left blank, so the code reads right on the usual
/// light-on-dark terminal; `print_drawing` also pins the colours (white on
/// black) when it writes to a terminal, so light themes scan too.
fn render_qr(text: &str) -> Result<Vec<String>, UndrawableQr> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L)?;
    let width = code.width();
    let colors = code.to_colors();
    let side = width + 2 * QUIET;
    // Outside the code (quiet zone and the half row past an odd side) is light.
    let light = |x: usize, y: usize| {
        if x < QUIET || y < QUIET || x >= QUIET + width || y >= QUIET + width {
            return true;
        }
        colors[(y - QUIET) * width + (x - QUIET)] == Color::Light
    };
    Ok((0..side.div_ceil(2))
        .map(|row| {
            (0..side)
                .map(|x| match (light(x, 2 * row), light(x, 2 * row + 1)) {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (false, false) => ' ',
                })
                .collect()
        })
        .collect())
}

fn print_drawing(lines: &[String]) {
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = if colour {
            writeln!(out, "\x1b[97;40m{line}\x1b[0m")
        } else {
            writeln!(out, "{line}")
        };
    }
}

/// The cursor before every event: a replay of the whole stored log.
const LOG_START: &str = "evt_00000000000000000000000000000000";

/// What the event reader thread reports.
enum Sse {
    Event {
        id: String,
        data: String,
    },
    /// The server's last message (`stream.end`): why it ended.
    End(String),
    /// The connection dropped or could not be made.
    Dropped(String),
}

/// `wasup-admin events`: replay the stored events, then (with `follow`)
/// keep reading; after a drop, reconnect with the last id seen.
fn events(api: &Api, session: Option<&str>, follow: bool, json: bool) -> Outcome<()> {
    let http = Client::builder()
        .user_agent(concat!("wasup-admin/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Failure::Other(format!("cannot set up HTTP: {e}")))?;
    let mut last = LOG_START.to_string();
    let mut query = String::new();
    if let Some(session) = session {
        query = format!("?sessions={}", seg(session));
    }
    loop {
        let mut req = http
            .get(format!("{}/api/events{query}", api.base))
            .header("Last-Event-ID", &last)
            .header("Accept", "text/event-stream");
        if let Some(key) = &api.key {
            req = req.header("X-API-Key", key);
        }
        let res = match req.send() {
            Ok(res) => res,
            Err(e) if follow => {
                eprintln!("wasup-admin: stream dropped ({}); reconnecting", cause(&e));
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
            Err(e) => {
                return Err(Failure::Other(format!(
                    "cannot reach wasup at {}: {}",
                    api.base,
                    cause(&e)
                )))
            }
        };
        if !res.status().is_success() {
            let status = res.status().as_u16();
            let v: Value =
                serde_json::from_str(&res.text().unwrap_or_default()).unwrap_or(Value::Null);
            return Err(Failure::Server {
                status,
                code: v["code"].as_str().unwrap_or("http_error").to_string(),
                message: v["message"]
                    .as_str()
                    .unwrap_or("the stream was refused")
                    .to_string(),
            });
        }
        let rx = read_sse(res);
        loop {
            // Without --follow, the replay is over once the stream goes quiet.
            let wait = if follow {
                Duration::from_secs(3600)
            } else {
                Duration::from_secs(1)
            };
            match rx.recv_timeout(wait) {
                Ok(Sse::Event { id, data }) => {
                    print_event(&data, json);
                    last = id;
                }
                Ok(Sse::End(why)) => {
                    eprintln!("wasup-admin: the server ended the stream: {why}");
                    break;
                }
                Ok(Sse::Dropped(why)) => {
                    eprintln!("wasup-admin: stream dropped ({why})");
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) if !follow => return Ok(()),
                Err(_) => break,
            }
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(2));
        eprintln!("wasup-admin: reconnecting after {last}");
    }
}

/// Parse a `text/event-stream` body on a thread of its own.
fn read_sse(res: reqwest::blocking::Response) -> mpsc::Receiver<Sse> {
    use std::io::BufRead;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(res);
        let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => {
                    let _ = tx.send(Sse::Dropped("connection closed".into()));
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Sse::Dropped(e.to_string()));
                    return;
                }
                Ok(_) => {}
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if !data.is_empty() {
                    let msg = if event == "stream.end" {
                        let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                        Sse::End(v["message"].as_str().unwrap_or(&data).to_string())
                    } else {
                        Sse::Event {
                            id: std::mem::take(&mut id),
                            data: std::mem::take(&mut data),
                        }
                    };
                    data.clear();
                    event.clear();
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
            } else if let Some(v) = l.strip_prefix("id: ") {
                id = v.to_string();
            } else if let Some(v) = l.strip_prefix("event: ") {
                event = v.to_string();
            } else if let Some(v) = l.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
    });
    rx
}

/// One line per event: time, session, seq, event, data (a QR's image is left out).
fn print_event(data: &str, json: bool) {
    if json {
        println!("{data}");
        return;
    }
    let Ok(mut v) = serde_json::from_str::<Value>(data) else {
        return;
    };
    if let Some(d) = v.get_mut("data").and_then(Value::as_object_mut) {
        d.remove("qrCode");
    }
    println!(
        "{} {} #{} {} {}",
        v["timestamp"].as_str().unwrap_or("-"),
        v["sessionName"].as_str().unwrap_or("-"),
        v["seq"],
        v["event"].as_str().unwrap_or("-"),
        v["data"]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_api_key() {
        let cli = Cli::try_parse_from(["wasup-admin", "--api-key", "s3cr3t-api-key", "overview"])
            .unwrap();
        let text = format!("{cli:?}");
        assert!(!text.contains("s3cr3t-api-key"), "{text}");
        assert!(text.contains("Overview"), "{text}");
    }

    #[test]
    fn the_drawing_decodes_to_the_text() {
        let text = "2@AbCdEf+/=,9k3JxY1lI2h0bm9pc2Uta2V5LWJhc2U2NA==,aWRlbnRpdHk=,YWR2,9";
        let lines = render_qr(text).unwrap();
        let side = lines[0].chars().count();
        let mut modules = vec![vec![true; side]; lines.len() * 2];
        for (row, line) in lines.iter().enumerate() {
            for (x, c) in line.chars().enumerate() {
                let (top, bottom) = match c {
                    '█' => (true, true),
                    '▀' => (true, false),
                    '▄' => (false, true),
                    _ => (false, false),
                };
                modules[2 * row][x] = top;
                modules[2 * row + 1][x] = bottom;
            }
        }
        let scale = 4;
        let px = side * scale;
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(px, px, |x, y| {
            if modules[y / scale][x / scale] {
                255
            } else {
                0
            }
        });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1);
        assert_eq!(grids[0].decode().unwrap().1, text);
    }

    #[test]
    fn pretty_keeps_order_and_matches_serde_layout() {
        let raw = r#"{"b":1,"a":{"x":[1, 2.50,{}],"y":[]},"s":"a,b:{\"}[","n":null}"#;
        let got = pretty(raw);
        assert!(got.starts_with("{\n  \"b\": 1,\n  \"a\": {"), "{got}");
        assert!(got.contains("2.50"), "{got}");
        let v: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v, serde_json::from_str::<Value>(raw).unwrap());
        let sorted = serde_json::to_string(&v).unwrap();
        assert_eq!(pretty(&sorted), serde_json::to_string_pretty(&v).unwrap());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90d").unwrap(), chrono::Duration::days(90));
        assert_eq!(parse_duration("12h").unwrap(), chrono::Duration::hours(12));
        assert!(parse_duration("0d").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("3w").is_err());
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "BB"],
            &[Align::Left, Align::Right],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxyz   1\nq    22\n");
    }
}
