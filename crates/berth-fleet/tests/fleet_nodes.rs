//! The fleet across nodes, on a mock cluster (fast, deterministic): per-node
//! budgets, eviction where the new container can be placed, retries when
//! no node has room, and node loss.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_fleet::{Error, Fleet, FleetConfig, LaunchOutcome, MemoryActivityStore};
use berth_manager::{
    ContainerManager, ContainerSpec, ContainerState, ListFilter, MOCK_NODE_ID, MOCK_TOOL_IMAGE, MockConfig, MockEngine,
    MockManager, NodeInfo,
};

fn spec(name: &str, mb: u64) -> ContainerSpec {
    ContainerSpec::new(MOCK_TOOL_IMAGE, name, mb)
}

/// A mock cluster of two nodes in zones a and b; `budget` goes in each
/// node's budget label, `memory` is what each node has.
fn cluster(
    config: FleetConfig,
    budget: Option<u64>,
    memory: u64,
) -> (Arc<Fleet>, Arc<MockManager>, Arc<MemoryActivityStore>, MockEngine) {
    let engine = MockEngine::new();
    engine.remove_node(MOCK_NODE_ID);
    for (id, zone) in [("n1", "a"), ("n2", "b")] {
        let mut node = NodeInfo::new(id, format!("host-{id}"));
        node.labels.insert("zone".into(), zone.into());
        if let Some(b) = budget {
            node.labels.insert("berth.mem_budget_mb".into(), b.to_string());
        }
        node.memory_mb = memory;
        engine.add_node(node);
    }
    let manager = Arc::new(MockManager::with_config(engine.clone(), MockConfig::default()));
    let activity = Arc::new(MemoryActivityStore::new());
    let fleet = Arc::new(Fleet::new(manager.clone(), activity.clone(), config));
    (fleet, manager, activity, engine)
}

async fn placement(m: &MockManager) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        m.list(&ListFilter::all()).await.unwrap().into_iter().map(|c| (c.name, c.node.unwrap_or_default())).collect();
    out.sort();
    out
}

fn evicted(outcome: &LaunchOutcome) -> Vec<String> {
    match outcome {
        LaunchOutcome::Launched { evicted, .. } => evicted.clone(),
        LaunchOutcome::Existing(_) => panic!("not launched"),
    }
}

