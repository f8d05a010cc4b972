//! Fleet behaviour on the mock backend (fast, deterministic), plus one
//! narrow interaction check with a mockall manager.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use berth_fleet::{ContainerResources, Error, Fleet, FleetConfig, LaunchOutcome, MemoryActivityStore};
use berth_manager::{ContainerManager, ContainerSpec, ListFilter, MOCK_TOOL_IMAGE, MockManager};

fn spec(name: &str, mb: u64) -> ContainerSpec {
    ContainerSpec::new(MOCK_TOOL_IMAGE, name, mb)
}

fn fleet(config: FleetConfig) -> (Arc<Fleet>, Arc<MockManager>, Arc<MemoryActivityStore>) {
    let manager = Arc::new(MockManager::new());
    let activity = Arc::new(MemoryActivityStore::new());
    (Arc::new(Fleet::new(manager.clone(), activity.clone(), config)), manager, activity)
}

async fn names(m: &MockManager) -> Vec<String> {
    m.list(&ListFilter::all()).await.unwrap().into_iter().map(|c| c.name).collect()
}

#[tokio::test]
async fn eviction_follows_last_activity() {
    let (fleet, manager, activity) = fleet(FleetConfig { memory_budget_mb: Some(100), ..FleetConfig::default() });
    for n in ["aa", "bb", "cc"] {
        fleet.launch(spec(n, 30), None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // "aa" is the oldest but was used last; "bb" and "cc" were never used.
    activity.touch("aa", SystemTime::now());
    let order: Vec<String> = fleet.lru_order().await.unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(order, ["bb", "cc", "aa"]);
    let outcome = fleet.launch(spec("dd", 50), None).await.unwrap();
    let LaunchOutcome::Launched { evicted, .. } = outcome else { panic!("not launched") };
    assert_eq!(evicted, ["bb", "cc"], "least recently used first, and only as many as needed");
    assert_eq!(names(&manager).await, ["aa", "dd"]);
}

#[tokio::test]
async fn over_budget_with_nothing_to_evict_starts_anyway() {
    let (fleet, manager, _) = fleet(FleetConfig { memory_budget_mb: Some(10), ..FleetConfig::default() });
    let outcome = fleet.launch(spec("huge", 500), None).await.unwrap();
    assert!(matches!(outcome, LaunchOutcome::Launched { ref evicted, .. } if evicted.is_empty()));
    assert_eq!(names(&manager).await, ["huge"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_launches_never_overshoot() {
    let (fleet, manager, _) = fleet(FleetConfig { memory_budget_mb: Some(100), ..FleetConfig::default() });
    let peak = Arc::new(Mutex::new(0u64));
    let watcher = {
        let manager = manager.clone();
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let used: u64 = manager
                    .list(&ListFilter::all())
                    .await
                    .unwrap()
                    .iter()
                    .map(|c| c.mem_reservation_mb.unwrap_or(0))
                    .sum();
                {
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(used);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let launches = (0..20).map(|i| {
        let fleet = fleet.clone();
        tokio::spawn(async move { fleet.launch(spec(&format!("c{i}"), 25), None).await })
    });
    let mut evictions = 0;
    for r in futures_util::future::join_all(launches).await {
        if let LaunchOutcome::Launched { evicted, .. } = r.unwrap().unwrap() {
            evictions += evicted.len();
        }
    }
    watcher.abort();
    let left = manager.list(&ListFilter::all()).await.unwrap();
    let used: u64 = left.iter().map(|c| c.mem_reservation_mb.unwrap_or(0)).sum();
    assert_eq!(left.len(), 4, "100 MiB holds four 25 MiB containers");
    assert_eq!(used, 100);
    assert_eq!(evictions, 16);
    assert!(*peak.lock().unwrap() <= 100, "budget overshot: peak {} MiB", peak.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_name_launches_are_idempotent() {
    let (fleet, manager, _) = fleet(FleetConfig::default());
    let runs = (0..8).map(|_| {
        let fleet = fleet.clone();
        tokio::spawn(async move { fleet.launch(spec("same", 10).env("K", "V"), Some("viewer")).await })
    });
    let outcomes: Vec<LaunchOutcome> =
        futures_util::future::join_all(runs).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    let launched = outcomes.iter().filter(|o| matches!(o, LaunchOutcome::Launched { .. })).count();
    assert_eq!(launched, 1, "one container, the rest found it");
    let ids: HashSet<&str> = outcomes.iter().map(|o| o.info().id.as_str()).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(names(&manager).await, ["same"]);
    let r = fleet.launch(spec("same", 10).env("K", "other"), Some("viewer")).await;
    assert!(matches!(r, Err(Error::Conflict { .. })), "{r:?}");
    let r = fleet.launch(spec("same", 10).env("K", "V"), Some("another-tool")).await;
    assert!(matches!(r, Err(Error::Conflict { .. })), "{r:?}");
}

#[tokio::test]
async fn limits_in_total_and_per_tool() {
    let (fleet, _, _) = fleet(FleetConfig { max_containers: Some(3), max_per_tool: Some(2), ..FleetConfig::default() });
    fleet.launch(spec("v1", 1), Some("viewer")).await.unwrap();
    fleet.launch(spec("v2", 1), Some("viewer")).await.unwrap();
    let r = fleet.launch(spec("v3", 1), Some("viewer")).await;
    assert!(matches!(r, Err(Error::LimitReached { limit: 2, .. })), "{r:?}");
    fleet.launch(spec("o1", 1), Some("other")).await.unwrap();
    let r = fleet.launch(spec("o2", 1), Some("other")).await;
    assert!(matches!(r, Err(Error::LimitReached { limit: 3, .. })), "{r:?}");
    fleet.kill("v1").await.unwrap();
    fleet.launch(spec("v3", 1), Some("viewer")).await.unwrap();
}

#[tokio::test]
async fn culling_spares_young_and_active_containers() {
    let (fleet, manager, activity) = fleet(FleetConfig::default());
    fleet.launch(spec("idle", 1), None).await.unwrap();
    fleet.launch(spec("busy", 1), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    fleet.launch(spec("young", 1), None).await.unwrap();
    activity.touch("busy", SystemTime::now());
    let removed = fleet.purge_inactive(Duration::from_millis(300)).await.unwrap();
    assert_eq!(removed, ["idle"]);
    assert_eq!(names(&manager).await, ["busy", "young"]);
}

#[tokio::test]
async fn background_culler_runs() {
    let config = FleetConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        cull_interval: Duration::from_millis(50),
        ..FleetConfig::default()
    };
    let (fleet, manager, _) = fleet(config);
    fleet.launch(spec("sleepy", 1), None).await.unwrap();
    let handle = fleet.spawn_culler().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(names(&manager).await.is_empty());
    handle.abort();
}

#[derive(Default)]
struct Recorder {
    released: Mutex<Vec<String>>,
    retained: Mutex<Option<HashSet<String>>>,
}

#[async_trait]
impl ContainerResources for Recorder {
    async fn release(&self, name: &str) -> Result<(), String> {
        self.released.lock().unwrap().push(name.to_owned());
        Ok(())
    }
    async fn retain_only(&self, live: &HashSet<String>) -> Result<(), String> {
        *self.retained.lock().unwrap() = Some(live.clone());
        Ok(())
    }
}

#[tokio::test]
async fn kill_releases_resources_and_purge_by_label() {
    let manager = Arc::new(MockManager::new());
    let resources = Arc::new(Recorder::default());
    let fleet = Fleet::new(manager.clone(), Arc::new(MemoryActivityStore::new()), FleetConfig::default())
        .with_resources(resources.clone());
    fleet.launch(spec("aa", 1).label("group", "g1"), None).await.unwrap();
    fleet.launch(spec("bb", 1).label("group", "g1"), None).await.unwrap();
    fleet.launch(spec("cc", 1).label("group", "g2"), None).await.unwrap();
    fleet.kill("cc").await.unwrap();
    let mut purged = fleet.purge_by_label("group", Some("g1")).await.unwrap();
    purged.sort();
    assert_eq!(purged, ["aa", "bb"]);
    let mut released = resources.released.lock().unwrap().clone();
    released.sort();
    assert_eq!(released, ["aa", "bb", "cc"]);
    assert!(fleet.kill("cc").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn recovery_removes_orphans() {
    let manager = Arc::new(MockManager::new());
    let resources = Arc::new(Recorder::default());
    let fleet = Fleet::new(manager.clone(), Arc::new(MemoryActivityStore::new()), FleetConfig::default())
        .with_resources(resources.clone());
    fleet.launch(spec("kept", 1), None).await.unwrap();
    let orphan = manager.engine().add_orphan_volume(manager.label_scheme(), "crashed");
    let report = fleet.recover().await.unwrap();
    assert_eq!(report.adopted, ["kept"]);
    assert_eq!(report.removed_orphan_volumes, 1);
    assert!(manager.list_volumes().await.unwrap().iter().all(|v| v.name != orphan));
    assert_eq!(resources.retained.lock().unwrap().clone().unwrap(), HashSet::from(["kept".to_owned()]));
}

mod interaction {
    //! A narrow check with a mockall manager: eviction removes exactly the
    //! two least recently used containers, once each, then launches.

    use super::*;
    use berth_manager::{
        Capabilities, ContainerInfo, ContainerState, Endpoint, EventStreamBox, LabelScheme, LogLine, LogOptions,
        LogStreamBox, NodeInfo, VolumeInfo,
    };
    use std::collections::BTreeMap;

    mockall::mock! {
        pub Manager {}
        #[async_trait]
        impl ContainerManager for Manager {
            fn label_scheme(&self) -> &LabelScheme;
            fn capabilities(&self) -> Capabilities;
            async fn launch(&self, spec: &ContainerSpec) -> berth_manager::Result<ContainerInfo>;
            async fn inspect(&self, name: &str) -> berth_manager::Result<ContainerInfo>;
            async fn list(&self, filter: &ListFilter) -> berth_manager::Result<Vec<ContainerInfo>>;
            async fn logs(&self, name: &str, options: LogOptions) -> berth_manager::Result<Vec<LogLine>>;
            async fn follow_logs(&self, name: &str, options: LogOptions) -> berth_manager::Result<LogStreamBox>;
            async fn remove(&self, name: &str) -> berth_manager::Result<()>;
            async fn endpoint(&self, name: &str) -> berth_manager::Result<Endpoint>;
            async fn events(&self) -> berth_manager::Result<EventStreamBox>;
            async fn list_volumes(&self) -> berth_manager::Result<Vec<VolumeInfo>>;
            async fn prune_volumes(&self) -> berth_manager::Result<Vec<String>>;
            async fn persistent_volumes(&self) -> berth_manager::Result<Vec<VolumeInfo>>;
            async fn remove_persistent_volume(&self, name: &str) -> berth_manager::Result<()>;
            async fn nodes(&self) -> berth_manager::Result<Vec<NodeInfo>>;
        }
    }

    fn info(name: &str, mb: u64, created_secs: u64) -> ContainerInfo {
        ContainerInfo {
            id: format!("id-{name}"),
            name: name.into(),
            image: MOCK_TOOL_IMAGE.into(),
            labels: BTreeMap::new(),
            state: ContainerState::Running,
            exit_code: None,
            created: SystemTime::UNIX_EPOCH + Duration::from_secs(created_secs),
            started: None,
            container_port: Some(80),
            mem_reservation_mb: Some(mb),
            volumes: vec![],
            persistent_volumes: vec![],
            node: None,
            message: None,
        }
    }

    #[tokio::test]
    async fn eviction_removes_exactly_the_two_oldest() {
        let mut m = MockManager::new();
        m.expect_label_scheme().return_const(LabelScheme::default());
        m.expect_inspect().returning(|name| Err(berth_manager::Error::NotFound { name: name.to_owned() }));
        m.expect_list().returning(|_| Ok(vec![info("old", 40, 100), info("older", 40, 50), info("new", 40, 200)]));
        let mut seq = mockall::Sequence::new();
        m.expect_remove().withf(|n| n == "older").times(1).in_sequence(&mut seq).returning(|_| Ok(()));
        m.expect_remove().withf(|n| n == "old").times(1).in_sequence(&mut seq).returning(|_| Ok(()));
        m.expect_launch().times(1).in_sequence(&mut seq).returning(|s| Ok(info(&s.name, s.mem_reservation_mb, 300)));
        let fleet = Fleet::new(
            Arc::new(m),
            Arc::new(MemoryActivityStore::new()),
            FleetConfig { memory_budget_mb: Some(100), ..FleetConfig::default() },
        );
        let outcome = fleet.launch(spec("fresh", 50), None).await.unwrap();
        assert!(matches!(outcome, LaunchOutcome::Launched { ref evicted, .. } if evicted == &["older", "old"]));
    }
}

mod staged {
    //! Staged launches on the mock backend with the in-memory store.

    use super::*;
    use berth_fleet::{StagedFile, Stager};
    use berth_staging::{MemoryStore, StagingService, StagingStore, StagingStoreExt, StagingUrls, TokenRegistry};
    use bytes::Bytes;

    fn staged_fleet() -> (Fleet, Arc<MemoryStore>, Arc<MockManager>) {
        let store = Arc::new(MemoryStore::new());
        let service = StagingService::new(store.clone(), TokenRegistry::new());
        let stager = Arc::new(Stager::new(service, StagingUrls::new("http://127.0.0.1:9")));
        let manager = Arc::new(MockManager::new());
        let fleet = Fleet::new(manager.clone(), Arc::new(MemoryActivityStore::new()), FleetConfig::default())
            .with_stager(stager);
        (fleet, store, manager)
    }

    fn file(name: &str, body: &'static str) -> StagedFile {
        StagedFile { name: name.into(), body: Box::pin(futures_util::stream::iter([Ok(Bytes::from(body))])) }
    }

    #[tokio::test]
    async fn repeat_is_existing_and_failure_leaves_nothing() {
        let (fleet, store, manager) = staged_fleet();
        let doc = serde_json::json!({"parameters": {"kk": 1}});
        fleet.launch_staged(spec("ss", 1), doc.clone(), vec![file("a.csv", "x,y\n")], None).await.unwrap();
        let info = manager.inspect("ss").await.unwrap();
        assert!(info.labels.contains_key(&fleet.token_label()));
        let staged: serde_json::Value = store.read_input_json("ss").await.unwrap();
        assert_eq!(staged["file_relationships"].as_array().unwrap().len(), 1);

        // The same launch again finds the container and stages nothing new.
        let again = fleet.launch_staged(spec("ss", 1), doc.clone(), vec![file("a.csv", "x,y\n")], None).await.unwrap();
        assert!(matches!(again, LaunchOutcome::Existing(_)));
        assert_eq!(store.list_files("ss").await.unwrap().len(), 1);

        // A launch that fails after staging releases what it staged.
        let mut missing = spec("gone", 1);
        missing.image = "no/such-image".into();
        let r = fleet.launch_staged(missing, doc, vec![file("b.csv", "1\n")], None).await;
        assert!(r.is_err());
        assert!(!store.containers().await.unwrap().contains(&"gone".to_owned()));

        fleet.kill("ss").await.unwrap();
        assert!(store.containers().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn without_a_stager_staged_launches_are_refused() {
        let (fleet, _, _) = super::fleet(FleetConfig::default());
        let r = fleet.launch_staged(spec("xx", 1), serde_json::json!({}), vec![], None).await;
        assert!(matches!(r, Err(Error::NoStaging)), "{r:?}");
    }
}
