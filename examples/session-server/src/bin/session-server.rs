//! The session server as its own program; the `nines` binary runs the same code as
//! `nines example session-server`. Started by the agent as a component (see `model.toml`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match nines_example_session_server::run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
