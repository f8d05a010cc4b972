//! [`TestCluster`]: a real multi-node Docker Swarm made of extra Docker
//! daemons, each in a network namespace of its own, for tests.
//!
//! Layout, all made by the test and removed by it (on drop, and by the
//! next cluster's start-up if a test process died before):
//!
//! - a "switch" network namespace holding a bridge, and one network
//!   namespace per node joined to it by a veth pair; the host joins it by
//!   one more veth pair and owns `192.168.<x>.1/24`, node *k* owns
//!   `192.168.<x>.<10+k>`. (The bridge lives in a namespace of its own
//!   because the host's `FORWARD` policy, set by its Docker engine to
//!   `DROP`, would otherwise filter bridged traffic between the nodes.)
//! - per node, a `dockerd` with its own `--data-root`, `--exec-root`,
//!   `--pidfile`, socket, config file (storage driver `vfs`) and cgroup
//!   parent, started with `nsenter --net` (not `ip netns exec`, whose
//!   fresh `/sys` mount hides the cgroup hierarchies dockerd needs) and
//!   `unshare --uts --pid --mount --fork --kill-child`: its own host name,
//!   and a PID namespace of its own, so that killing the `unshare` process
//!   kills the daemon, its containerd, shims and containers at once (a
//!   node losing power), and its mounts vanish with its mount namespace;
//! - a swarm: node 1 is the manager (advertising its namespace address,
//!   heartbeat 1 s so a lost node is noticed within seconds), the others
//!   join as workers; the test images are copied to every node with
//!   `docker save` / `docker load`.
//!
//! Everything lives under `/tmp/berth-cluster-<id>/`. Tests send traffic
//! only to the nodes' namespace addresses. It needs root, `ip`,
//! `nsenter`, `unshare`, `dockerd` and the `docker` CLI; without them
//! [`TestCluster::start_or_skip`] says the test is skipped, or fails under
//! [`ENV_REQUIRE_CLUSTER`].

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use berth_manager::docker::{DockerConfig, EngineHost};

/// Environment variable that turns "cannot build a test cluster here" into
/// a test failure (CI sets it).
pub const ENV_REQUIRE_CLUSTER: &str = "BERTH_REQUIRE_CLUSTER";

/// Directory prefix of clusters' state (`/tmp/berth-cluster-<id>`).
pub const STATE_PREFIX: &str = "/tmp/berth-cluster-";

static COUNTER: AtomicU32 = AtomicU32::new(0);
/// One cluster at a time per process: they are heavy, and the subnet
/// choice is not atomic.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// True when [`ENV_REQUIRE_CLUSTER`] is set to anything but empty or `0`.
pub fn cluster_required() -> bool {
    std::env::var(ENV_REQUIRE_CLUSTER).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// One node of a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// Its host name (`berth-<id>-n<k>`), as the swarm shows it.
    pub hostname: String,
    /// Its network namespace.
    pub netns: String,
    /// Its address on the test network.
    pub addr: Ipv4Addr,
    /// Its engine's socket.
    pub socket: PathBuf,
    /// Its swarm node id.
    pub node_id: String,
    dir: PathBuf,
}

/// The `unshare` processes holding the nodes' daemons, by node index.
#[derive(Debug, Default)]
struct Daemons(std::sync::Mutex<Vec<Option<std::process::Child>>>);

impl ClusterNode {
    /// Settings reaching this node's engine.
    pub fn docker_config(&self) -> DockerConfig {
        DockerConfig::new(EngineHost::Unix { path: self.socket.clone() })
    }

    fn docker(&self) -> String {
        format!("docker -H unix://{}", self.socket.display())
    }
}

/// A multi-node swarm of extra Docker daemons in network namespaces (see
/// the module docs). Dropping it stops the daemons and removes the
/// namespaces, links, mounts, cgroups and files it made.
#[derive(Debug)]
pub struct TestCluster {
    id: String,
    dir: PathBuf,
    subnet: u8,
    nodes: Vec<ClusterNode>,
    daemons: Daemons,
    _exclusive: Option<tokio::sync::MutexGuard<'static, ()>>,
}

/// What went wrong building a cluster, in words (the exact command and its
/// output).
pub type ClusterError = String;

