//! The conformance suite against `MockManager`.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use berth_manager::conformance::Fixture;
use berth_manager::{ContainerManager, LabelScheme, MOCK_TOOL_IMAGE, MockConfig, MockEngine, MockManager};

static N: AtomicU32 = AtomicU32::new(0);

async fn setup() -> Option<(Arc<dyn ContainerManager>, Fixture)> {
    let engine = MockEngine::new();
    let manager = MockManager::with_config(engine.clone(), MockConfig::default());
    let foreign = MockManager::with_config(
        engine,
        MockConfig { labels: LabelScheme::new("berth-foreign"), ..MockConfig::default() },
    );
    let fixture = Fixture {
        image: MOCK_TOOL_IMAGE.to_owned(),
        foreign: Arc::new(foreign),
        name_prefix: format!("m{}", N.fetch_add(1, Ordering::Relaxed)),
        labels: Default::default(),
        host_from_container: "127.0.0.1".to_owned(),
        ready_timeout: Duration::from_secs(10),
        program: berth_manager::MOCK_TOOL_PROGRAM.to_owned(),
        guard: None,
    };
    Some((Arc::new(manager), fixture))
}

berth_manager::conformance_tests!(setup);
