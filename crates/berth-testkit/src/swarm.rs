//! A single-node swarm on the test engine, shared by every test process
//! that needs one, and left again by the last of them when this kit made it.
//!
//! Swarm mode is global to the engine, which other people's tests use too.
//! So the kit initialises a swarm only when the engine's swarm mode is
//! inactive (`docker swarm init --advertise-addr 127.0.0.1 --listen-addr
//! 127.0.0.1:2377`), records that it did in [`STATE_DIR`], and registers
//! each test process using it. A watcher process per test process (started
//! with `setsid`, so it outlives a test killed by Ctrl-C) waits for that
//! process to end; the last one out leaves the swarm (`docker swarm leave
//! --force`) and removes the `docker_gwbridge` network the swarm made. A
//! swarm the kit did not make is used as it is and never left. Every
//! step runs under `flock` on one lock file, so concurrent test processes
//! agree. It needs the `docker` CLI and util-linux (`flock`, `setsid`).

use berth_manager::docker::DockerManager;
use berth_manager::swarm::{SwarmConfig, SwarmManager};

use crate::{ENV_REQUIRE_DOCKER, docker_or_skip, docker_required};

/// Where the kit keeps the swarm's bookkeeping: `created` (present while a
/// swarm the kit made is active) and `users/<pid>`.
pub const STATE_DIR: &str = "/tmp/berth-test-swarm";

/// The lock file serializing swarm set-up and tear-down.
pub const LOCK_FILE: &str = "/tmp/berth-test-swarm.lock";

static SESSION: tokio::sync::OnceCell<Result<(), String>> = tokio::sync::OnceCell::const_new();

/// The swarm settings tests use: endpoints through host-mode ports
/// published on the task's node (here `127.0.0.1`), quick stop grace.
pub fn swarm_config(docker: &DockerManager) -> SwarmConfig {
    let mut config = SwarmConfig::new(docker.config().clone());
    config.stop_grace = std::time::Duration::from_secs(1);
    config.poll_interval = std::time::Duration::from_millis(250);
    config
}

/// Connects to a swarm manager on the test engine for test `test`,
/// initialising a single-node swarm first when swarm mode is inactive
/// (see the module docs), or returns `None` after printing why the test is
/// skipped.
///
/// # Panics
///
/// When there is no engine, or no swarm can be had, and
/// [`docker_required`] is true.
pub async fn swarm_or_skip(test: &str) -> Option<SwarmManager> {
    let docker = docker_or_skip(test).await?;
    let session = SESSION.get_or_init(|| async { join_session().await }).await;
    let result = match session {
        Ok(()) => SwarmManager::connect(swarm_config(&docker)).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    match result {
        Ok(m) => Some(m),
        Err(e) if docker_required() => panic!("{ENV_REQUIRE_DOCKER} is set but no swarm is available for {test}: {e}"),
        Err(e) => {
            eprintln!("SKIPPED {test}: no swarm ({e}); set {ENV_REQUIRE_DOCKER}=1 to make this a failure");
            None
        }
    }
}

/// Registers this process as a user of the engine's swarm, making one if
/// swarm mode is inactive, and starts the watcher that leaves it again.
async fn join_session() -> Result<(), String> {
    let pid = std::process::id();
    let join = format!(
        r#"set -e
mkdir -p {STATE_DIR}/users
state=$(docker info --format '{{{{.Swarm.LocalNodeState}}}}')
if [ "$state" = inactive ]; then
    if [ -n "$(docker network ls -q --filter name='^docker_gwbridge$')" ]; then gw=kept; else gw=made; fi
    docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 >/dev/null
    echo "$gw" > {STATE_DIR}/created
elif [ "$state" != active ]; then
    echo "the engine's swarm mode is $state" >&2
    exit 3
fi
touch {STATE_DIR}/users/{pid}"#
    );
    run_locked(&join).await?;
    // The watcher: once this process has ended, deregister it; the last
    // user of a swarm the kit made leaves it.
    let leave = format!(
        r#"while kill -0 {pid} 2>/dev/null; do sleep 1; done
flock {LOCK_FILE} sh -c '
rm -f {STATE_DIR}/users/{pid}
for f in {STATE_DIR}/users/*; do
    [ -e "$f" ] || continue
    kill -0 "$(basename "$f")" 2>/dev/null || rm -f "$f"
done
if [ -f {STATE_DIR}/created ] && [ -z "$(ls -A {STATE_DIR}/users)" ]; then
    docker swarm leave --force >/dev/null 2>&1 || true
    if [ "$(cat {STATE_DIR}/created)" = made ]; then docker network rm docker_gwbridge >/dev/null 2>&1 || true; fi
    rm -f {STATE_DIR}/created
fi'"#
    );
    std::process::Command::new("setsid")
        .args(["sh", "-c", &leave])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the swarm watcher (setsid): {e}"))?;
    Ok(())
}

async fn run_locked(script: &str) -> Result<(), String> {
    let out = tokio::process::Command::new("flock")
        .args([LOCK_FILE, "sh", "-c", script])
        .output()
        .await
        .map_err(|e| format!("cannot run flock (util-linux): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("setting up the swarm failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Removes the services and configs of test run `run` when the engine is
/// a swarm manager (nothing to do otherwise); part of
/// [`TestRun`](crate::TestRun)'s clean-up.
pub(crate) async fn sweep_run(docker: &DockerManager, run: &str) {
    let Ok(swarm) = SwarmManager::connect(swarm_config(docker)).await else { return };
    match swarm.sweep_label(crate::RUN_LABEL, run).await {
        Ok(c) if c.services + c.configs > 0 => {
            tracing::debug!(run, services = c.services, configs = c.configs, "swarm objects of a test run removed");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(run, error = %e, "sweeping the run's swarm objects failed"),
    }
}

/// The test-run label values on swarm services and configs (empty when the
/// engine is no swarm manager).
pub(crate) async fn run_values(docker: &DockerManager) -> std::collections::BTreeSet<String> {
    match SwarmManager::connect(swarm_config(docker)).await {
        Ok(swarm) => swarm.label_values(crate::RUN_LABEL).await.unwrap_or_default(),
        Err(_) => Default::default(),
    }
}