impl TestCluster {
    /// Builds a cluster of `nodes` nodes (the first is the manager) with
    /// `images` (references on the test engine) loaded on every node, or
    /// returns `None` after printing why the test is skipped.
    ///
    /// # Panics
    ///
    /// When the cluster cannot be built and [`cluster_required`] is true;
    /// the message says exactly which step failed and how.
    pub async fn start_or_skip(test: &str, nodes: usize, images: &[String]) -> Option<TestCluster> {
        crate::init_tracing();
        if let Err(missing) = preconditions() {
            if cluster_required() {
                panic!("{ENV_REQUIRE_CLUSTER} is set but {test} cannot build a test cluster: {missing}");
            }
            eprintln!(
                "SKIPPED {test}: cannot build a test cluster here ({missing}); set {ENV_REQUIRE_CLUSTER}=1 to make this a failure"
            );
            return None;
        }
        let guard = ONE_AT_A_TIME.lock().await;
        let images = images.to_vec();
        let built = tokio::task::spawn_blocking(move || TestCluster::build(nodes, &images)).await;
        match built {
            Ok(Ok(mut cluster)) => {
                cluster._exclusive = Some(guard);
                Some(cluster)
            }
            Ok(Err(e)) if cluster_required() => panic!("{test}: building the test cluster failed: {e}"),
            Ok(Err(e)) => {
                eprintln!("SKIPPED {test}: building the test cluster failed: {e}");
                None
            }
            Err(e) => panic!("{test}: the cluster builder panicked: {e}"),
        }
    }

    /// The nodes, manager first.
    pub fn nodes(&self) -> &[ClusterNode] {
        &self.nodes
    }

    /// Node `i` (0 is the manager).
    ///
    /// # Panics
    ///
    /// When there is no such node.
    pub fn node(&self, i: usize) -> &ClusterNode {
        &self.nodes[i]
    }

    /// Settings reaching the manager's engine.
    pub fn manager_config(&self) -> DockerConfig {
        self.nodes[0].docker_config()
    }

