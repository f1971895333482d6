//! The async driver on a paused tokio clock: a director-shaped `select!` loop over
//! `sleep_until_next`, kicks from a channel and shutdown, observing expiries at exact times.

use std::time::Duration;

use nines_core::shutdown::{Shutdown, ShutdownSignal};
use nines_watchdog::driver::sleep_until_ms;
use nines_watchdog::{elapsed_ms, sleep_until_next, DeadlineTable};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the loop saw: (key, the time it noticed, the deadline that passed).
type Seen = Vec<(&'static str, u64, u64)>;

/// The loop a node director would run: kicks in, expiries out, until shutdown.
async fn director(
    mut table: DeadlineTable<&'static str>,
    origin: Instant,
    mut kicks: mpsc::Receiver<&'static str>,
    mut shutdown: ShutdownSignal,
) -> Seen {
    let mut seen = Vec::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.wait() => break,
            () = sleep_until_next(&table, origin) => {
                let now_ms = elapsed_ms(origin);
                for e in table.expire(now_ms) {
                    seen.push((e.key, now_ms, e.deadline_ms));
                }
            }
            Some(key) = kicks.recv() => {
                assert!(table.kick(&key, elapsed_ms(origin)), "{key} is watched");
            }
        }
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn the_driver_wakes_exactly_at_each_deadline_and_kicks_postpone_it() {
    let origin = Instant::now();
    let mut table = DeadlineTable::new();
    table.arm("kicked", 100, 0).expect("room");
    table.arm("silent", 250, 0).expect("room");
    let (kick_tx, kick_rx) = mpsc::channel(16);
    let (stop, signal) = Shutdown::new();
    let task = tokio::spawn(director(table, origin, kick_rx, signal));

    // Phase 1: "kicked" is kicked every 80 ms up to 400 ms; "silent" never is.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(80)).await;
        kick_tx.send("kicked").await.expect("director runs");
    }
    // Phase 2: silence; "kicked" expires 100 ms after its last kick (400).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // Phase 3: a late kick re-arms it; it expires again 100 ms later.
    kick_tx.send("kicked").await.expect("director runs");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.trigger();
    let seen = task.await.expect("director ends cleanly");
    assert_eq!(
        seen,
        vec![
            ("silent", 250, 250),
            ("kicked", 500, 500),
            ("kicked", 1_500, 1_500)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn with_nothing_armed_the_sleep_pends_and_a_past_deadline_is_immediate() {
    let origin = Instant::now();
    let empty = DeadlineTable::<u32>::new();
    let pending =
        tokio::time::timeout(Duration::from_secs(3_600), sleep_until_next(&empty, origin));
    assert!(pending.await.is_err(), "no deadline: pends");

    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = Instant::now();
    sleep_until_ms(Some(10), origin).await;
    assert_eq!(Instant::now(), before, "a past deadline resolves at once");
    let unreachable = tokio::time::timeout(
        Duration::from_secs(1),
        sleep_until_ms(Some(u64::MAX), origin),
    );
    assert!(
        unreachable.await.is_err(),
        "a deadline beyond Instant's range pends"
    );
}
