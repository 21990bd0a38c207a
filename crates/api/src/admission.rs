//! Admission of state-changing requests. Each replica runs a bounded number of writes at
//! once (`FLOWFORGE_WRITE_CONCURRENCY`, by default one per pooled connection). A write
//! waits for its turn only so long (`FLOWFORGE_WRITE_QUEUE_TIMEOUT`); past that it is
//! refused at once with 429 and `Retry-After`: a burst above what the database can commit
//! gets quick answers — most served, the rest told to come back — instead of every
//! request queueing for seconds.

use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

pub struct WriteGate {
    turns: Semaphore,
    patience: Duration,
}

impl WriteGate {
    pub fn new(in_flight: usize, patience: Duration) -> Self {
        WriteGate { turns: Semaphore::new(in_flight), patience }
    }

    /// A turn to write, held until the permit drops; `None` if none came up in time.
    pub async fn enter(&self) -> Option<SemaphorePermit<'_>> {
        match tokio::time::timeout(self.patience, self.turns.acquire()).await {
            Ok(Ok(permit)) => Some(permit),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_waits_for_a_turn_only_as_long_as_its_patience() {
        let gate = WriteGate::new(1, Duration::from_millis(20));
        let first = gate.enter().await.expect("a free turn");
        assert!(gate.enter().await.is_none(), "the only turn is taken");
        drop(first);
        assert!(gate.enter().await.is_some(), "a turn is free again");
    }
}
