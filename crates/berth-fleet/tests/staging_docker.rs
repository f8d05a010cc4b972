//! Staged input end to end with real containers: the tool fetches its
//! `INPUT_JSON_URL` and a staged data file from inside the container
//! (through the engine's host-gateway mapping), and once the container is
//! removed the URLs answer 404 and nothing staged is left on disk.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_fleet::{Fleet, FleetConfig, MemoryActivityStore, StagedFile, Stager};
use berth_manager::conformance::http_get;
use berth_manager::docker::DockerManager;
use berth_manager::{ContainerManager, ContainerSpec, LabelScheme};
use berth_staging::{LocalDirStore, StagingService, StagingUrls, TokenRegistry};
use berth_testkit::TestRun;
use bytes::Bytes;

/// Serves the staging service on all interfaces (containers reach the host
/// through its bridge gateway); returns the port.
async fn serve_staging(service: StagingService) -> u16 {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let service = service.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let service = service.clone();
                    async move { Ok::<_, std::convert::Infallible>(service.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

async fn get_ready(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match http_get(addr, path).await {
            Ok(r) if r.0 != 503 => return r,
            other if Instant::now() > deadline => panic!("{path}: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_input_and_files_reach_the_container_and_die_with_it() {
    let Some(docker) =
        berth_testkit::docker_or_skip("staged_input_and_files_reach_the_container_and_die_with_it").await
    else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::test_tool_image(&docker).await.unwrap();
    let manager = Arc::new(
        DockerManager::connect(docker.config().clone().labels(LabelScheme::new(format!("bs{}", run.id()))))
            .await
            .unwrap(),
    );

    let dir = std::env::temp_dir().join(format!("berth-staging-{}", run.id()));
    let store = Arc::new(LocalDirStore::open(&dir).await.unwrap());
    let service = StagingService::new(store, TokenRegistry::new());
    let port = serve_staging(service.clone()).await;
    let stager = Arc::new(Stager::new(service, StagingUrls::host_gateway(port)));
    let fleet = Fleet::new(manager.clone(), Arc::new(MemoryActivityStore::new()), FleetConfig::default())
        .with_stager(stager.clone());

    let name = run.name("staged");
    let mut spec = ContainerSpec::new(image, &name, 16);
    spec.labels = run.labels();
    let csv = "gene,score\nBRCA1,0.9\nTP53,0.7\n";
    let document = serde_json::json!({"parameters": {"palette": "viridis"}, "file_relationships": []});
    let file = StagedFile {
        name: "scores.csv".into(),
        body: Box::pin(futures_util::stream::iter([Ok::<_, berth_staging::BoxError>(Bytes::from(csv))])),
    };
    fleet.launch_staged(spec, document, vec![file], Some("csv-viewer")).await.unwrap();

    let endpoint = manager.endpoint(&name).await.unwrap();
    // The tool fetched INPUT_JSON_URL itself.
    let (status, body) = get_ready(endpoint.addr, "/input").await;
    assert_eq!(status, 200, "{body}");
    let input: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(input["parameters"]["palette"], "viridis");
    let file_url = input["file_relationships"][0].as_str().unwrap().to_owned();
    assert!(file_url.starts_with(&format!("http://host.docker.internal:{port}/_berth/staged/")), "{file_url}");
    assert!(file_url.ends_with("/files/scores.csv"));
    // ... and the data file, from inside the container.
    let (status, fetched) = get_ready(endpoint.addr, &format!("/fetch?url={}", percent(&file_url))).await;
    assert_eq!((status, fetched.as_str()), (200, csv));
    let input_url = manager.inspect(&name).await.unwrap();
    let token = input_url.labels[&fleet.token_label()].clone();
    assert_eq!(token.len(), 64, "256-bit token");

    // Removal: URLs answer 404, nothing left on disk.
    fleet.kill(&name).await.unwrap();
    let local = |url: &str| url.replace("host.docker.internal", "127.0.0.1");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let path_of = |url: &str| url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
    let (status, _) = http_get(addr, &path_of(&local(&file_url))).await.unwrap();
    assert_eq!(status, 404);
    let (status, _) = http_get(addr, &format!("/_berth/staged/{token}/input.json")).await.unwrap();
    assert_eq!(status, 404);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".tmp")
        .collect();
    assert!(leftovers.is_empty(), "staged files survived their container: {leftovers:?}");
    let tmp_left = std::fs::read_dir(dir.join(".tmp")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(tmp_left, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
