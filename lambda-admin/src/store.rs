//! Store ports the handlers are generic over, and the in-memory adapter for unit tests.

use std::future::Future;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// What every store must answer: is the backing table reachable.
pub trait HealthStore: Send + Sync {
    /// Returns the backing table's status (e.g. `ACTIVE`) or an error.
    fn ping(&self) -> impl Future<Output = Result<String, StoreError>> + Send;
}

/// In-memory store for fast handler tests.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    pub down: bool,
}

impl HealthStore for MemoryStore {
    async fn ping(&self) -> Result<String, StoreError> {
        if self.down {
            Err(StoreError::Unavailable("memory store marked down".into()))
        } else {
            Ok("ACTIVE".into())
        }
    }
}
