//! The one webhook receiver of the tests: a tiny HTTP/1.1 server on loopback
//! that records every request (path, headers, body, arrival) and answers
//! each per a behaviour: a status and a delay for the n-th request.
// Each build (default, simulator) uses a part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::poll;

/// One request as the receiver read it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The request target, e.g. `/hook`.
    pub path: String,
    /// Header names in lowercase.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// Whether the Standard Webhooks signature verifies under `secret`
    /// (`whsec_…`, as the API shows it once).
    pub fn is_signed_by(&self, secret: &str) -> bool {
        let wh = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                v.parse(),
            ) {
                headers.insert(k, v);
            }
        }
        wh.verify(&self.body, &headers).is_ok()
    }

    pub fn assert_signed_by(&self, secret: &str) {
        assert!(
            self.is_signed_by(secret),
            "signature does not verify: {:?}",
            self.headers
        );
    }
}

/// (status, delay) for the n-th request (0-based).
pub type Behaviour = Arc<dyn Fn(usize) -> (u16, Duration) + Send + Sync>;

pub struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// Answers 200 to everything, one request per connection.
    pub fn ok() -> Receiver {
        Self::start(Arc::new(|_| (200, Duration::ZERO)))
    }

    pub fn start(behaviour: Behaviour) -> Receiver {
        Self::start_on(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            behaviour,
            Arc::default(),
            false,
        )
    }

    /// Answers 200 and keeps connections open (HTTP keep-alive), as a
    /// receiver under load would.
    pub fn keep_alive() -> Receiver {
        Self::start_on(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            Arc::new(|_| (200, Duration::ZERO)),
            Arc::default(),
            true,
        )
    }

    /// Holds every request until `release` is set, then answers 200.
    pub fn held_until(release: Arc<AtomicBool>) -> Receiver {
        Self::start(Arc::new(move |_| {
            while !release.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            (200, Duration::ZERO)
        }))
    }

    /// On a given listener, appending to `got` (so a receiver restarted on
    /// the same port keeps one record).
    pub fn start_on(
        listener: TcpListener,
        behaviour: Behaviour,
        got: Arc<Mutex<Vec<Received>>>,
        keep_alive: bool,
    ) -> Receiver {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let (got2, stop2) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (got, behaviour, count) =
                            (got2.clone(), behaviour.clone(), count.clone());
                        std::thread::spawn(move || {
                            serve(stream, &got, &behaviour, &count, keep_alive)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Receiver { addr, got, stop }
    }

    /// `http://127.0.0.1:port`: append any path.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self) -> String {
        format!("{}/hook", self.base())
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Every body that is JSON, in arrival order.
    pub fn bodies(&self) -> Vec<Value> {
        let got = self.got.lock().unwrap();
        got.iter()
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect()
    }

    /// Wait until `done(received)` holds (or panic after `secs`).
    pub fn wait(&self, secs: u64, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        poll(secs, what, || {
            let got = self.received();
            match done(&got) {
                true => Ok(got),
                false => Err(format!("{} requests", got.len())),
            }
        })
    }

    /// Wait until `done(bodies)` holds (or panic after `secs`).
    pub fn wait_bodies(
        &self,
        secs: u64,
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        poll(secs, what, || {
            let got = self.bodies();
            match done(&got) {
                true => Ok(got),
                false => Err(format!("{got:?}")),
            }
        })
    }

    /// The first body `pick` accepts (or panic after `secs`).
    pub fn wait_for(&self, secs: u64, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let got = self.wait_bodies(secs, what, |got| got.iter().any(&pick));
        got.into_iter().find(|b| pick(b)).unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    stream: TcpStream,
    got: &Mutex<Vec<Received>>,
    behaviour: &Behaviour,
    count: &AtomicUsize,
    keep_alive: bool,
) {
    stream.set_nonblocking(false).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        let n = count.fetch_add(1, Ordering::SeqCst);
        got.lock().unwrap().push(request);
        let (status, delay) = behaviour(n);
        std::thread::sleep(delay);
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let answered = write!(
            out,
            "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: {connection}\r\n\r\n"
        );
        if !keep_alive || answered.is_err() {
            return;
        }
    }
}

/// One request, or None when the connection ends first.
fn read_request(reader: &mut impl BufRead) -> Option<Received> {
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return None;
        }
        if h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        path,
        headers,
        body,
        at: Instant::now(),
    })
}

/// A receiver that answers every request 200 with a `len`-byte body and
/// records, per connection, how many body bytes it wrote before the client
/// hung up or the body ended (so a test can see a client stop reading).
pub struct HugeReplyReceiver {
    addr: SocketAddr,
    /// Body bytes written, one entry per finished connection.
    written: Arc<Mutex<Vec<usize>>>,
}

impl HugeReplyReceiver {
    pub fn start(len: usize) -> HugeReplyReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let written: Arc<Mutex<Vec<usize>>> = Arc::default();
        let log = written.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut out = stream;
                    if read_request(&mut reader).is_none() {
                        return;
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                    );
                    if out.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    let chunk = [b'x'; 64 * 1024];
                    let mut sent = 0;
                    while sent < len {
                        let n = chunk.len().min(len - sent);
                        if out.write_all(&chunk[..n]).is_err() {
                            break;
                        }
                        sent += n;
                    }
                    log.lock().unwrap().push(sent);
                });
            }
        });
        HugeReplyReceiver { addr, written }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Body bytes written per finished connection, in finishing order.
    pub fn written(&self) -> Vec<usize> {
        self.written.lock().unwrap().clone()
    }
}
