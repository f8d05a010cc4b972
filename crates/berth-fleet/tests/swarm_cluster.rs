//! berth on a real multi-node Docker Swarm: three extra Docker daemons,
//! each in a network namespace this test creates (see
//! `berth_testkit::cluster`), the first the manager, the two others the
//! only nodes berth may use (`node.labels.berth==yes`).
//!
//! One test, in phases sharing the cluster (building it takes a while):
//! the whole conformance suite with every container on a remote node;
//! spreading by constraints and preferences, with traffic to the nodes'
//! namespace addresses only; the swarm scheduler's own refusals for lack
//! of memory and the fleet's eviction and retry; endpoints on an overlay
//! network, with berth's proxy running on the manager node; the fleet's
//! per-node budget; node loss.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_fleet::{Fleet, FleetConfig, LaunchOutcome, MemoryActivityStore};
use berth_manager::conformance::{self, Fixture, http_get};
use berth_manager::swarm::{SwarmConfig, SwarmEndpoints, SwarmManager};
use berth_manager::{
    Capabilities, ContainerInfo, ContainerManager, ContainerSpec, ContainerState, DEFAULT_ROOT_LABEL, Endpoint,
    EventKind, EventStreamBox, LabelScheme, ListFilter, LogLine, LogOptions, LogStreamBox, NodeInfo, VolumeInfo,
};
use berth_testkit::cluster::TestCluster;
use futures_util::StreamExt;

fn swarm_config(cluster: &TestCluster, root: &str) -> SwarmConfig {
    let mut config =
        SwarmConfig::new(cluster.manager_config().labels(LabelScheme::new(root))).constraint("node.labels.berth==yes");
    config.stop_grace = Duration::from_secs(1);
    config.poll_interval = Duration::from_millis(250);
    config.unschedulable_grace = Duration::from_secs(2);
    config
}

