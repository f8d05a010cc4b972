//! Route resolution: a pure, synchronous function of the request head.
//!
//! [`Routing::resolve`] maps a method, URI and `Host` to a
//! [`RouteDecision`] without any I/O, so it is cheap on the hot path and
//! table-tested below.

use berth_manager::RoutingMode;
use http::Uri;

/// Default path prefix of path routing.
pub const DEFAULT_PREFIX: &str = "/docker";

/// How container names are found in requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// `/<prefix>/<name>/<rest>` goes to `/<rest>` on container `<name>`.
    Path(PathRouting),
    /// `<name>.<suffix>` goes to container `<name>`, path kept.
    Host(HostRouting),
    /// Both at once: a request whose host is `<name>.<suffix>` is routed
    /// by hostname, any other by path.
    Both(PathRouting, HostRouting),
}

/// Path routing settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRouting {
    prefix: String,
    /// Forward the full original path instead of stripping `/<prefix>/<name>`.
    pub keep_prefix: bool,
    /// Sub-path under a container's route that serves its logs (e.g.
    /// `docker-logs`); `None` disables it.
    pub logs_path: Option<String>,
}

impl Default for PathRouting {
    fn default() -> Self {
        PathRouting::new(DEFAULT_PREFIX)
    }
}

impl PathRouting {
    /// Path routing under `prefix` (leading `/` added, trailing `/`
    /// removed; `"/"` or `""` means the root).
    pub fn new(prefix: &str) -> Self {
        let trimmed = prefix.trim_matches('/');
        PathRouting {
            prefix: if trimmed.is_empty() { String::new() } else { format!("/{trimmed}") },
            keep_prefix: false,
            logs_path: None,
        }
    }

    /// The normalized prefix (`/docker`; empty for the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Sets `keep_prefix`.
    pub fn keep_prefix(mut self, keep: bool) -> Self {
        self.keep_prefix = keep;
        self
    }

    /// Serves logs at `/<prefix>/<name>/<sub_path>`.
    pub fn logs_path(mut self, sub_path: impl Into<String>) -> Self {
        self.logs_path = Some(sub_path.into().trim_matches('/').to_owned());
        self
    }
}

/// Hostname routing settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRouting {
    suffix: String,
    /// Path on a container's host that serves its logs; `None` disables it.
    pub logs_path: Option<String>,
}

impl HostRouting {
    /// Hostname routing for `<name>.<suffix>` (suffix lowercased, dots
    /// trimmed), e.g. `docker.localhost`.
    pub fn new(suffix: &str) -> Self {
        HostRouting { suffix: suffix.trim_matches('.').to_ascii_lowercase(), logs_path: None }
    }

    /// The normalized suffix.
    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    /// Serves logs at `/<sub_path>` on a container's host.
    pub fn logs_path(mut self, sub_path: impl Into<String>) -> Self {
        self.logs_path = Some(sub_path.into().trim_matches('/').to_owned());
        self
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Container name.
    pub container: String,
    /// Path and query to send upstream (always starts with `/`), by the
    /// routing's own prefix setting; a container whose hints say otherwise
    /// gets the other form (see [`Route::path_for`]).
    pub upstream_path: String,
    /// The prefix under which the tool is served (`/docker/<name>`, or
    /// empty with hostname routing): what stripping removes, and the value
    /// of `X-Forwarded-Prefix` when it is removed.
    pub forwarded_prefix: String,
    /// Which routing matched.
    pub kind: RoutingMode,
    /// Whether `upstream_path` has the prefix stripped.
    pub stripped: bool,
}

impl Route {
    /// The upstream path and query when the prefix is (`strip`) or is not
    /// stripped, given the request's original path and query. Hostname
    /// routes have no prefix: always `upstream_path`.
    pub fn path_for<'a>(&'a self, strip: bool, original: &'a str) -> std::borrow::Cow<'a, str> {
        if self.kind == RoutingMode::Host || strip == self.stripped {
            return std::borrow::Cow::Borrowed(&self.upstream_path);
        }
        if strip {
            let rest = original.get(self.forwarded_prefix.len()..).unwrap_or("/");
            if rest.starts_with('/') {
                std::borrow::Cow::Borrowed(rest)
            } else {
                std::borrow::Cow::Owned(format!("/{rest}"))
            }
        } else {
            std::borrow::Cow::Borrowed(original)
        }
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    /// Forward to a container.
    Forward(Route),
    /// Redirect (307) to this location: `/docker/name` → `/docker/name/`.
    Redirect(String),
    /// Serve the container's logs.
    Logs(String),
    /// Under berth's prefix or host suffix, but not a valid container name:
    /// answer 404 without looking anything up.
    InvalidName(String),
    /// Not berth's: let the host application handle it.
    NotMine,
}

impl Routing {
    /// Resolves a request head. Pure: no I/O, no allocation beyond the
    /// decision itself.
    pub fn resolve(&self, uri: &Uri, host: Option<&str>) -> RouteDecision {
        match self {
            Routing::Path(p) => resolve_path(p, uri),
            Routing::Host(h) => resolve_host(h, uri, host),
            Routing::Both(p, h) => match resolve_host(h, uri, host) {
                RouteDecision::NotMine => resolve_path(p, uri),
                decision => decision,
            },
        }
    }

