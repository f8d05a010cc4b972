//! The conformance suite against `MemoryStore`.

use std::sync::Arc;

use berth_staging::MemoryStore;
use berth_staging::conformance::Fixture;

async fn setup(max_file_size: u64) -> Fixture {
    Fixture::new(Arc::new(MemoryStore::new().with_max_file_size(max_file_size)))
}

berth_staging::conformance_tests!(setup);
