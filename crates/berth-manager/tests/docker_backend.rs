//! Docker-backend behaviour beyond the shared contract: endpoint failure
//! modes of containers other tools created, adoption of containers started
//! by `django_docker_engine`, resource settings, launch clean-up, and an
//! unreachable engine failing fast.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_manager::docker::{
    BRIDGE_ICC_OPTION, ContainerNetwork, DockerConfig, DockerManager, EndpointMode, EngineHost,
};
use berth_manager::{ContainerManager, ContainerSpec, DJANGO_DOCKER_ENGINE_ROOT_LABEL, Error, LabelScheme, ListFilter};
use berth_testkit::{RUN_LABEL, TestRun};

/// Runs the Docker CLI, as another tool sharing the engine would.
fn docker_cli(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker CLI runs");
    assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Creates (and optionally starts) a container with the CLI, labelled for
/// the run's clean-up.
fn cli_container(run: &TestRun, image: &str, name: &str, extra: &[&str], start: bool) {
    let run_label = format!("{RUN_LABEL}={}", run.id());
    let mut args = vec!["create", "--name", name, "--label", &run_label];
    args.extend_from_slice(extra);
    args.push(image);
    docker_cli(&args);
    if start {
        docker_cli(&["start", name]);
    }
}

#[tokio::test]
async fn endpoint_failure_modes_are_told_apart() {
    let Some(docker) = berth_testkit::docker_or_skip("endpoint_failure_modes_are_told_apart").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::test_tool_image(&docker).await.expect("tool image");

    let no_label = run.name("nolabel");
    cli_container(&run, &image, &no_label, &["--label", "berth=true", "-p", "127.0.0.1::80"], true);
    let r = docker.endpoint(&no_label).await;
    assert!(matches!(r, Err(Error::NoPortLabel { .. })), "{r:?}");

    let bad_label = run.name("badlabel");
    cli_container(
        &run,
        &image,
        &bad_label,
        &["--label", "berth=true", "--label", "berth.port=eighty", "-p", "127.0.0.1::80"],
        true,
    );
    let r = docker.endpoint(&bad_label).await;
    assert!(matches!(r, Err(Error::PortMisconfigured { ref value, .. }) if value == "eighty"), "{r:?}");

    let no_ports = run.name("noports");
    cli_container(&run, &image, &no_ports, &["--label", "berth=true", "--label", "berth.port=80"], true);
    let r = docker.endpoint(&no_ports).await;
    assert!(matches!(r, Err(Error::NoPortsOpen { .. })), "{r:?}");

    let wrong_port = run.name("wrongport");
    cli_container(
        &run,
        &image,
        &wrong_port,
        &["--label", "berth=true", "--label", "berth.port=8080", "-p", "127.0.0.1::80"],
        true,
    );
    let r = docker.endpoint(&wrong_port).await;
    assert!(matches!(r, Err(Error::ExpectedPortMissing { port: 8080, .. })), "{r:?}");

    let stopped = run.name("stopped");
    cli_container(
        &run,
        &image,
        &stopped,
        &["--label", "berth=true", "--label", "berth.port=80", "-p", "127.0.0.1::80"],
        false,
    );
    let r = docker.endpoint(&stopped).await;
    assert!(matches!(r, Err(Error::NotRunning { ref state, .. }) if state == "created"), "{r:?}");
}

#[tokio::test]
async fn adopts_django_docker_engine_containers() {
    let Some(docker) = berth_testkit::docker_or_skip("adopts_django_docker_engine_containers").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::test_tool_image(&docker).await.expect("tool image");
    // Labelled exactly as the Python library labels its containers: root
    // label "true" and the port label; no memory label in older versions.
    let name = run.name("django");
    let root = format!("{DJANGO_DOCKER_ENGINE_ROOT_LABEL}=true");
    let port = format!("{DJANGO_DOCKER_ENGINE_ROOT_LABEL}.port=80");
    cli_container(
        &run,
        &image,
        &name,
        &["--label", &root, "--label", &port, "-p", "127.0.0.1::80", "-e", "INPUT_JSON={\"from\":\"python\"}"],
        true,
    );

    let config = docker.config().clone().labels(LabelScheme::new(DJANGO_DOCKER_ENGINE_ROOT_LABEL));
    let adopting = DockerManager::connect(config).await.expect("connect");
    let listed = adopting.list(&ListFilter::all().name(&name)).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].container_port, Some(80));
    assert_eq!(listed[0].mem_reservation_mb, None);
    let endpoint = adopting.endpoint(&name).await.expect("endpoint of adopted container");
    let body = get_when_ready(endpoint.addr, "/input").await;
    assert_eq!(body, "{\"from\":\"python\"}");
    // The default scheme does not see it.
    assert!(docker.inspect(&name).await.unwrap_err().is_not_found());
    adopting.remove(&name).await.expect("adopted container removed");
}

