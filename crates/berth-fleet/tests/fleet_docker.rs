//! Fleet behaviour against real Docker: eviction order, concurrent
//! launches under a budget, idempotent launches, culling.
//!
//! Each test's manager uses a root label of its own, so a fleet here can
//! only ever see (and evict) the containers of its own test.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use berth_fleet::{Error, Fleet, FleetConfig, LaunchOutcome, MemoryActivityStore};
use berth_manager::docker::DockerManager;
use berth_manager::{ContainerManager, ContainerSpec, LabelScheme, ListFilter};
use berth_testkit::TestRun;

struct Env {
    fleet: Arc<Fleet>,
    manager: Arc<DockerManager>,
    activity: Arc<MemoryActivityStore>,
    run: TestRun,
    image: String,
}

async fn env(test: &str, config: FleetConfig) -> Option<Env> {
    let docker = berth_testkit::docker_or_skip(test).await?;
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::test_tool_image(&docker).await.unwrap();
    let root = format!("bt{}", run.id());
    let manager =
        Arc::new(DockerManager::connect(docker.config().clone().labels(LabelScheme::new(root))).await.unwrap());
    let activity = Arc::new(MemoryActivityStore::new());
    let fleet = Arc::new(Fleet::new(manager.clone(), activity.clone(), config));
    Some(Env { fleet, manager, activity, run, image })
}

impl Env {
    fn spec(&self, suffix: &str, mb: u64) -> ContainerSpec {
        let mut spec = ContainerSpec::new(self.image.clone(), self.run.name(suffix), mb);
        spec.labels = self.run.labels();
        spec
    }

    async fn names(&self) -> Vec<String> {
        self.manager.list(&ListFilter::all()).await.unwrap().into_iter().map(|c| c.name).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_eviction_order() {
    let Some(e) =
        env("docker_eviction_order", FleetConfig { memory_budget_mb: Some(100), ..FleetConfig::default() }).await
    else {
        return;
    };
    for s in ["a", "b", "c"] {
        e.fleet.launch(e.spec(s, 30), None).await.unwrap();
        // The fleet keeps exact launch times; a small gap makes the order certain.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    e.activity.touch(&e.run.name("a"), SystemTime::now());
    let started = Instant::now();
    let LaunchOutcome::Launched { evicted, .. } = e.fleet.launch(e.spec("d", 50), None).await.unwrap() else {
        panic!("d was not launched");
    };
    eprintln!("launch with two evictions took {:?}", started.elapsed());
    assert_eq!(evicted, [e.run.name("b"), e.run.name("c")]);
    assert_eq!(e.names().await, [e.run.name("a"), e.run.name("d")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_twenty_concurrent_launches() {
    let Some(e) =
        env("docker_twenty_concurrent_launches", FleetConfig { memory_budget_mb: Some(100), ..FleetConfig::default() })
            .await
    else {
        return;
    };
    let started = Instant::now();
    let launches = (0..20).map(|i| {
        let fleet = e.fleet.clone();
        let spec = e.spec(&format!("c{i}"), 25);
        tokio::spawn(async move { fleet.launch(spec, None).await })
    });
    let mut evictions = 0;
    for r in futures_util::future::join_all(launches).await {
        match r.unwrap().unwrap() {
            LaunchOutcome::Launched { evicted, .. } => evictions += evicted.len(),
            LaunchOutcome::Existing(_) => panic!("distinct names cannot be existing"),
        }
    }
    let elapsed = started.elapsed();
    let left = e.manager.list(&ListFilter::all()).await.unwrap();
    let used: u64 = left.iter().map(|c| c.mem_reservation_mb.unwrap_or(0)).sum();
    eprintln!("20 concurrent launches into a 100 MiB budget: {elapsed:?}, {evictions} evictions, {} left", left.len());
    assert_eq!((left.len(), used, evictions), (4, 100, 16));

    // Same name, concurrently: one container.
    let runs = (0..5).map(|_| {
        let fleet = e.fleet.clone();
        let spec = e.spec("same", 10);
        tokio::spawn(async move { fleet.launch(spec, Some("viewer")).await })
    });
    let outcomes: Vec<_> =
        futures_util::future::join_all(runs).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|o| matches!(o, LaunchOutcome::Launched { .. })).count(), 1);
    let r = e.fleet.launch(e.spec("same", 10).env("X", "1"), Some("viewer")).await;
    assert!(matches!(r, Err(Error::Conflict { .. })), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_idle_culling() {
    let Some(e) = env("docker_idle_culling", FleetConfig::default()).await else { return };
    e.fleet.launch(e.spec("idle", 10), None).await.unwrap();
    e.fleet.launch(e.spec("busy", 10), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    e.activity.touch(&e.run.name("busy"), SystemTime::now());
    let removed = e.fleet.purge_inactive(Duration::from_secs(2)).await.unwrap();
    assert_eq!(removed, [e.run.name("idle")]);
    assert_eq!(e.names().await, [e.run.name("busy")]);
}

/// Makes a container of `env`'s root label with the Docker CLI and leaves
/// it `created` (never started), as a launch killed between create and
/// start does.
fn docker_create(env: &Env, name: &str) {
    let root = env.manager.config().labels.root().to_owned();
    let mut args = vec!["create".to_owned(), "--name".to_owned(), name.to_owned()];
    for (k, v) in env.run.labels() {
        args.extend(["--label".to_owned(), format!("{k}={v}")]);
    }
    for label in [format!("{root}=true"), format!("{root}.port=80"), format!("{root}.mem_reservation_mb=8")] {
        args.extend(["--label".to_owned(), label]);
    }
    args.push(env.image.clone());
    let out = std::process::Command::new("docker").args(&args).output().unwrap();
    assert!(out.status.success(), "docker create: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_half_made_containers_found_young_are_reaped_after_the_grace() {
    let grace = Duration::from_secs(3);
    let config = FleetConfig { orphan_grace: grace, ..FleetConfig::default() };
    let Some(env) = env("docker_half_made_containers_found_young_are_reaped_after_the_grace", config).await else {
        return;
    };
    let never = env.run.name("never");
    let later = env.run.name("later");
    docker_create(&env, &never);
    docker_create(&env, &later);
    env.fleet.launch(env.spec("running", 8), None).await.unwrap();

    // A restarted berth finds them younger than the grace: adopted, kept.
    let report = env.fleet.recover().await.unwrap();
    let mut young = report.young_created.clone();
    young.sort();
    let mut want = vec![never.clone(), later.clone()];
    want.sort();
    assert_eq!(young, want);
    assert!(report.removed_half_made.is_empty());
    assert!(env.fleet.reap_half_made().await.unwrap().is_empty(), "nothing is reaped inside the grace");

    // The other process's launch goes on for one of them.
    let out = std::process::Command::new("docker").args(["start", &later]).output().unwrap();
    assert!(out.status.success());
    let reaper = env.fleet.spawn_reaper();
    let deadline = Instant::now() + grace * 4;
    while env.names().await.contains(&never) {
        assert!(Instant::now() < deadline, "the half-made container was never removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reaper.abort();
    let mut left = env.names().await;
    left.sort();
    let mut want = vec![later, env.run.name("running")];
    want.sort();
    assert_eq!(left, want, "the started one and the running one stay");
    assert!(env.manager.list_volumes().await.unwrap().iter().all(|v| v.container.as_deref() != Some(&never)));
}
