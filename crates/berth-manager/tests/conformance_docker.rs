//! The conformance suite against `DockerManager` on the local engine,
//! with the `berth-testtool` image built from this workspace.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::sync::Arc;
use std::time::Duration;

use berth_manager::conformance::Fixture;
use berth_manager::docker::DockerManager;
use berth_manager::{ContainerManager, LabelScheme};
use berth_testkit::TestRun;

async fn setup() -> Option<(Arc<dyn ContainerManager>, Fixture)> {
    let docker = berth_testkit::docker_or_skip("conformance_docker").await?;
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::test_tool_image(&docker).await.expect("the test tool image builds and imports");
    let foreign_config = docker.config().clone().labels(LabelScheme::new("berth-foreign"));
    let foreign = DockerManager::connect(foreign_config).await.expect("second client connects");
    let fixture = Fixture {
        image,
        foreign: Arc::new(foreign),
        name_prefix: run.name("c"),
        labels: run.labels(),
        host_from_container: "host.docker.internal".to_owned(),
        ready_timeout: Duration::from_secs(30),
        program: "/berth-testtool".to_owned(),
        guard: Some(Box::new(run)),
    };
    Some((Arc::new(docker), fixture))
}

berth_manager::conformance_tests!(setup);
