//! Bad swarm set-ups fail with a specific error within seconds (no engine
//! needed): an unreachable manager, a missing socket. (A swarm that is not
//! initialised and a worker instead of a manager are checked on the
//! multi-node test swarm, `berth-fleet/tests/swarm_cluster.rs`; a
//! constraint no node meets by the conformance check
//! `placement_constraints`.)

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::time::{Duration, Instant};

use berth_manager::Error;
use berth_manager::docker::{DockerConfig, EngineHost};
use berth_manager::swarm::{SwarmConfig, SwarmManager};

#[tokio::test]
async fn an_unreachable_manager_is_engine_unavailable_within_seconds() {
    let hosts = [
        EngineHost::Unix { path: "/nonexistent/berth-swarm.sock".into() },
        EngineHost::Tcp { host: "127.0.0.1".into(), port: 1, tls: None },
    ];
    for host in hosts {
        let mut engine = DockerConfig::new(host.clone());
        engine.connect_timeout = Duration::from_secs(2);
        let started = Instant::now();
        let r = SwarmManager::connect(SwarmConfig::new(engine)).await;
        assert!(matches!(r, Err(Error::EngineUnavailable { .. })), "{host:?}: {r:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{host:?} took {:?}", started.elapsed());
    }
}
