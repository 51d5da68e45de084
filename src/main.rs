use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Everything this process creates is its owner's alone. A umask, set
    // before anything opens a file, rather than a mode per file: SQLite
    // creates wasup.db-wal and -shm itself, with modes we cannot pass in.
    // SAFETY: umask only swaps the process's file-creation mask; no thread
    // runs yet.
    unsafe {
        libc::umask(0o077);
    }
    let config = match wasup::config::Settings::parse().validate() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("wasup: {err}");
            return ExitCode::from(2);
        }
    };
    wasup::server::run(config)
}