#[tokio::test]
async fn resources_and_labels_reach_the_engine() {
    let Some(docker) = berth_testkit::docker_or_skip("resources_and_labels_reach_the_engine").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::test_tool_image(&docker).await.expect("tool image");
    let mut spec = ContainerSpec::new(image.clone(), run.name("res"), 48).cpus(0.25);
    spec.labels = run.labels();
    docker.launch(&spec).await.expect("launch");
    let out = docker_cli(&[
        "inspect",
        "-f",
        "{{.HostConfig.NanoCpus}} {{.HostConfig.MemoryReservation}} {{index .Config.Labels \"berth.mem_reservation_mb\"}} {{index .Config.Labels \"berth.port\"}}",
        &spec.name,
    ]);
    assert_eq!(out, format!("250000000 {} 48 80", 48 * 1024 * 1024));
    // The published port binds loopback only: nothing outside the host
    // can bypass berth.
    let port = docker_cli(&["port", &spec.name, "80/tcp"]);
    assert!(port.starts_with("127.0.0.1:"), "{port}");
    // A tagless image means :latest.
    let tagless = image.split(':').next().expect("repo").to_owned();
    docker_cli(&["tag", &image, &format!("{tagless}:latest")]);
    let mut spec2 = ContainerSpec::new(tagless.clone(), run.name("latest"), 16);
    spec2.labels = run.labels();
    let info = docker.launch(&spec2).await;
    let _ = Command::new("docker").args(["rmi", &format!("{tagless}:latest")]).output();
    assert_eq!(info.expect("launch by tagless name").image, format!("{tagless}:latest"));
}

#[tokio::test]
async fn bridge_ip_endpoint_publishes_nothing() {
    let Some(docker) = berth_testkit::docker_or_skip("bridge_ip_endpoint_publishes_nothing").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::test_tool_image(&docker).await.expect("tool image");
    let config = docker.config().clone().endpoint_mode(EndpointMode::Auto);
    assert!(config.host.is_local(), "this test needs the local socket");
    let bridge = DockerManager::connect(config).await.expect("connect");
    let mut spec = ContainerSpec::new(image, run.name("bridge"), 16).port(80);
    spec.labels = run.labels();
    bridge.launch(&spec).await.expect("launch");
    let endpoint = bridge.endpoint(&spec.name).await.expect("endpoint");
    let ip = docker_cli(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &spec.name]);
    assert_eq!(endpoint.addr.ip().to_string(), ip);
    assert_eq!(endpoint.addr.port(), 80);
    // No host port: the container is reachable only through berth.
    assert_eq!(docker_cli(&["port", &spec.name]), "");
}

#[tokio::test]
async fn failed_start_leaves_nothing_behind() {
    let Some(docker) = berth_testkit::docker_or_skip("failed_start_leaves_nothing_behind").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::test_tool_image(&docker).await.expect("tool image");
    // A volume mounted below the tool's executable (a file) cannot be
    // created, so the engine refuses to start the container.
    let mut spec = ContainerSpec::new(image, run.name("nostart"), 16).extra_directory("/berth-testtool/sub");
    spec.labels = run.labels();
    let r = docker.launch(&spec).await;
    assert!(r.is_err(), "launch should fail: {r:?}");
    assert!(docker.inspect(&spec.name).await.unwrap_err().is_not_found());
    let volumes = docker.list_volumes().await.expect("volumes");
    assert!(volumes.iter().all(|v| v.container.as_deref() != Some(spec.name.as_str())), "{volumes:?}");
}

