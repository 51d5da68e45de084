//! The `wasup-simulator` binary as a child process on two free loopback
//! ports, killed when dropped.

use crate::common::{free_port, poll};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct SimProcess {
    child: Child,
    /// The chat socket, e.g. for `WASUP_SIMULATOR_URL`.
    pub ws: String,
    /// The JSON control API's base URL.
    pub control: String,
}

impl SimProcess {
    /// Start on `dir` (its data dir) and wait until the control API answers.
    /// Blocking: call it from an async test through `spawn_blocking`.
    pub fn start(dir: &Path) -> SimProcess {
        let (ws, control) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_wasup-simulator"))
            .args(["--ws", &format!("127.0.0.1:{ws}")])
            .args(["--control", &format!("127.0.0.1:{control}")])
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn wasup-simulator");
        let sim = SimProcess {
            child,
            ws: format!("ws://127.0.0.1:{ws}/ws/chat"),
            control: format!("http://127.0.0.1:{control}"),
        };
        let http = reqwest::blocking::Client::new();
        poll(30, "the simulator's control API", || {
            match http.get(format!("{}/health", sim.control)).send() {
                Ok(r) if r.status().is_success() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        sim
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
