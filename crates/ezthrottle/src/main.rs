//! The `ezthrottle` binary: `serve` and the admin commands. Kept small: configuration loading is
//! in `cli`, the server in `ezt-runtime` (services) and `ezt-http` (the API).

mod cli;
mod logging;

use std::io::Write;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(cli::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A closed stderr must not turn an error exit into a panic.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