#[tokio::test]
async fn negotiates_an_older_api_version() {
    let Some(docker) = berth_testkit::docker_or_skip("negotiates_an_older_api_version").await else {
        return;
    };
    let engine_api = docker_cli(&["version", "-f", "{{.Server.APIVersion}}"]);
    let parse = |v: &str| -> (u32, u32) {
        let (a, b) = v.split_once('.').expect("major.minor");
        (a.parse().expect("major"), b.parse().expect("minor"))
    };
    assert!(
        parse(&docker.api_version()) <= parse(&engine_api),
        "client {} > engine {engine_api}",
        docker.api_version()
    );
}

#[tokio::test]
async fn unreachable_engine_fails_fast() {
    // No engine needed: these engines do not exist.
    let missing_socket = DockerConfig::new(EngineHost::Unix { path: "/nonexistent/docker.sock".into() });
    let started = Instant::now();
    let r = DockerManager::connect(missing_socket).await;
    assert!(matches!(r, Err(Error::EngineUnavailable { .. })), "{r:?}");

    // A closed loopback port: connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let refused = DockerConfig::new(EngineHost::Tcp { host: "127.0.0.1".into(), port, tls: None });
    let r = DockerManager::connect(refused).await;
    assert!(matches!(r, Err(Error::EngineUnavailable { .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    // An engine that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut config = DockerConfig::new(EngineHost::Tcp { host: "127.0.0.1".into(), port, tls: None });
    config.connect_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let r = DockerManager::connect(config).await;
    assert!(matches!(r, Err(Error::EngineUnavailable { .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    hold.abort();
}

async fn get_when_ready(addr: std::net::SocketAddr, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match berth_manager::conformance::http_get(addr, path).await {
            Ok((200, body)) => return body,
            other if Instant::now() > deadline => panic!("{addr}{path} never answered 200: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A local engine's networks have subnets, the default bridge's among them
/// (where containers' connections to the host come from).
#[tokio::test]
async fn network_subnets_include_the_bridge() {
    let Some(docker) = berth_testkit::docker_or_skip("network_subnets_include_the_bridge").await else { return };
    let subnets = docker.network_subnets().await.expect("ask the engine");
    let bridge = docker_cli(&["network", "inspect", "bridge", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"]);
    let bridge = bridge.split_whitespace().next().expect("the bridge network has a subnet").to_owned();
    assert!(subnets.iter().any(|s| s.to_string() == bridge), "{bridge} not in {subnets:?}");
}

/// `GET path` on `addr` with a long timeout (a tool's own fetch may take
/// its 10 s connect timeout first); the status and body.
async fn get_slowly(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        String::from_utf8_lossy(&raw).into_owned()
    };
    let text = tokio::time::timeout(Duration::from_secs(40), exchange).await.expect("an answer within 40 s");
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// On an isolated network (`berth serve`'s default) a container cannot
/// open a connection to another one: a user running code in a notebook
/// cannot call someone else's tool past berth's proxy. The host still
/// reaches both (here through ports published on loopback, as the proxy
/// does) and both still reach the host (staged inputs). On the engine's
/// default network the same call from inside a container works, which
/// shows the test would see a connection if there were one. Calls between
/// containers are made from inside them (the test tool's `/fetch`); the
/// test itself talks to loopback only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_on_an_isolated_network_cannot_reach_each_other() {
    let test = "containers_on_an_isolated_network_cannot_reach_each_other";
    let Some(docker) = berth_testkit::docker_or_skip(test).await else { return };
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::test_tool_image(&docker).await.expect("tool image");
    let network = format!("berth-test-isolated-{}", run.id());
    let config = berth_testkit::docker_config()
        .unwrap()
        .network(ContainerNetwork::Isolated { name: network.clone(), labels: run.labels() });
    let isolated = DockerManager::connect(config.clone()).await.unwrap();
    // The same engine asked for bridge addresses, only to tell container A
    // where B is: the test never dials them.
    let addresses = |config: DockerConfig| DockerManager::connect(config.endpoint_mode(EndpointMode::BridgeIp));
    let isolated_addresses = addresses(config).await.unwrap();
    let default_addresses = addresses(berth_testkit::docker_config().unwrap()).await.unwrap();

    // A listener on the host, as the staging listener is (all interfaces:
    // containers come through their bridge's gateway).
    let host = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let host_port = host.local_addr().unwrap().port();
    let serve_host = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = host.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nhost-ok").await;
        }
    });

    let launch = |manager: &DockerManager, suffix: &str| {
        let mut spec = ContainerSpec::new(image.clone(), run.name(suffix), 16);
        spec.labels = run.labels();
        let manager = manager.clone();
        async move { manager.launch(&spec).await.expect("launch") }
    };
    let (a, b) = (launch(&isolated, "iso-a").await, launch(&isolated, "iso-b").await);
    let inspect = |format: &str| docker_cli(&["network", "inspect", &network, "--format", format]);
    assert_eq!(inspect(&format!("{{{{index .Options \"{BRIDGE_ICC_OPTION}\"}}}}")), "false");
    assert_eq!(inspect("{{.Driver}}"), "bridge");
    let labels = inspect("{{json .Labels}}");
    assert!(labels.contains("\"berth\":\"true\"") && labels.contains("\"berth.network\":\"isolated\""), "{labels}");
    assert!(labels.contains(&format!("\"{RUN_LABEL}\":\"{}\"", run.id())), "{labels}");
    let on_network =
        docker_cli(&["inspect", &a.name, "--format", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}"]);
    assert_eq!(on_network, network, "the container is on the isolated network only");

    // The host reaches both (published on loopback, as the proxy does).
    let a_addr = isolated.endpoint(&a.name).await.unwrap().addr;
    let b_addr = isolated.endpoint(&b.name).await.unwrap().addr;
    assert!(a_addr.ip().is_loopback() && b_addr.ip().is_loopback());
    get_when_ready(a_addr, "/").await;
    get_when_ready(b_addr, "/").await;
    // A reaches the host, not B.
    let (status, body) = get_slowly(a_addr, &format!("/fetch?url=http://host.docker.internal:{host_port}/")).await;
    assert_eq!((status, body.as_str()), (200, "host-ok"), "a container reaches the host");
    let b_bridge = isolated_addresses.endpoint(&b.name).await.unwrap().addr;
    let (status, body) = get_slowly(a_addr, &format!("/fetch?url=http://{b_bridge}/")).await;
    assert_eq!(status, 502, "A reached B directly: {body}");

    // The control: the same call between two containers on the engine's
    // default network goes through.
    let (c, d) = (launch(&docker, "open-c").await, launch(&docker, "open-d").await);
    let c_addr = docker.endpoint(&c.name).await.unwrap().addr;
    get_when_ready(c_addr, "/").await;
    get_when_ready(docker.endpoint(&d.name).await.unwrap().addr, "/").await;
    let d_bridge = default_addresses.endpoint(&d.name).await.unwrap().addr;
    let (status, body) = get_slowly(c_addr, &format!("/fetch?url=http://{d_bridge}/say/hello")).await;
    assert_eq!((status, body.trim()), (200, "said"), "containers on the default network reach each other");

    // The run's clean-up takes the network with the containers.
    serve_host.abort();
    run.cleanup().await;
    let left = docker_cli(&["network", "ls", "--filter", &format!("name=^{network}$"), "--format", "{{.Name}}"]);
    assert_eq!(left, "", "the run's network is gone after its clean-up");
}