    /// True when [`resolve`](Self::resolve) would not say
    /// [`RouteDecision::NotMine`]: the request is the proxy's (a
    /// container's path or host). Allocation-free, for a server that
    /// dispatches between the proxy and an application before anything
    /// else.
    pub fn claims(&self, uri: &Uri, host: Option<&str>) -> bool {
        match self {
            Routing::Path(p) => claims_path(p, uri),
            Routing::Host(h) => claims_host(h, uri, host),
            Routing::Both(p, h) => claims_host(h, uri, host) || claims_path(p, uri),
        }
    }

    /// The path routing, when on.
    pub fn path(&self) -> Option<&PathRouting> {
        match self {
            Routing::Path(p) | Routing::Both(p, _) => Some(p),
            Routing::Host(_) => None,
        }
    }

    /// The hostname routing, when on.
    pub fn host(&self) -> Option<&HostRouting> {
        match self {
            Routing::Host(h) | Routing::Both(_, h) => Some(h),
            Routing::Path(_) => None,
        }
    }
}

/// True for a container name: a lowercase DNS label.
pub fn is_valid_name(name: &str) -> bool {
    name.len() >= berth_manager::MIN_NAME_LEN
        && name.len() <= berth_manager::MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn claims_path(p: &PathRouting, uri: &Uri) -> bool {
    uri.path().strip_prefix(p.prefix.as_str()).is_some_and(|after| after.starts_with('/'))
}

fn claims_host(h: &HostRouting, uri: &Uri, host: Option<&str>) -> bool {
    let Some(raw) = uri.authority().map(|a| a.as_str()).or(host) else {
        return false;
    };
    let raw = raw.rsplit('@').next().unwrap_or(raw);
    if raw.starts_with('[') {
        return false;
    }
    let hostname = raw.split(':').next().unwrap_or(raw).trim_end_matches('.');
    let n = h.suffix.len();
    hostname.len() > n
        && hostname.as_bytes()[hostname.len() - n - 1] == b'.'
        && hostname.get(hostname.len() - n..).is_some_and(|s| s.eq_ignore_ascii_case(&h.suffix))
}

fn resolve_path(p: &PathRouting, uri: &Uri) -> RouteDecision {
    let path = uri.path();
    let Some(after) = path.strip_prefix(p.prefix.as_str()) else {
        return RouteDecision::NotMine;
    };
    // "/dockerx/..." is not under "/docker".
    let Some(after) = after.strip_prefix('/') else {
        return RouteDecision::NotMine;
    };
    let (name, rest) = match after.find('/') {
        Some(i) => (&after[..i], Some(&after[i..])),
        None => (after, None),
    };
    if name.is_empty() {
        return RouteDecision::InvalidName(String::new());
    }
    if !is_valid_name(name) {
        return RouteDecision::InvalidName(name.to_owned());
    }
    let Some(rest) = rest else {
        let mut location = format!("{}/{name}/", p.prefix);
        if let Some(q) = uri.query() {
            location.push('?');
            location.push_str(q);
        }
        return RouteDecision::Redirect(location);
    };
    if let Some(logs) = &p.logs_path
        && rest.strip_prefix('/').is_some_and(|r| r == logs.as_str())
    {
        return RouteDecision::Logs(name.to_owned());
    }
    let forwarded_prefix = format!("{}/{name}", p.prefix);
    let upstream_path =
        if p.keep_prefix { path_and_query(path, uri.query()) } else { path_and_query(rest, uri.query()) };
    RouteDecision::Forward(Route {
        container: name.to_owned(),
        upstream_path,
        forwarded_prefix,
        kind: RoutingMode::Path,
        stripped: !p.keep_prefix,
    })
}

fn resolve_host(h: &HostRouting, uri: &Uri, host: Option<&str>) -> RouteDecision {
    // HTTP/2 carries the host in the URI authority; HTTP/1.1 in Host.
    let Some(raw) = uri.authority().map(|a| a.as_str()).or(host) else {
        return RouteDecision::NotMine;
    };
    let raw = raw.rsplit('@').next().unwrap_or(raw);
    if raw.starts_with('[') {
        return RouteDecision::NotMine;
    }
    let hostname = raw.split(':').next().unwrap_or(raw).trim_end_matches('.');
    let hostname = hostname.to_ascii_lowercase();
    let Some(label) = hostname.strip_suffix(h.suffix.as_str()).and_then(|l| l.strip_suffix('.')) else {
        return RouteDecision::NotMine;
    };
    if !is_valid_name(label) {
        return RouteDecision::InvalidName(label.to_owned());
    }
    let path = uri.path();
    if let Some(logs) = &h.logs_path
        && path.strip_prefix('/').is_some_and(|r| r == logs.as_str())
    {
        return RouteDecision::Logs(label.to_owned());
    }
    RouteDecision::Forward(Route {
        container: label.to_owned(),
        upstream_path: path_and_query(if path.is_empty() { "/" } else { path }, uri.query()),
        forwarded_prefix: String::new(),
        kind: RoutingMode::Host,
        stripped: false,
    })
}

fn path_and_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => {
            let mut s = String::with_capacity(path.len() + q.len() + 1);
            s.push_str(path);
            s.push('?');
            s.push_str(q);
            s
        }
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(container: &str, upstream: &str, prefix: &str) -> RouteDecision {
        let kind = if prefix.is_empty() { RoutingMode::Host } else { RoutingMode::Path };
        let stripped = kind == RoutingMode::Path && !upstream.starts_with(prefix);
        RouteDecision::Forward(Route {
            container: container.into(),
            upstream_path: upstream.into(),
            forwarded_prefix: prefix.into(),
            kind,
            stripped,
        })
    }

    #[test]
    fn path_routing_table() {
        let r = Routing::Path(PathRouting::default().logs_path("docker-logs"));
        let long = format!("/docker/{}/", "a".repeat(64));
        let cases: Vec<(&str, RouteDecision)> = vec![
            ("/docker/viz/", fwd("viz", "/", "/docker/viz")),
            ("/docker/viz/a/b.js?x=1&y=%20", fwd("viz", "/a/b.js?x=1&y=%20", "/docker/viz")),
            ("/docker/viz/a/../b", fwd("viz", "/a/../b", "/docker/viz")),
            ("/docker/viz/a%2Fb", fwd("viz", "/a%2Fb", "/docker/viz")),
            ("/docker/viz//double", fwd("viz", "//double", "/docker/viz")),
            ("/docker/viz", RouteDecision::Redirect("/docker/viz/".into())),
            ("/docker/viz?q=1", RouteDecision::Redirect("/docker/viz/?q=1".into())),
            ("/docker/viz/docker-logs", RouteDecision::Logs("viz".into())),
            ("/docker/viz/docker-logs/x", fwd("viz", "/docker-logs/x", "/docker/viz")),
            ("/docker/", RouteDecision::InvalidName("".into())),
            ("/docker//x", RouteDecision::InvalidName("".into())),
            ("/docker/../etc/passwd", RouteDecision::InvalidName("..".into())),
            ("/docker/Viz/", RouteDecision::InvalidName("Viz".into())),
            ("/docker/v%69z/", RouteDecision::InvalidName("v%69z".into())),
            ("/docker/-viz/", RouteDecision::InvalidName("-viz".into())),
            ("/docker/viz_1/", RouteDecision::InvalidName("viz_1".into())),
            (long.as_str(), RouteDecision::InvalidName("a".repeat(64))),
            ("/docker", RouteDecision::NotMine),
            ("/dockerx/viz/", RouteDecision::NotMine),
            ("/", RouteDecision::NotMine),
            ("/static/app.js", RouteDecision::NotMine),
        ];
        for (path, want) in cases {
            let uri: Uri = path.parse().unwrap();
            assert_eq!(r.claims(&uri, Some("example.org")), want != RouteDecision::NotMine, "claims {path}");
            assert_eq!(r.resolve(&uri, Some("example.org")), want, "{path}");
        }
    }

    #[test]
    fn keep_prefix_and_custom_prefix() {
        let r = Routing::Path(PathRouting::new("tools/").keep_prefix(true));
        let uri: Uri = "/tools/viz/a?b".parse().unwrap();
        assert_eq!(r.resolve(&uri, None), fwd("viz", "/tools/viz/a?b", "/tools/viz"));
        let root = Routing::Path(PathRouting::new("/"));
        let uri: Uri = "/viz/x".parse().unwrap();
        assert_eq!(root.resolve(&uri, None), fwd("viz", "/x", "/viz"));
        // Logs are off unless configured.
        let uri: Uri = "/tools/viz/docker-logs".parse().unwrap();
        assert_eq!(r.resolve(&uri, None), fwd("viz", "/tools/viz/docker-logs", "/tools/viz"));
    }

    #[test]
    fn both_routings_at_once() {
        let r = Routing::Both(PathRouting::default(), HostRouting::new("docker.localhost"));
        let uri: Uri = "/docker/viz/a".parse().unwrap();
        assert_eq!(r.resolve(&uri, Some("127.0.0.1:8000")), fwd("viz", "/a", "/docker/viz"));
        // A container host wins, with its path kept, even under the prefix.
        assert_eq!(r.resolve(&uri, Some("dash.docker.localhost:8000")), fwd("dash", "/docker/viz/a", ""));
        let uri: Uri = "/api/v1/tools".parse().unwrap();
        assert_eq!(r.resolve(&uri, Some("127.0.0.1:8000")), RouteDecision::NotMine);
        assert_eq!(r.resolve(&uri, Some("docker.localhost")), RouteDecision::NotMine);
        assert!(r.path().is_some() && r.host().is_some());
    }

    #[test]
    fn paths_for_per_container_stripping() {
        let strip = Routing::Path(PathRouting::default());
        let keep = Routing::Path(PathRouting::default().keep_prefix(true));
        let original = "/docker/viz/lab/tree?x=1";
        let uri: Uri = original.parse().unwrap();
        for r in [&strip, &keep] {
            let RouteDecision::Forward(route) = r.resolve(&uri, None) else { panic!() };
            assert_eq!(route.path_for(true, original), "/lab/tree?x=1");
            assert_eq!(route.path_for(false, original), original);
        }
        let RouteDecision::Forward(route) = strip.resolve(&"/docker/viz/".parse().unwrap(), None) else { panic!() };
        assert_eq!(route.path_for(true, "/docker/viz/"), "/");
        let host = Routing::Host(HostRouting::new("docker.localhost"));
        let RouteDecision::Forward(route) = host.resolve(&uri, Some("viz.docker.localhost")) else { panic!() };
        assert_eq!(route.path_for(true, original), original, "hostname routes keep their path");
    }

    #[test]
    fn host_routing_table() {
        let r = Routing::Host(HostRouting::new("docker.localhost").logs_path("/docker-logs"));
        let cases: Vec<(Option<&str>, &str, RouteDecision)> = vec![
            (Some("viz.docker.localhost"), "/a?b=1", fwd("viz", "/a?b=1", "")),
            (Some("viz.docker.localhost:8000"), "/", fwd("viz", "/", "")),
            (Some("VIZ.Docker.LocalHost"), "/x", fwd("viz", "/x", "")),
            (Some("viz.docker.localhost."), "/x", fwd("viz", "/x", "")),
            (Some("viz.docker.localhost"), "/docker-logs", RouteDecision::Logs("viz".into())),
            (Some("a.b.docker.localhost"), "/", RouteDecision::InvalidName("a.b".into())),
            (Some(".docker.localhost"), "/", RouteDecision::InvalidName("".into())),
            (Some("docker.localhost"), "/", RouteDecision::NotMine),
            (Some("xdocker.localhost"), "/", RouteDecision::NotMine),
            (Some("viz.other.localhost"), "/", RouteDecision::NotMine),
            (Some("[::1]:8000"), "/", RouteDecision::NotMine),
            (None, "/", RouteDecision::NotMine),
        ];
        for (host, path, want) in cases {
            let uri: Uri = path.parse().unwrap();
            assert_eq!(r.claims(&uri, host), want != RouteDecision::NotMine, "claims {host:?} {path}");
            assert_eq!(r.resolve(&uri, host), want, "{host:?} {path}");
            let both = Routing::Both(PathRouting::default(), HostRouting::new("docker.localhost"));
            assert_eq!(both.claims(&uri, host), both.resolve(&uri, host) != RouteDecision::NotMine, "both {host:?}");
        }
        for odd in ["é.docker.localhost", "x.dockér.localhost", "ocker.localhost", "a.docker.localhost@b", "é"] {
            let uri: Uri = "/".parse().unwrap();
            assert_eq!(r.claims(&uri, Some(odd)), r.resolve(&uri, Some(odd)) != RouteDecision::NotMine, "{odd}");
        }
        // HTTP/2: the authority is in the URI.
        let uri: Uri = "http://viz.docker.localhost/p".parse().unwrap();
        assert_eq!(r.resolve(&uri, None), fwd("viz", "/p", ""));
    }
}
