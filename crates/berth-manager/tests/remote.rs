//! The remote-engine transports, proven against the real engine: a
//! loopback TCP port forwarded to the engine's Unix socket stands in for a
//! remote `tcp://` engine, and a TLS terminator with a throwaway CA (made
//! here) for a `DOCKER_TLS_VERIFY` engine. Endpoints are then resolved the
//! remote way: the published port on the engine's host.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_manager::docker::{
    DEFAULT_SOCKET, DockerConfig, DockerManager, EndpointMode, EngineHost, TlsFiles, parse_docker_host,
};
use berth_manager::{ContainerManager, ContainerSpec, Error};
use berth_testkit::TestRun;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tokio::net::{TcpListener, UnixStream};

/// The engine socket behind the forwarders.
fn engine_socket() -> PathBuf {
    match parse_docker_host(std::env::var("DOCKER_HOST").ok().as_deref(), false, None) {
        Ok(EngineHost::Unix { path }) => path,
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// Forwards every connection to 127.0.0.1:<port> to the engine socket.
async fn tcp_forwarder(socket: PathBuf) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind forwarder");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let socket = socket.clone();
            tokio::spawn(async move {
                if let Ok(mut unix) = UnixStream::connect(&socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    (port, task)
}

/// A throwaway PKI: CA, server certificate for 127.0.0.1, client certificate.
struct Pki {
    dir: PathBuf,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
    ca_der: rustls::pki_types::CertificateDer<'static>,
}

fn make_pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).expect("cert dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "berth test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");

    let server_key = KeyPair::generate().expect("server key");
    let mut server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("server params");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params.signed_by(&server_key, &ca).expect("server cert");

    let client_key = KeyPair::generate().expect("client key");
    let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    client_params.distinguished_name.push(DnType::CommonName, "berth test client");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &ca).expect("client cert");

    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
    std::fs::write(dir.join("cert.pem"), client_cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), client_key.serialize_pem()).expect("write key");
    Pki {
        dir: dir.to_path_buf(),
        server_chain: vec![server_cert.der().clone()],
        server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        ca_der: ca.der().clone(),
    }
}

/// Terminates TLS (client certificates required) on 127.0.0.1:<port> and
/// forwards plaintext to the engine socket.
async fn tls_terminator(pki: &Pki, socket: PathBuf) -> (u16, tokio::task::JoinHandle<()>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).expect("ca into roots");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("client verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind terminator");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let socket = socket.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                if let Ok(mut unix) = UnixStream::connect(&socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut unix).await;
                }
            });
        }
    });
    (port, task)
}

/// Launches the tool through `remote`, checks the endpoint is the
/// published port on the engine's host (127.0.0.1 here) and serves the
/// input, then removes it.
async fn launch_through(remote: &DockerManager, run: &TestRun, image: &str, suffix: &str) {
    let mut spec = ContainerSpec::new(image, run.name(suffix), 16).input_env(serde_json::json!({"via": suffix}));
    spec.labels = run.labels();
    remote.launch(&spec).await.expect("launch through the remote transport");
    let endpoint = remote.endpoint(&spec.name).await.expect("endpoint");
    assert_eq!(endpoint.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(endpoint.addr.port(), 80, "a remote endpoint is the published host port");
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        match berth_manager::conformance::http_get(endpoint.addr, "/input").await {
            Ok((200, body)) => break body,
            other if Instant::now() > deadline => panic!("tool never answered: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(body, format!("{{\"via\":\"{suffix}\"}}"));
    // The tool logs the request after answering it, and the engine collects
    // its output asynchronously: the line may take a moment to arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = remote.logs(&spec.name, Default::default()).await.expect("logs");
        if logs.iter().any(|l| l.line.contains("GET /input")) {
            break;
        }
        assert!(Instant::now() < deadline, "no 'GET /input' in {logs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    remote.remove(&spec.name).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_engine() {
    let Some(local) = berth_testkit::docker_or_skip("tcp_engine").await else { return };
    let run = TestRun::start(&local).await;
    let image = berth_testkit::test_tool_image(&local).await.expect("tool image");
    let (port, forwarder) = tcp_forwarder(engine_socket()).await;

    let host = parse_docker_host(Some(&format!("tcp://127.0.0.1:{port}")), false, None).expect("DOCKER_HOST parses");
    let mut config = DockerConfig::new(host).publish_ip("127.0.0.1");
    assert_eq!(config.effective_endpoint_mode(), EndpointMode::PublishedPort);
    config.labels = local.config().labels.clone();
    let remote = DockerManager::connect(config).await.expect("connect over tcp");
    launch_through(&remote, &run, &image, "tcp").await;
    forwarder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_engine() {
    let Some(local) = berth_testkit::docker_or_skip("tls_engine").await else { return };
    let run = TestRun::start(&local).await;
    let image = berth_testkit::test_tool_image(&local).await.expect("tool image");
    let dir = std::env::temp_dir().join(format!("berth-tls-{}", run.id()));
    let pki = make_pki(&dir);
    let (port, terminator) = tls_terminator(&pki, engine_socket()).await;

    // As the Docker CLI would read DOCKER_HOST=tcp://..., DOCKER_TLS_VERIFY=1, DOCKER_CERT_PATH=dir.
    let host =
        parse_docker_host(Some(&format!("tcp://127.0.0.1:{port}")), true, Some(pki.dir.clone())).expect("parses");
    assert_eq!(host, EngineHost::Tcp { host: "127.0.0.1".into(), port, tls: Some(TlsFiles::in_dir(&pki.dir)) });
    let config = DockerConfig::new(host.clone()).publish_ip("127.0.0.1");
    let remote = DockerManager::connect(config).await.expect("connect over tls");
    launch_through(&remote, &run, &image, "tls").await;

    // A client whose CA does not match the server's is refused, quickly.
    let other = make_pki(&dir.join("other"));
    let mut wrong = TlsFiles::in_dir(&pki.dir);
    wrong.ca = other.dir.join("ca.pem");
    let EngineHost::Tcp { host: h, port: p, .. } = host else { unreachable!() };
    let started = Instant::now();
    let r = DockerManager::connect(DockerConfig::new(EngineHost::Tcp { host: h, port: p, tls: Some(wrong) })).await;
    assert!(matches!(r, Err(Error::EngineUnavailable { .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(6));

    // Missing certificate files are a configuration error, not a hang.
    let missing = DockerConfig::new(EngineHost::Tcp {
        host: "127.0.0.1".into(),
        port,
        tls: Some(TlsFiles::in_dir(dir.join("nowhere"))),
    });
    assert!(matches!(DockerManager::connect(missing).await, Err(Error::Config { .. })));

    terminator.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
