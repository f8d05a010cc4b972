//! The conformance suite against `SwarmManager` on a single-node swarm on
//! the local engine (made for the tests when swarm mode is inactive, and
//! left again afterwards; see `berth_testkit::swarm`), with the
//! `berth-testtool` image built from this workspace.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::sync::Arc;
use std::time::Duration;

use berth_manager::conformance::Fixture;
use berth_manager::swarm::SwarmManager;
use berth_manager::{ContainerManager, LabelScheme};
use berth_testkit::TestRun;

async fn setup() -> Option<(Arc<dyn ContainerManager>, Fixture)> {
    let swarm = berth_testkit::swarm::swarm_or_skip("conformance_swarm").await?;
    let run = TestRun::start(swarm.engine()).await;
    let image = berth_testkit::test_tool_image(swarm.engine()).await.expect("the test tool image builds and imports");
    let mut foreign_config = berth_testkit::swarm::swarm_config(swarm.engine());
    foreign_config.engine = foreign_config.engine.labels(LabelScheme::new("berth-foreign"));
    let foreign = SwarmManager::connect(foreign_config).await.expect("second client connects");
    let fixture = Fixture {
        image,
        foreign: Arc::new(foreign),
        name_prefix: run.name("s"),
        labels: run.labels(),
        host_from_container: "host.docker.internal".to_owned(),
        ready_timeout: Duration::from_secs(30),
        program: "/berth-testtool".to_owned(),
        guard: Some(Box::new(run)),
    };
    Some((Arc::new(swarm), fixture))
}

berth_manager::conformance_tests!(setup);
