//! The conformance suite against `LocalDirStore`, each check in its own
//! temporary directory.

use std::sync::Arc;

use berth_staging::LocalDirStore;
use berth_staging::conformance::Fixture;

async fn setup(max_file_size: u64) -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store =
        LocalDirStore::open(dir.path().join("staging")).await.expect("open store").with_max_file_size(max_file_size);
    Fixture::new(Arc::new(store)).with_guard(dir)
}

berth_staging::conformance_tests!(setup);
