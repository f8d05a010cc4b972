//! How to reach the Docker Engine, read from the environment the way the
//! Docker CLI reads it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::types::LabelScheme;

/// Default Unix socket of a local engine.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Where the engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineHost {
    /// A Unix socket on this machine.
    Unix {
        /// Socket path.
        path: PathBuf,
    },
    /// A TCP address, possibly on another machine.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// Port.
        port: u16,
        /// TLS client settings, when the engine requires TLS.
        tls: Option<TlsFiles>,
    },
}

impl EngineHost {
    /// True for a Unix socket: the engine runs on this machine and its
    /// container networks are reachable from here.
    pub fn is_local(&self) -> bool {
        matches!(self, EngineHost::Unix { .. })
    }

    /// The address in `DOCKER_HOST` syntax.
    pub fn display_url(&self) -> String {
        match self {
            EngineHost::Unix { path } => format!("unix://{}", path.display()),
            EngineHost::Tcp { host, port, tls } => {
                let scheme = if tls.is_some() { "https" } else { "tcp" };
                format!("{scheme}://{host}:{port}")
            }
        }
    }
}

/// Client certificate files for a TLS engine (the files `DOCKER_CERT_PATH`
/// holds: `ca.pem`, `cert.pem`, `key.pem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate that signed the engine's certificate.
    pub ca: PathBuf,
    /// Client certificate.
    pub cert: PathBuf,
    /// Client private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The three files of a `DOCKER_CERT_PATH` directory.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") }
    }
}

/// How a container's HTTP endpoint is chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EndpointMode {
    /// Bridge IP for a local engine, published port for a remote one.
    #[default]
    Auto,
    /// The container's IP on its network and its container port: no port
    /// is published on the host, so nothing bypasses berth's proxy.
    /// Only works where the container network is routable from berth.
    BridgeIp,
    /// The container port is published on a random host port, reached
    /// on the engine's host.
    PublishedPort,
    /// Containers share the engine host's network namespace (network mode
    /// `host`): the endpoint is the engine's host and the container port
    /// itself. No bridge, no port mapping and no userland proxy sit in the
    /// path (the fastest option, used by the benchmarks), but every
    /// container must listen on a port of its own.
    HostNetwork,
}

/// The Docker option that stops containers on a bridge network from
/// reaching each other (they still reach the host, and the host them).
pub const BRIDGE_ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// Which network berth's containers join.
///
/// On the engine's default network every container can reach every other
/// one by its address, past berth's proxy and its owner check: a user who
/// runs code in one container (a notebook) could call another user's tool
/// directly with a forged `X-Berth-User`. [`ContainerNetwork::Isolated`]
/// closes that: a bridge network with inter-container communication off,
/// where containers reach the host (staged inputs, through the
/// `host-gateway` mapping) and the host reaches them (bridge addresses,
/// published ports), but containers do not reach each other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ContainerNetwork {
    /// The engine's default network (`bridge`): containers reach each
    /// other. For a single user, or tests that do not care.
    #[default]
    EngineDefault,
    /// A network that exists already, used as it is: berth neither makes
    /// nor changes it.
    Existing(String),
    /// A bridge network on which containers cannot reach each other
    /// ([`BRIDGE_ICC_OPTION`] `= "false"`), made when missing (at the
    /// first launch, or by [`DockerManager::prepare_network`](super::DockerManager::prepare_network))
    /// and labelled `<root>=true`, `<root>.network=isolated` and `labels`.
    /// A network of that name that exists already is used as it is, with a
    /// warning when it lets containers reach each other. berth never
    /// removes it: containers outlive berth's process and stay on it.
    Isolated {
        /// The network's name.
        name: String,
        /// Labels besides berth's own (a test run's, so that its sweep
        /// finds the network; an operator's inventory).
        labels: BTreeMap<String, String>,
    },
}

impl ContainerNetwork {
    /// An isolated network called `name`, with berth's labels only.
    pub fn isolated(name: impl Into<String>) -> Self {
        ContainerNetwork::Isolated { name: name.into(), labels: BTreeMap::new() }
    }

