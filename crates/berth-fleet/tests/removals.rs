//! `Fleet::recent_removals`: evictions and idle culls are remembered
//! (newest first, with owner and reason); removals someone asked for are
//! not.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_fleet::{Fleet, FleetConfig, MemoryActivityStore, RemovalReason};
use berth_manager::{ContainerSpec, MOCK_TOOL_IMAGE, MockManager};

fn spec(name: &str, mb: u64, owner: &str) -> ContainerSpec {
    ContainerSpec::new(MOCK_TOOL_IMAGE, name, mb).label("berth-owner", owner)
}

#[tokio::test]
async fn evictions_and_culls_are_remembered() {
    let config = FleetConfig {
        memory_budget_mb: Some(100),
        owner_label: "berth-owner".into(),
        idle_timeout: Some(Duration::from_millis(200)),
        ..FleetConfig::default()
    };
    let activity = Arc::new(MemoryActivityStore::new());
    let fleet = Fleet::new(Arc::new(MockManager::new()), activity.clone(), config);
    assert!(fleet.recent_removals().is_empty());

    fleet.launch(spec("aa", 60, "ann"), None).await.unwrap();
    fleet.launch(spec("bb", 60, "bob"), None).await.unwrap();
    // A kill someone asked for is not the fleet's doing.
    fleet.launch(spec("cc", 10, "bob"), None).await.unwrap();
    fleet.kill("cc").await.unwrap();
    let removals = fleet.recent_removals();
    assert_eq!(removals.len(), 1, "{removals:?}");
    assert_eq!(removals[0].name, "aa");
    assert_eq!(removals[0].owner.as_deref(), Some("ann"));
    assert_eq!(removals[0].reason, RemovalReason::Evicted { for_container: "bb".into() });

    // "bb" stays busy; a quiet "dd" is culled.
    fleet.launch(spec("dd", 10, "ann"), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    activity.touch("bb", SystemTime::now());
    let culled = fleet.purge_inactive(Duration::from_millis(200)).await.unwrap();
    assert_eq!(culled, ["dd"]);
    let removals = fleet.recent_removals();
    let names: Vec<&str> = removals.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["dd", "aa"], "newest first");
    assert!(
        matches!(removals[0].reason, RemovalReason::Idle { idle } if idle >= Duration::from_millis(200)),
        "{removals:?}"
    );
    assert!(removals[0].time >= removals[1].time);
}
