//! The counter example as its own program (`nines-counter`); the `nines` binary runs the same
//! code as `nines example counter`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match nines_example_counter::run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("counter: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