    /// The host's address on the test network (where the nodes reach this
    /// process).
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, self.subnet, 1)
    }

    /// Sets node label `key=value` on node `i` (through the manager).
    ///
    /// # Errors
    ///
    /// The CLI's complaint.
    pub fn label_node(&self, i: usize, key: &str, value: &str) -> Result<(), ClusterError> {
        let node = &self.nodes[i];
        sh(&format!("{} node update --label-add {key}={value} {}", self.nodes[0].docker(), node.node_id)).map(|_| ())
    }

    /// Kills node `i`: its daemon and everything it ran die at once, as
    /// when a host loses power; the managers see the node down within
    /// seconds (heartbeat 1 s).
    pub fn kill_node(&self, i: usize) {
        let mut daemons = self.daemons.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(Some(mut child)) = daemons.get_mut(i).map(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs the Docker CLI against node `i`'s engine (`docker -H <its
    /// socket> <args>`, `args` as a shell would split them); its stdout.
    ///
    /// # Errors
    ///
    /// The CLI's complaint.
    pub fn docker(&self, i: usize, args: &str) -> Result<String, ClusterError> {
        sh(&format!("{} {args}", self.nodes[i].docker()))
    }

    /// Makes node `i` leave the swarm (`docker swarm leave --force`): its
    /// engine is then one whose swarm mode is inactive.
    ///
    /// # Errors
    ///
    /// The CLI's complaint.
    pub fn leave_swarm(&self, i: usize) -> Result<(), ClusterError> {
        sh(&format!("{} swarm leave --force", self.nodes[i].docker())).map(|_| ())
    }

    /// Waits until the manager reports node `i` in `state` (`ready`, `down`).
    ///
    /// # Errors
    ///
    /// After `timeout` without it.
    pub fn wait_node_state(&self, i: usize, state: &str, timeout: Duration) -> Result<Duration, ClusterError> {
        let started = Instant::now();
        loop {
            let got = sh(&format!(
                "{} node inspect --format '{{{{.Status.State}}}}' {}",
                self.nodes[0].docker(),
                self.nodes[i].node_id
            ))
            .unwrap_or_default();
            if got.trim() == state {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "node {} is {:?}, not {state}, after {timeout:?}",
                    self.nodes[i].hostname,
                    got.trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn build(n: usize, images: &[String]) -> Result<TestCluster, ClusterError> {
        sweep_dead_clusters();
        let id = format!("{}{}", std::process::id() % 100_000, COUNTER.fetch_add(1, Ordering::Relaxed));
        let dir = PathBuf::from(format!("{STATE_PREFIX}{id}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        std::fs::write(dir.join("owner.pid"), std::process::id().to_string())
            .map_err(|e| format!("writing owner.pid: {e}"))?;
        let subnet = free_subnet()?;
        let mut cluster = TestCluster {
            id: id.clone(),
            dir: dir.clone(),
            subnet,
            nodes: Vec::new(),
            daemons: Daemons::default(),
            _exclusive: None,
        };
        // From here on, Drop cleans up whatever was made.
        cluster.build_network(n)?;
        for k in 1..=n {
            cluster.start_daemon(k)?;
        }
        for node in &cluster.nodes {
            wait_socket(node)?;
        }
        if !images.is_empty() {
            let tar = dir.join("images.tar");
            sh(&format!("docker save -o {} {}", tar.display(), images.join(" ")))?;
            for node in &cluster.nodes {
                sh(&format!("{} load -q -i {}", node.docker(), tar.display()))?;
            }
            let _ = std::fs::remove_file(&tar);
        }
        cluster.form_swarm()?;
        Ok(cluster)
    }

    fn netns_name(&self, suffix: &str) -> String {
        format!("berth-{}-{suffix}", self.id)
    }

    fn build_network(&mut self, n: usize) -> Result<(), ClusterError> {
        let sw = self.netns_name("sw");
        let x = self.subnet;
        let host_link = format!("bh{}", self.id);
        record(&self.dir, "netns", &sw);
        sh(&format!("ip netns add {sw}"))?;
        sh(&format!("ip -n {sw} link set lo up && ip -n {sw} link add br0 type bridge && ip -n {sw} link set br0 up"))?;
        record(&self.dir, "links", &host_link);
        sh(&format!("ip link add {host_link} type veth peer name host netns {sw}"))?;
        sh(&format!(
            "ip addr add 192.168.{x}.1/24 dev {host_link} && ip link set {host_link} up && ip -n {sw} link set host master br0 up"
        ))?;
        for k in 1..=n {
            let ns = self.netns_name(&format!("n{k}"));
            let addr = Ipv4Addr::new(192, 168, x, 10 + k as u8);
            record(&self.dir, "netns", &ns);
            sh(&format!("ip netns add {ns}"))?;
            sh(&format!("ip link add b{}n{k} netns {sw} type veth peer name eth0 netns {ns}", self.id))?;
            sh(&format!("ip -n {sw} link set b{}n{k} master br0 up", self.id))?;
            sh(&format!(
                "ip -n {ns} link set lo up && ip -n {ns} addr add {addr}/24 dev eth0 && ip -n {ns} link set eth0 up"
            ))?;
            let node_dir = self.dir.join(format!("n{k}"));
            std::fs::create_dir_all(&node_dir).map_err(|e| format!("creating {}: {e}", node_dir.display()))?;
            self.nodes.push(ClusterNode {
                hostname: ns.clone(),
                netns: ns,
                addr,
                socket: node_dir.join("docker.sock"),
                node_id: String::new(),
                dir: node_dir,
            });
        }
        Ok(())
    }

    fn start_daemon(&self, k: usize) -> Result<(), ClusterError> {
        let node = &self.nodes[k - 1];
        let d = &node.dir;
        let config = d.join("daemon.json");
        std::fs::write(&config, r#"{"storage-driver": "vfs", "log-driver": "json-file", "iptables": true}"#)
            .map_err(|e| format!("writing {}: {e}", config.display()))?;
        let log = std::fs::File::create(d.join("dockerd.log")).map_err(|e| format!("creating dockerd.log: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("dockerd.log: {e}"))?;
        let script = format!(
            "hostname {host} && exec dockerd --data-root {d}/data --exec-root {d}/exec --pidfile {d}/docker.pid \
             -H unix://{d}/docker.sock --config-file {config} --cgroup-parent /{host}",
            host = node.hostname,
            d = d.display(),
            config = config.display()
        );
        let child = Command::new("setsid")
            .args([
                "nsenter",
                &format!("--net=/run/netns/{}", node.netns),
                "unshare",
                "--uts",
                "--pid",
                "--mount",
                "--mount-proc",
                "--fork",
                "--kill-child=SIGKILL",
                "sh",
                "-c",
                &script,
            ])
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting dockerd for {}: {e}", node.hostname))?;
        // setsid and nsenter exec: this pid is unshare's.
        record(&self.dir, "pids", &child.id().to_string());
        self.daemons.0.lock().unwrap_or_else(|p| p.into_inner()).push(Some(child));
        Ok(())
    }

    fn form_swarm(&mut self) -> Result<(), ClusterError> {
        let manager = self.nodes[0].clone();
        sh(&format!(
            "{} swarm init --advertise-addr {a} --listen-addr {a}:2377 --dispatcher-heartbeat 1s",
            manager.docker(),
            a = manager.addr
        ))?;
        let token = sh(&format!("{} swarm join-token -q worker", manager.docker()))?;
        for node in &self.nodes[1..] {
            sh(&format!(
                "{} swarm join --token {} --advertise-addr {a} --listen-addr {a}:2377 {}:2377",
                node.docker(),
                token.trim(),
                manager.addr,
                a = node.addr
            ))?;
        }
        for node in &mut self.nodes {
            node.node_id = sh(&format!("{} info --format '{{{{.Swarm.NodeID}}}}'", node.docker()))?.trim().to_owned();
        }
        for i in 0..self.nodes.len() {
            self.wait_node_state(i, "ready", Duration::from_secs(60))?;
        }
        Ok(())
    }

    /// Kills every node and removes everything the cluster made.
    fn teardown(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
        remove_state(&self.dir);
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Root, and the commands the cluster needs.
fn preconditions() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    if uid != Some("0") {
        return Err("not running as root (network namespaces and extra daemons need it)".to_owned());
    }
    for cmd in ["ip", "nsenter", "unshare", "setsid", "dockerd", "docker"] {
        let found =
            std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file())).unwrap_or(false);
        if !found {
            return Err(format!("command {cmd:?} is not installed"));
        }
    }
    Ok(())
}

/// Runs `cmd` with `sh -c`; its stdout, or the command and its output.
fn sh(cmd: &str) -> Result<String, ClusterError> {
    let out = Command::new("sh").args(["-c", cmd]).output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// Appends `item` to the list `kind` in the cluster's directory, so a
/// later sweep knows what to remove.
fn record(dir: &Path, kind: &str, item: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(kind)) {
        let _ = writeln!(f, "{item}");
    }
}

/// A `192.168.x.0/24` no interface of the host uses.
fn free_subnet() -> Result<u8, ClusterError> {
    let routes = sh("ip -4 route show")?;
    (200..=250u8)
        .find(|x| !routes.contains(&format!("192.168.{x}.")))
        .ok_or_else(|| "no free 192.168.200-250.0/24 subnet for the test network".to_owned())
}

fn wait_socket(node: &ClusterNode) -> Result<(), ClusterError> {
    let started = Instant::now();
    loop {
        if sh(&format!("{} version --format '{{{{.Server.Version}}}}'", node.docker())).is_ok() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(node.dir.join("dockerd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().filter(|l| !l.contains("module=grpc")).rev().take(15).collect();
            return Err(format!(
                "dockerd of {} did not answer within 60 s; its log ends:\n{}",
                node.hostname,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes what a cluster with state in `dir` made: processes started
/// from its directory (daemons, their containerd and shims, by pid),
/// mounts under it, its network namespaces and links, its cgroups and the
/// directory itself.
fn remove_state(dir: &Path) {
    // With the trailing slash, so cluster 12 never matches cluster 123.
    let marker = format!("{}/", dir.to_string_lossy());
    // The nodes' unshare processes (killing one kills its PID namespace),
    // then anything else still running from this directory, by pid.
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
    for pid in pids.lines().filter_map(|p| p.trim().parse::<u32>().ok()) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("unshare") {
            let _ = sh(&format!("kill -KILL {pid}"));
        }
    }
    for _ in 0..2 {
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                if pid != std::process::id() && String::from_utf8_lossy(&cmdline).contains(&marker) {
                    let _ = sh(&format!("kill -KILL {pid}"));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // Mounts under the directory, deepest first.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> =
        mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|m| m.starts_with(&marker)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = sh(&format!("umount -l '{p}'"));
    }
    let read_list = |kind: &str| -> Vec<String> {
        std::fs::read_to_string(dir.join(kind)).unwrap_or_default().lines().map(str::to_owned).collect()
    };
    for link in read_list("links") {
        let _ = sh(&format!("ip link del {link} 2>/dev/null"));
    }
    for ns in read_list("netns") {
        let _ = sh(&format!("ip netns del {ns} 2>/dev/null"));
        // The daemons' cgroup parents are named after their namespaces.
        let _ = sh(&format!(
            "for d in /sys/fs/cgroup/*/{ns}; do [ -d \"$d\" ] && find \"$d\" -depth -type d -exec rmdir {{}} \\; ; done 2>/dev/null; true"
        ));
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the test cluster's directory");
    }
}

/// Removes clusters whose owning test process is gone.
fn sweep_dead_clusters() {
    let Ok(entries) = std::fs::read_dir("/tmp") else { return };
    for e in entries.flatten() {
        let path = e.path();
        if !path.to_string_lossy().starts_with(STATE_PREFIX) {
            continue;
        }
        let owner = std::fs::read_to_string(path.join("owner.pid")).ok().and_then(|p| p.trim().parse::<u32>().ok());
        if owner.is_none_or(|p| !pid_alive(p)) {
            tracing::info!(dir = %path.display(), "removing a test cluster left by a dead test process");
            remove_state(&path);
        }
    }
}
