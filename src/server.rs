//! Process wiring: config → database → actors → HTTP server.
pub fn run(_config: crate::config::Config) -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