async fn launch_in_order(fleet: &Fleet, specs: Vec<ContainerSpec>) {
    for s in specs {
        fleet.launch(s, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn per_node_budgets_spread_and_evict_where_the_container_can_go() {
    let config = FleetConfig { node_budget_labels: true, ..FleetConfig::default() };
    let (fleet, manager, activity, _) = cluster(config, Some(64), 0);
    launch_in_order(&fleet, vec![spec("aa", 32), spec("bb", 32), spec("cc", 32), spec("dd", 32)]).await;
    let nodes = placement(&manager).await;
    let on = |n: &str| nodes.iter().filter(|(_, node)| node == n).count();
    assert_eq!((on("n1"), on("n2")), (2, 2), "the fleet fills the node with most room first: {nodes:?}");

    // Both nodes are full. A container that can only go to zone a evicts
    // there, least recently used first, even if zone b holds older ones.
    let in_a: Vec<String> = nodes.iter().filter(|(_, n)| n == "n1").map(|(c, _)| c.clone()).collect();
    activity.touch(&in_a[1], SystemTime::now());
    let outcome = fleet.launch(spec("za", 32).constraint("node.labels.zone==a"), None).await.unwrap();
    assert_eq!(evicted(&outcome), [in_a[0].clone()]);
    assert_eq!(outcome.info().node.as_deref(), Some("n1"));

    // Unconstrained: the node where the victims are oldest gives way.
    let outcome = fleet.launch(spec("any", 64), None).await.unwrap();
    let gone = evicted(&outcome);
    assert_eq!(gone.len(), 2, "a full node's worth: {gone:?}");
    let node = outcome.info().node.clone().unwrap();
    assert_eq!(node, "n2", "n1 holds the just-used container and the newest launch");
    let left = placement(&manager).await;
    assert!(left.iter().filter(|(_, n)| *n == node).count() == 1, "{left:?}");
}

#[tokio::test]
async fn a_node_budget_nothing_can_meet_starts_anyway_and_constraints_still_hold() {
    let config = FleetConfig { node_memory_budget_mb: Some(16), ..FleetConfig::default() };
    let (fleet, manager, _, _) = cluster(config, None, 0);
    let outcome = fleet.launch(spec("big", 32).constraint("node.labels.zone==b"), None).await.unwrap();
    assert!(evicted(&outcome).is_empty());
    assert_eq!(placement(&manager).await, [("big".to_owned(), "n2".to_owned())]);
    let r = fleet.launch(spec("nowhere", 8).constraint("node.labels.zone==c"), None).await;
    assert!(
        matches!(r, Err(Error::Manager(berth_manager::Error::Unschedulable { insufficient_resources: false, .. }))),
        "{r:?}"
    );
}

#[tokio::test]
async fn no_room_on_any_node_evicts_and_retries_or_fails_clearly() {
    // No fleet budget at all: the nodes' own memory (64 MiB each) is what
    // runs out, and the backend says so.
    let (fleet, manager, _, _) = cluster(FleetConfig::default(), None, 64);
    launch_in_order(&fleet, vec![spec("aa", 32), spec("bb", 32), spec("cc", 32), spec("dd", 32)]).await;
    let outcome = fleet.launch(spec("ee", 32), None).await.unwrap();
    assert_eq!(evicted(&outcome), ["aa"], "the least recently used container anywhere gives way");
    let before = placement(&manager).await;
    assert_eq!(before.len(), 4);
    // More than any node has: evicting cannot help, so nothing is evicted,
    // and the error says why.
    let r = fleet.launch(spec("huge", 128), None).await;
    let Err(Error::NoRoom { reason, source, .. }) = &r else { panic!("{r:?}") };
    assert!(reason.contains("128 MiB") && reason.contains("64 MiB"), "{reason}");
    assert!(
        matches!(source, berth_manager::Error::Unschedulable { insufficient_resources: true, .. }),
        "the backend's refusal is kept: {source:?}"
    );
    let message = r.as_ref().unwrap_err().to_string();
    assert!(message.contains("\"huge\"") && message.contains("cannot"), "{message}");
    assert!(manager.inspect("huge").await.unwrap_err().is_not_found());
    assert_eq!(placement(&manager).await, before, "no container was evicted for a launch no node can hold");
}

#[tokio::test]
async fn eviction_happens_only_where_it_makes_room() {
    // n1 holds aa (8 MiB) and bb (56), n2 holds cc (16) and dd (32); least
    // recently used first: aa, cc, bb, dd. A 32 MiB launch fits nowhere.
    // Evicting aa alone would not make room on n1, so cc (on n2) goes,
    // though aa is older.
    let (fleet, manager, activity, _) = cluster(FleetConfig::default(), None, 64);
    let on = |s: ContainerSpec, node: &str| s.constraint(format!("node.id=={node}"));
    launch_in_order(
        &fleet,
        vec![on(spec("aa", 8), "n1"), on(spec("cc", 16), "n2"), on(spec("bb", 56), "n1"), on(spec("dd", 32), "n2")],
    )
    .await;
    let t0 = SystemTime::now();
    for (i, name) in ["aa", "cc", "bb", "dd"].into_iter().enumerate() {
        activity.touch(name, t0 + Duration::from_secs(i as u64 + 1));
    }
    let outcome = fleet.launch(spec("new", 32), None).await.unwrap();
    assert_eq!(evicted(&outcome), ["cc"], "only the victim whose node then fits");
    assert_eq!(outcome.info().node.as_deref(), Some("n2"));
    let names: Vec<String> = placement(&manager).await.into_iter().map(|(c, _)| c).collect();
    assert_eq!(names, ["aa", "bb", "dd", "new"]);

    // Only n1 is eligible and even an empty n1 cannot hold 72 MiB: nothing
    // is evicted there, whatever n2 holds.
    let r = fleet.launch(spec("wide", 72).constraint("node.labels.zone==a"), None).await;
    assert!(matches!(r, Err(Error::NoRoom { .. })), "{r:?}");
    let names: Vec<String> = placement(&manager).await.into_iter().map(|(c, _)| c).collect();
    assert_eq!(names, ["aa", "bb", "dd", "new"]);

    // n1 can hold 60 MiB once both of its containers go: both are evicted
    // at once (not one per retry), and the launch lands there.
    let outcome = fleet.launch(spec("big", 60).constraint("node.labels.zone==a"), None).await.unwrap();
    assert_eq!(evicted(&outcome), ["aa", "bb"]);
    assert_eq!(outcome.info().node.as_deref(), Some("n1"));
}

#[tokio::test]
async fn node_loss_fails_visibly_and_a_launch_goes_elsewhere() {
    let config = FleetConfig { node_budget_labels: true, ..FleetConfig::default() };
    let (fleet, manager, _, engine) = cluster(config, Some(256), 0);
    let first = fleet.launch(spec("lost", 32).constraint("node.labels.zone!=c"), None).await.unwrap();
    let node = first.info().node.clone().unwrap();
    engine.set_node_ready(&node, false);
    let info = manager.inspect("lost").await.unwrap();
    assert_eq!(info.state, ContainerState::Dead);
    assert_eq!(info.message.as_deref(), Some(format!("node {node} is down").as_str()));
    let r = manager.endpoint("lost").await;
    assert!(matches!(r, Err(berth_manager::Error::NodeDown { .. })), "{r:?}");
    // The same launch again replaces the lost container, on a node that is up.
    let again = fleet.launch(spec("lost", 32).constraint("node.labels.zone!=c"), None).await.unwrap();
    assert!(matches!(again, LaunchOutcome::Launched { .. }));
    assert_ne!(again.info().node.as_deref(), Some(node.as_str()));
    assert_eq!(again.info().state, ContainerState::Running);
    assert_eq!(placement(&manager).await.len(), 1, "nothing of the lost container is left registered");
}