    /// The network's name; `None` for the engine's default.
    pub fn name(&self) -> Option<&str> {
        match self {
            ContainerNetwork::EngineDefault => None,
            ContainerNetwork::Existing(name) | ContainerNetwork::Isolated { name, .. } => Some(name),
        }
    }
}

/// What to do when a launch names an image the engine lacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Fail with [`Error::ImageUnavailable`] (predictable, no network).
    #[default]
    Never,
    /// Pull it from its registry first.
    IfMissing,
}

/// Settings of a [`DockerManager`](super::DockerManager).
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Where the engine listens.
    pub host: EngineHost,
    /// Root label scheme.
    pub labels: LabelScheme,
    /// Longest wait for any single engine call.
    pub timeout: Duration,
    /// Longest wait for the first contact (version negotiation).
    pub connect_timeout: Duration,
    /// How endpoints are chosen.
    pub endpoint_mode: EndpointMode,
    /// Host IP that published ports bind to; `None` means `127.0.0.1` for
    /// a local engine (nothing outside this machine can bypass berth) and
    /// `0.0.0.0` for a remote one (berth must reach it over the network).
    pub publish_ip: Option<String>,
    /// Host name under which containers reach the engine's host (through
    /// the engine's `host-gateway` mapping); `None` adds no mapping.
    pub host_gateway_alias: Option<String>,
    /// The network containers join (ignored with
    /// [`EndpointMode::HostNetwork`]). The engine's default unless set: a
    /// server for several users should choose [`ContainerNetwork::Isolated`].
    pub network: ContainerNetwork,
    /// What to do with missing images.
    pub pull: PullPolicy,
}

impl DockerConfig {
    /// Defaults for `host`: root label `berth`, 30 s per call, 5 s to
    /// connect, automatic endpoints, `host.docker.internal` gateway alias.
    pub fn new(host: EngineHost) -> Self {
        DockerConfig {
            host,
            labels: LabelScheme::default(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            endpoint_mode: EndpointMode::Auto,
            publish_ip: None,
            host_gateway_alias: Some("host.docker.internal".to_owned()),
            network: ContainerNetwork::EngineDefault,
            pull: PullPolicy::Never,
        }
    }

    /// Reads `DOCKER_HOST`, `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` like
    /// the Docker CLI: no `DOCKER_HOST` means the local Unix socket; a
    /// `tcp://` host uses TLS when `DOCKER_TLS_VERIFY` is set to anything
    /// but empty or `0`, with certificates from `DOCKER_CERT_PATH` (default
    /// `~/.docker`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unparsable `DOCKER_HOST`.
    pub fn from_env() -> Result<Self> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let host = parse_docker_host(
            get("DOCKER_HOST").as_deref(),
            get("DOCKER_TLS_VERIFY").is_some_and(|v| v != "0"),
            get("DOCKER_CERT_PATH")
                .map(PathBuf::from)
                .or_else(|| get("HOME").map(|h| PathBuf::from(h).join(".docker"))),
        )?;
        Ok(DockerConfig::new(host))
    }

    /// Sets the root label scheme.
    pub fn labels(mut self, labels: LabelScheme) -> Self {
        self.labels = labels;
        self
    }

    /// Sets the endpoint mode.
    pub fn endpoint_mode(mut self, mode: EndpointMode) -> Self {
        self.endpoint_mode = mode;
        self
    }

    /// Sets the per-call timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the network containers join.
    pub fn network(mut self, network: ContainerNetwork) -> Self {
        self.network = network;
        self
    }

    /// Sets the host IP published ports bind to.
    pub fn publish_ip(mut self, ip: impl Into<String>) -> Self {
        self.publish_ip = Some(ip.into());
        self
    }

    /// The endpoint mode after resolving [`EndpointMode::Auto`].
    pub fn effective_endpoint_mode(&self) -> EndpointMode {
        match (self.endpoint_mode, self.host.is_local()) {
            (EndpointMode::Auto, true) => EndpointMode::BridgeIp,
            (EndpointMode::Auto, false) => EndpointMode::PublishedPort,
            (m, _) => m,
        }
    }

    /// The host IP published ports bind to, after defaults.
    pub fn effective_publish_ip(&self) -> String {
        self.publish_ip.clone().unwrap_or_else(|| if self.host.is_local() { "127.0.0.1" } else { "0.0.0.0" }.to_owned())
    }
}

