//! Shutdown plumbing: one [`Shutdown`] trigger, many cheap [`ShutdownSignal`] listeners.
//!
//! Long-lived tasks take a signal and `select!` on [`ShutdownSignal::wait`] first (biased), so a
//! stop request is never starved by work.

use tokio::sync::watch;

/// The trigger. Dropping it also signals shutdown, so a crashed owner stops its tasks.
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

/// A listener; clone it into every task that must stop.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A new trigger and its first listener.
    pub fn new() -> (Self, ShutdownSignal) {
        let (tx, rx) = watch::channel(false);
        (Self { tx }, ShutdownSignal { rx })
    }

    /// Ask every listener to stop.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    /// Another listener.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            rx: self.tx.subscribe(),
        }
    }
}

impl ShutdownSignal {
    /// A listener that never fires (for tests and tools that stop by dropping).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        Self { rx }
    }

    /// Whether shutdown was requested.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown is requested (or the trigger is dropped).
    pub async fn wait(&mut self) {
        while !*self.rx.borrow_and_update() {
            if self.rx.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_and_drop_both_wake_listeners() {
        let (s, mut sig) = Shutdown::new();
        assert!(!sig.is_triggered());
        s.trigger();
        sig.wait().await;
        assert!(sig.is_triggered());

        let (s2, mut sig2) = Shutdown::new();
        drop(s2);
        sig2.wait().await;
    }
}
