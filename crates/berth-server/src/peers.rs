//! Who may use the staging listener: containers, and this host itself.
//!
//! Staged inputs are token-protected, but data files under `/_berth/data`
//! are not, and the listener binds every interface so that containers
//! reach it whichever host address they dial (the bridge gateway, a
//! configured `host-gateway-ip`). So each connection's peer is checked:
//! loopback, or an address in one of the engine's network subnets. A peer
//! outside them triggers one fresh look at the engine's networks (at most
//! every [`REFRESH_EVERY`]), for networks made since the last look.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_manager::docker::Subnet;

/// Least time between two looks at the engine's networks.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// Fetches the engine's network subnets.
pub type FetchSubnets =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = berth_manager::Result<Vec<Subnet>>> + Send>> + Send + Sync>;

/// The peers the staging listener serves; cheap to clone.
#[derive(Clone)]
pub struct ContainerPeers {
    fetch: FetchSubnets,
    known: Arc<Mutex<(Vec<Subnet>, Option<Instant>)>>,
}

impl ContainerPeers {
    /// Peers in the subnets `fetch` returns (looked up lazily), and loopback.
    pub fn new(fetch: FetchSubnets) -> Self {
        ContainerPeers { fetch, known: Arc::new(Mutex::new((Vec::new(), None))) }
    }

    fn known_contains(&self, ip: IpAddr) -> bool {
        self.known.lock().unwrap_or_else(PoisonError::into_inner).0.iter().any(|s| s.contains(ip))
    }

    /// Whether `ip` may use the listener.
    pub async fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_loopback() || self.known_contains(ip) {
            return true;
        }
        let due = {
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            let due = known.1.is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
            if due {
                known.1 = Some(Instant::now());
            }
            due
        };
        if due {
            match (self.fetch)().await {
                Ok(subnets) => self.known.lock().unwrap_or_else(PoisonError::into_inner).0 = subnets,
                Err(e) => tracing::warn!(error = %e, "cannot list the engine's networks"),
            }
        }
        self.known_contains(ip)
    }
}

/// Middleware: 403 for peers that are neither containers nor this host.
pub async fn only_containers(
    State(peers): State<ContainerPeers>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if peers.allows(peer.ip()).await {
        return next.run(req).await;
    }
    tracing::info!(
        %peer, path = %req.uri().path(),
        "staging listener: refused a peer outside the engine's networks (set [staging] any_peer if it is a container)"
    );
    (StatusCode::FORBIDDEN, "this listener serves containers only\n").into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn loopback_and_engine_subnets_only_with_bounded_refreshes() {
        let calls = Arc::new(AtomicUsize::new(0));
        let subnets = Arc::new(Mutex::new(vec!["172.17.0.0/16".parse::<Subnet>().unwrap()]));
        let fetch: FetchSubnets = {
            let (calls, subnets) = (calls.clone(), subnets.clone());
            Arc::new(move || {
                calls.fetch_add(1, Ordering::SeqCst);
                let now = subnets.lock().unwrap().clone();
                Box::pin(async move { Ok(now) })
            })
        };
        let peers = ContainerPeers::new(fetch);
        assert!(peers.allows([127, 0, 0, 1].into()).await);
        assert!(peers.allows("::1".parse().unwrap()).await);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "loopback needs no engine call");
        assert!(peers.allows([172, 17, 0, 3].into()).await);
        assert!(peers.allows("::ffff:172.17.0.4".parse().unwrap()).await);
        assert!(!peers.allows([192, 168, 1, 20].into()).await);
        assert!(!peers.allows([10, 9, 0, 2].into()).await);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one look at the networks, then the cache");
        // A network made later is seen after the refresh interval.
        subnets.lock().unwrap().push("10.9.0.0/24".parse().unwrap());
        tokio::time::sleep(REFRESH_EVERY).await;
        assert!(peers.allows([10, 9, 0, 2].into()).await);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