/// Parses a `DOCKER_HOST` value.
///
/// # Errors
///
/// [`Error::Config`] for schemes other than `unix`, `tcp`, `http`,
/// `https`, or a TCP address without a valid port.
pub fn parse_docker_host(value: Option<&str>, tls_verify: bool, cert_path: Option<PathBuf>) -> Result<EngineHost> {
    let Some(value) = value else {
        return Ok(EngineHost::Unix { path: PathBuf::from(DEFAULT_SOCKET) });
    };
    let bad = |reason: String| Error::Config { reason, source: None };
    if let Some(path) = value.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(bad(format!("DOCKER_HOST {value:?} names no socket path")));
        }
        return Ok(EngineHost::Unix { path: PathBuf::from(path) });
    }
    let (rest, https) = if let Some(r) = value.strip_prefix("tcp://") {
        (r, tls_verify)
    } else if let Some(r) = value.strip_prefix("https://") {
        (r, true)
    } else if let Some(r) = value.strip_prefix("http://") {
        (r, false)
    } else {
        return Err(bad(format!(
            "DOCKER_HOST {value:?} has an unsupported scheme (use unix://, tcp://, http:// or https://)"
        )));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.ends_with(':') => {
            let port: u16 = p.parse().map_err(|_| bad(format!("DOCKER_HOST {value:?} has an invalid port {p:?}")))?;
            (h, port)
        }
        _ if !rest.is_empty() && !rest.contains(':') => (rest, if https { 2376 } else { 2375 }),
        _ => return Err(bad(format!("DOCKER_HOST {value:?} names no host"))),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let tls = if https {
        let dir =
            cert_path.ok_or_else(|| bad("TLS requested but neither DOCKER_CERT_PATH nor HOME is set".to_owned()))?;
        Some(TlsFiles::in_dir(dir))
    } else {
        None
    };
    Ok(EngineHost::Tcp { host, port, tls })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_values() {
        assert_eq!(parse_docker_host(None, false, None).unwrap(), EngineHost::Unix { path: DEFAULT_SOCKET.into() });
        assert_eq!(
            parse_docker_host(Some("unix:///run/x.sock"), false, None).unwrap(),
            EngineHost::Unix { path: "/run/x.sock".into() }
        );
        assert_eq!(
            parse_docker_host(Some("tcp://10.0.0.5:2375"), false, None).unwrap(),
            EngineHost::Tcp { host: "10.0.0.5".into(), port: 2375, tls: None }
        );
        let h = parse_docker_host(Some("tcp://docker.example:2376"), true, Some("/c".into())).unwrap();
        assert_eq!(h, EngineHost::Tcp { host: "docker.example".into(), port: 2376, tls: Some(TlsFiles::in_dir("/c")) });
        assert!(!h.is_local());
        assert_eq!(
            parse_docker_host(Some("tcp://[::1]:1"), false, None).unwrap(),
            EngineHost::Tcp { host: "::1".into(), port: 1, tls: None }
        );
        assert_eq!(
            parse_docker_host(Some("tcp://host"), false, None).unwrap(),
            EngineHost::Tcp { host: "host".into(), port: 2375, tls: None }
        );
        for bad in ["ssh://x", "tcp://", "tcp://h:x", "unix://", "h:1"] {
            assert!(parse_docker_host(Some(bad), false, None).is_err(), "{bad}");
        }
        assert!(parse_docker_host(Some("tcp://h:1"), true, None).is_err());
    }

    #[test]
    fn auto_endpoint_mode() {
        let local = DockerConfig::new(EngineHost::Unix { path: "/s".into() });
        assert_eq!(local.effective_endpoint_mode(), EndpointMode::BridgeIp);
        assert_eq!(local.effective_publish_ip(), "127.0.0.1");
        let remote = DockerConfig::new(EngineHost::Tcp { host: "h".into(), port: 1, tls: None });
        assert_eq!(remote.effective_endpoint_mode(), EndpointMode::PublishedPort);
        assert_eq!(remote.effective_publish_ip(), "0.0.0.0");
    }
}
