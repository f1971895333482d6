//! `nines-events`: raise and clear alarms, or print them as they come.
//!
//! ```sh
//! nines-events publish --severity major --source eth0 --text "link down"
//! nines-events subscribe --severity 'maj*'
//! ```

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = nines_example_events::cli::Cli::parse();
    let mut out = std::io::stdout();
    match nines_example_events::cli::run(cli, &mut out).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nines-events: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
