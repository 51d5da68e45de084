use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let config = match wasup::config::Settings::parse().validate() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("wasup: {err}");
            return ExitCode::from(2);
        }
    };
    wasup::server::run(config)
}