macro_rules! run_checks {
    ($m:expr, $fx:expr; $($check:ident),+ $(,)?) => {{
        let names: &[&str] = &[$(stringify!($check)),+];
        assert_eq!(names, conformance::ALL_CHECKS, "the cluster runs every conformance check");
        let mut failures = Vec::new();
        $(
            let started = Instant::now();
            match conformance::$check($m, $fx).await {
                Ok(()) => eprintln!("cluster conformance {} ok ({:.1?})", stringify!($check), started.elapsed()),
                Err(e) => failures.push(e.to_string()),
            }
        )+
        failures
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_node_swarm() {
    let Some(docker) = berth_testkit::docker_or_skip("swarm_cluster").await else { return };
    let image = berth_testkit::test_tool_image(&docker).await.unwrap();
    let proxy_image = berth_testkit::test_proxy_image(&docker).await.unwrap();
    let started = Instant::now();
    let Some(cluster) = TestCluster::start_or_skip("swarm_cluster", 3, &[image.clone(), proxy_image.clone()]).await
    else {
        return;
    };
    eprintln!("cluster of 3 nodes up in {:.1?}", started.elapsed());
    for (i, zone) in [(1, "a"), (2, "b")] {
        cluster.label_node(i, "berth", "yes").unwrap();
        cluster.label_node(i, "zone", zone).unwrap();
        cluster.label_node(i, "bc.mem_budget_mb", "96").unwrap();
    }
    let swarm = Arc::new(SwarmManager::connect(swarm_config(&cluster, "bc")).await.unwrap());
    let workers: Vec<String> = cluster.nodes()[1..].iter().map(|n| n.node_id.clone()).collect();
    let nodes = swarm.nodes().await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.id.clone()).collect::<std::collections::BTreeSet<_>>().len(), 2);
    assert!(nodes.iter().all(|n| workers.contains(&n.id)), "only the labelled workers are berth's: {nodes:?}");

    conformance_on_the_cluster(&swarm, &cluster, &image).await;
    spreading(&swarm, &cluster, &image).await;
    scheduler_refusals(&swarm, &cluster, &image).await;
    overlay_endpoints(&cluster, &image, &proxy_image).await;
    fleet_budgets_and_node_loss(&swarm, &cluster, &image).await;
    not_a_manager(&cluster).await;
}

/// Phase 7: a worker, and an engine whose swarm mode is inactive, are each
/// refused within seconds with a specific error.
async fn not_a_manager(cluster: &TestCluster) {
    let connect = |i: usize| {
        let mut config = SwarmConfig::new(cluster.node(i).docker_config());
        config.engine.connect_timeout = Duration::from_secs(5);
        SwarmManager::connect(config)
    };
    let started = Instant::now();
    let r = connect(1).await;
    let Err(berth_manager::Error::NotSwarmManager { reason, .. }) = &r else { panic!("a worker gave {r:?}") };
    assert!(reason.contains("worker"), "{reason}");
    cluster.leave_swarm(1).unwrap();
    let r = connect(1).await;
    let Err(berth_manager::Error::NotSwarmManager { reason, .. }) = &r else { panic!("a non-swarm engine gave {r:?}") };
    assert!(reason.contains("inactive") && reason.contains("docker swarm init"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}

/// Phase 1: every conformance check, with every container on a worker.
async fn conformance_on_the_cluster(swarm: &Arc<SwarmManager>, cluster: &TestCluster, image: &str) {
    let foreign = SwarmManager::connect(swarm_config(cluster, "bc-foreign")).await.unwrap();
    let fixture = Fixture {
        image: image.to_owned(),
        foreign: Arc::new(foreign),
        name_prefix: "cc".to_owned(),
        labels: BTreeMap::new(),
        // Containers on the nodes reach this process on the host's
        // address on the test network.
        host_from_container: cluster.host_addr().to_string(),
        ready_timeout: Duration::from_secs(60),
        program: "/berth-testtool".to_owned(),
        guard: None,
    };
    let m: &dyn ContainerManager = swarm.as_ref();
    let failures = run_checks!(m, &fixture;
        launch_inspect_remove, duplicate_name_conflict, concurrent_same_name,
        missing_is_not_found, list_filters, foreign_containers_invisible,
        logs_contain_output, follow_logs_streams, events_lifecycle,
        extra_directory_volumes, input_env, input_file, input_url,
        bad_specs_rejected, missing_image, endpoint_serves_http,
        exited_container, purge_by_label, id_prefixes_are_not_names,
        process_settings, persistent_volumes_outlive_containers, persistent_volume_owners,
        route_hints_in_labels, placement_constraints, nodes_listed, file_input_limit);
    assert!(failures.is_empty(), "conformance on the cluster failed:\n{}", failures.join("\n"));
    assert!(swarm.list(&ListFilter::all()).await.unwrap().is_empty(), "conformance left containers");
}

/// Phase 2: constraints send containers where they say, spread
/// preferences spread them, and endpoints are the nodes' own addresses.
async fn spreading(swarm: &Arc<SwarmManager>, cluster: &TestCluster, image: &str) {
    let node_of_zone = |zone: &str| cluster.node(if zone == "a" { 1 } else { 2 }).clone();
    for zone in ["a", "b"] {
        let spec =
            ContainerSpec::new(image, format!("zone-{zone}"), 16).constraint(format!("node.labels.zone=={zone}"));
        let info = swarm.launch(&spec).await.unwrap();
        let node = node_of_zone(zone);
        assert_eq!(info.node.as_deref(), Some(node.node_id.as_str()), "zone {zone}");
        let endpoint = swarm.endpoint(&spec.name).await.unwrap();
        assert_eq!(endpoint.addr.ip(), std::net::IpAddr::V4(node.addr), "published on its node's address");
        let (status, _) = http_get(endpoint.addr, "/").await.unwrap();
        assert_eq!(status, 200);
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..4 {
        let spec = ContainerSpec::new(image, format!("spread-{i}"), 16).spread("node.labels.zone");
        let info = swarm.launch(&spec).await.unwrap();
        *per_node.entry(info.node.unwrap()).or_default() += 1;
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 2], "spread over the zones: {per_node:?}");
    for c in swarm.list(&ListFilter::all()).await.unwrap() {
        swarm.remove(&c.name).await.unwrap();
    }
}

/// What one launch through a [`Recording`] manager came to.
#[derive(Debug, Clone, PartialEq)]
enum Attempt {
    /// Running on this node.
    Placed(String),
    /// `Unschedulable`: whether for lack of resources, and the scheduler's words.
    Unschedulable { insufficient_resources: bool, reason: String },
    /// Any other error.
    Failed(String),
}

/// The swarm manager, recording every launch's outcome by name: what the
/// fleet was told before it evicted and retried.
struct Recording {
    inner: Arc<SwarmManager>,
    attempts: Mutex<Vec<(String, Attempt)>>,
}

impl Recording {
    fn attempts_of(&self, name: &str) -> Vec<Attempt> {
        self.attempts.lock().unwrap().iter().filter(|(n, _)| n == name).map(|(_, a)| a.clone()).collect()
    }
}

#[async_trait]
impl ContainerManager for Recording {
    fn label_scheme(&self) -> &LabelScheme {
        self.inner.label_scheme()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn launch(&self, spec: &ContainerSpec) -> berth_manager::Result<ContainerInfo> {
        let r = self.inner.launch(spec).await;
        let attempt = match &r {
            Ok(info) => Attempt::Placed(info.node.clone().unwrap_or_default()),
            Err(berth_manager::Error::Unschedulable { insufficient_resources, reason, .. }) => {
                Attempt::Unschedulable { insufficient_resources: *insufficient_resources, reason: reason.clone() }
            }
            Err(e) => Attempt::Failed(e.to_string()),
        };
        self.attempts.lock().unwrap().push((spec.name.clone(), attempt));
        r
    }
    async fn inspect(&self, name: &str) -> berth_manager::Result<ContainerInfo> {
        self.inner.inspect(name).await
    }
    async fn list(&self, filter: &ListFilter) -> berth_manager::Result<Vec<ContainerInfo>> {
        self.inner.list(filter).await
    }
    async fn logs(&self, name: &str, options: LogOptions) -> berth_manager::Result<Vec<LogLine>> {
        self.inner.logs(name, options).await
    }
    async fn follow_logs(&self, name: &str, options: LogOptions) -> berth_manager::Result<LogStreamBox> {
        self.inner.follow_logs(name, options).await
    }
    async fn remove(&self, name: &str) -> berth_manager::Result<()> {
        self.inner.remove(name).await
    }
    async fn endpoint(&self, name: &str) -> berth_manager::Result<Endpoint> {
        self.inner.endpoint(name).await
    }
    async fn events(&self) -> berth_manager::Result<EventStreamBox> {
        self.inner.events().await
    }
    async fn list_volumes(&self) -> berth_manager::Result<Vec<VolumeInfo>> {
        self.inner.list_volumes().await
    }
    async fn prune_volumes(&self) -> berth_manager::Result<Vec<String>> {
        self.inner.prune_volumes().await
    }
    async fn persistent_volumes(&self) -> berth_manager::Result<Vec<VolumeInfo>> {
        self.inner.persistent_volumes().await
    }
    async fn remove_persistent_volume(&self, name: &str) -> berth_manager::Result<()> {
        self.inner.remove_persistent_volume(name).await
    }
    async fn nodes(&self) -> berth_manager::Result<Vec<NodeInfo>> {
        self.inner.nodes().await
    }
}

/// Phase 3: no fleet budget, so the swarm's scheduler alone places by
/// memory reservation. Each container reserves 3/5 of a node's memory (as
/// the nodes' daemons report it), so a node holds one. A launch finding
/// both nodes full is refused by the scheduler ("insufficient
/// resources"), the fleet evicts the least recently used container on a
/// node the launch may use and the retry runs there; a launch larger than
/// any node is refused and evicts nothing.
async fn scheduler_refusals(swarm: &Arc<SwarmManager>, cluster: &TestCluster, image: &str) {
    let nodes = swarm.nodes().await.unwrap();
    let memory = nodes.iter().map(|n| n.memory_mb).min().unwrap();
    let largest = nodes.iter().map(|n| n.memory_mb).max().unwrap();
    assert!(memory > 0, "the nodes report their memory: {nodes:?}");
    let big = memory * 3 / 5;
    eprintln!("nodes have {memory}..{largest} MiB; each container reserves {big} MiB");
    let recording = Arc::new(Recording { inner: swarm.clone(), attempts: Mutex::default() });
    let fleet = Fleet::new(recording.clone(), Arc::new(MemoryActivityStore::new()), FleetConfig::default());
    let launch = |name: &str, mb: u64| ContainerSpec::new(image, name, mb);

    // One per node: the scheduler puts the second where the first is not.
    let a = fleet.launch(launch("sched-a", big), None).await.unwrap().info().clone();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = fleet.launch(launch("sched-b", big), None).await.unwrap().info().clone();
    let (node_a, node_b) = (a.node.clone().unwrap(), b.node.clone().unwrap());
    assert_ne!(node_a, node_b, "two never fit on one node");
    assert_eq!(recording.attempts_of("sched-b"), [Attempt::Placed(node_b.clone())]);
    let zone_of = |node: &str| if node == cluster.node(1).node_id { "a" } else { "b" };

    // Both nodes are full. A launch that may only use sched-b's node is
    // refused by the swarm; the fleet evicts sched-b, though sched-a is
    // older (its node is not eligible), and the retry runs there.
    let started = Instant::now();
    let c = launch("sched-c", big).constraint(format!("node.labels.zone=={}", zone_of(&node_b)));
    let outcome = fleet.launch(c, None).await.unwrap();
    let LaunchOutcome::Launched { info, evicted } = outcome else { panic!("not launched") };
    eprintln!("refused, evicted {evicted:?} and relaunched in {:.1?}", started.elapsed());
    let attempts = recording.attempts_of("sched-c");
    let [Attempt::Unschedulable { insufficient_resources: true, reason }, Attempt::Placed(placed)] = &attempts[..]
    else {
        panic!("the swarm refused first, then placed it: {attempts:?}")
    };
    assert!(reason.contains("insufficient resources"), "the swarm scheduler's verdict: {reason}");
    assert_eq!(evicted, ["sched-b"]);
    assert_eq!((info.node.as_deref(), placed.as_str()), (Some(node_b.as_str()), node_b.as_str()));
    assert_eq!(info.state, ContainerState::Running);
    assert_eq!(swarm.inspect("sched-a").await.unwrap().state, ContainerState::Running, "sched-a was spared");

    // Unconstrained, the least recently used container anywhere gives way.
    let outcome = fleet.launch(launch("sched-d", big), None).await.unwrap();
    let LaunchOutcome::Launched { info, evicted } = outcome else { panic!("not launched") };
    assert_eq!(evicted, ["sched-a"]);
    assert_eq!(info.node.as_deref(), Some(node_a.as_str()));
    assert!(matches!(recording.attempts_of("sched-d")[..], [Attempt::Unschedulable { .. }, Attempt::Placed(_)]));

    // More than any node has: the swarm refuses it, and the fleet evicts
    // nothing and says why.
    let before = swarm.list(&ListFilter::all()).await.unwrap();
    let r = fleet.launch(launch("sched-huge", largest * 2), None).await;
    let Err(berth_fleet::Error::NoRoom { reason, .. }) = &r else { panic!("{r:?}") };
    assert!(reason.contains(&format!("{} MiB", largest * 2)) && reason.contains("cannot help"), "{reason}");
    let attempts = recording.attempts_of("sched-huge");
    assert!(
        matches!(&attempts[..], [Attempt::Unschedulable { insufficient_resources: true, .. }]),
        "one refusal, no retry: {attempts:?}"
    );
    let after = swarm.list(&ListFilter::all()).await.unwrap();
    let names = |l: &[ContainerInfo]| l.iter().map(|c| (c.name.clone(), c.state)).collect::<Vec<_>>();
    assert_eq!(names(&after), names(&before), "nothing evicted for a launch no node can hold");
    assert!(swarm.inspect("sched-huge").await.unwrap_err().is_not_found(), "no service left behind");

    for c in after {
        fleet.kill(&c.name).await.unwrap();
    }
    assert!(swarm.list(&ListFilter::all()).await.unwrap().is_empty());
}

/// Phase 4: endpoints on an overlay network (`SwarmEndpoints::Network`).
/// berth reaches a container there by its service name, through the
/// swarm's DNS, so it must run on the network itself: the proxy-server
/// example runs as a container on the manager node, attached to an
/// attachable overlay network and given the manager's engine socket, its
/// port published on that node's namespace address. The test sends
/// requests only to that address; the proxy reaches the container on a
/// worker by its overlay address, inside the cluster. First, `connect`
/// refuses an overlay network berth's container could not join.
async fn overlay_endpoints(cluster: &TestCluster, image: &str, proxy_image: &str) {
    let (net, closed) = ("berth-overlay", "berth-overlay-closed");
    cluster.docker(0, &format!("network create -d overlay --attachable {net}")).unwrap();
    cluster.docker(0, &format!("network create -d overlay {closed}")).unwrap();
    let on_network =
        |network: &str| swarm_config(cluster, DEFAULT_ROOT_LABEL).endpoints(SwarmEndpoints::Network).network(network);
    let r = SwarmManager::connect(on_network(closed)).await;
    let Err(berth_manager::Error::Config { reason, .. }) = &r else { panic!("a closed overlay network gave {r:?}") };
    assert!(reason.contains("not attachable") && reason.contains("--attachable"), "{reason}");
    // Published ports do not need berth on the network.
    SwarmManager::connect(swarm_config(cluster, DEFAULT_ROOT_LABEL).network(closed)).await.unwrap();
    let swarm = SwarmManager::connect(on_network(net)).await.unwrap();

    let mark = format!("overlay-{}", std::process::id());
    let spec = ContainerSpec::new(image, "overlay-tool", 16).env("MARK", &mark);
    let info = swarm.launch(&spec).await.unwrap();
    let workers: Vec<&str> = cluster.nodes()[1..].iter().map(|n| n.node_id.as_str()).collect();
    assert!(info.node.as_deref().is_some_and(|n| workers.contains(&n)), "on a worker: {info:?}");
    let ports = cluster.docker(0, "service inspect --format '{{json .Endpoint.Ports}}' overlay-tool").unwrap();
    assert_eq!(ports.trim(), "null", "nothing published on the nodes");

    let manager = cluster.node(0);
    cluster
        .docker(
            0,
            &format!(
                "run -d --name berth-proxy --network {net} -v {sock}:/var/run/docker.sock -p {addr}::8000 \
                 -e RUST_LOG=info {proxy_image} /proxy-server --listen 0.0.0.0:8000 --backend swarm --network {net}",
                sock = manager.socket.display(),
                addr = manager.addr
            ),
        )
        .unwrap();
    let published = cluster.docker(0, "port berth-proxy 8000").unwrap();
    let proxy: std::net::SocketAddr = published.lines().next().unwrap().trim().parse().unwrap();
    assert_eq!(proxy.ip(), std::net::IpAddr::V4(manager.addr), "the test talks to the node's address only");
    let started = Instant::now();
    let answer = loop {
        let r = http_get(proxy, "/docker/overlay-tool/env/MARK").await;
        if matches!(&r, Ok((200, _))) || started.elapsed() > Duration::from_secs(60) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let logs = || cluster.docker(0, "logs berth-proxy 2>&1").unwrap_or_default();
    let Ok((200, body)) = &answer else { panic!("through the proxy on the overlay: {answer:?}\n{}", logs()) };
    assert_eq!(body.trim(), mark, "the container on the worker answered");
    eprintln!("proxied over the overlay network after {:.1?}", started.elapsed());

    cluster.docker(0, "rm -f berth-proxy").unwrap();
    swarm.remove("overlay-tool").await.unwrap();
    cluster.docker(0, &format!("network rm {net} {closed}")).unwrap();
}

/// Phases 5 and 6: per-node budgets (96 MiB each), then a node stops.
async fn fleet_budgets_and_node_loss(swarm: &Arc<SwarmManager>, cluster: &TestCluster, image: &str) {
    let activity = Arc::new(MemoryActivityStore::new());
    let config = FleetConfig { node_budget_labels: true, ..FleetConfig::default() };
    let fleet = Fleet::new(swarm.clone(), activity, config);
    let mut specs = BTreeMap::new();
    for i in 0..6 {
        let spec = ContainerSpec::new(image, format!("fleet-{i}"), 32);
        fleet.launch(spec.clone(), None).await.unwrap();
        specs.insert(spec.name.clone(), spec);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let placed = swarm.list(&ListFilter::all()).await.unwrap();
    let count = |node: &str| placed.iter().filter(|c| c.node.as_deref() == Some(node)).count();
    let (n2, n3) = (cluster.node(1).node_id.clone(), cluster.node(2).node_id.clone());
    assert_eq!((count(&n2), count(&n3)), (3, 3), "96 MiB per node holds three of 32 MiB each");
    // A seventh evicts the least recently used container, and takes its node.
    let oldest = placed.iter().find(|c| c.name == "fleet-0").unwrap().node.clone().unwrap();
    let outcome = fleet.launch(ContainerSpec::new(image, "fleet-6", 32), None).await.unwrap();
    let LaunchOutcome::Launched { evicted, info } = outcome else { panic!("not launched") };
    assert_eq!(evicted, ["fleet-0"]);
    assert_eq!(info.node.as_deref(), Some(oldest.as_str()));
    specs.remove("fleet-0");

    // A restarted berth (a new manager and fleet) finds them all again,
    // from the services' labels, on both nodes.
    let restarted = Arc::new(SwarmManager::connect(swarm_config(cluster, "bc")).await.unwrap());
    let again = Fleet::new(restarted.clone(), Arc::new(MemoryActivityStore::new()), FleetConfig::default());
    let report = again.recover().await.unwrap();
    assert_eq!(report.adopted, ["fleet-1", "fleet-2", "fleet-3", "fleet-4", "fleet-5", "fleet-6"]);
    let nodes: std::collections::BTreeSet<String> =
        restarted.list(&ListFilter::all()).await.unwrap().into_iter().filter_map(|c| c.node).collect();
    assert_eq!(nodes.len(), 2, "adopted across both nodes");

    // Node loss: the third node dies with its daemon and containers.
    let victim = swarm.list(&ListFilter::all()).await.unwrap().into_iter().find(|c| c.node.as_deref() == Some(&n3));
    let victim = victim.expect("a container on the third node");
    let mut events = swarm.events().await.unwrap();
    let stopped = Instant::now();
    cluster.kill_node(2);
    let down_after = cluster.wait_node_state(2, "down", Duration::from_secs(60)).unwrap();
    eprintln!("node 3 killed; the manager saw it down after {:.1?}", stopped.elapsed().max(down_after));
    let info = swarm.inspect(&victim.name).await.unwrap();
    assert_eq!(info.state, ContainerState::Dead, "{info:?}");
    let message = info.message.clone().unwrap_or_default();
    assert!(message.contains("is down"), "a clear reason: {message:?}");
    let r = swarm.endpoint(&victim.name).await;
    assert!(matches!(r, Err(berth_manager::Error::NodeDown { .. })), "{r:?}");
    let r = swarm.logs(&victim.name, Default::default()).await;
    assert!(matches!(r, Err(berth_manager::Error::NodeDown { .. })), "{r:?}");
    let died = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = events.next().await {
            if let Ok(ev) = ev
                && ev.name == victim.name
                && ev.kind == EventKind::Died
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(died, Ok(true), "the event stream reports the lost container died");

    // The same launch again goes to the node that is up (evicting there).
    let spec = specs[&victim.name].clone();
    let outcome = fleet.launch(spec, None).await.unwrap();
    let LaunchOutcome::Launched { info, evicted } = outcome else { panic!("not relaunched") };
    assert_eq!(info.node.as_deref(), Some(n2.as_str()));
    assert_eq!(info.state, ContainerState::Running);
    assert_eq!(evicted.len(), 1, "the up node was full: {evicted:?}");
    let endpoint = swarm.endpoint(&info.name).await.unwrap();
    assert_eq!(http_get(endpoint.addr, "/").await.unwrap().0, 200);

    // Everything goes, the lost node's containers too; nothing stays registered.
    for c in swarm.list(&ListFilter::all()).await.unwrap() {
        fleet.kill(&c.name).await.unwrap();
    }
    assert!(swarm.list(&ListFilter::all()).await.unwrap().is_empty());
}
