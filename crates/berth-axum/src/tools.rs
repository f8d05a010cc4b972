//! Tool definitions (the registry), where containers are published, and
//! how a tool and a launch become a [`ContainerSpec`].

use std::collections::BTreeMap;

use berth_manager::{ContainerSpec, RouteHints, RoutingMode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::template::{ANONYMOUS_OWNER, EnvName, Template, TemplateVars};

/// How a tool receives its input document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputDelivery {
    /// Environment variable `INPUT_JSON`.
    #[default]
    Env,
    /// `INPUT_JSON_URL`, served by berth's staging store.
    Url,
    /// A file written into the container (`input_path`).
    File,
}

/// A persistent volume of a tool: a named volume mounted at `path`, kept
/// when the container goes (see [`berth_manager::PersistentVolume`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeDef {
    /// Volume name, templated: `home-{owner}` gives each user their own.
    pub name: Template,
    /// Absolute mount path inside the container.
    pub path: String,
}

/// One tool of the registry. Unknown keys are refused, so a misspelt key
/// is an error instead of a silently ignored setting.
///
/// `command`, `entrypoint`, `env` values, `working_dir`, `user` and volume
/// names are [`Template`]s: `{name}`, `{public_path}`, `{public_url}`,
/// `{owner}` and `{port}` are filled in per launch. Every container also
/// gets `BERTH_NAME`, `BERTH_PUBLIC_PATH` and `BERTH_PUBLIC_URL`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolDef {
    /// Registry name (what launch requests name).
    pub name: String,
    /// What it does, for people.
    #[serde(default)]
    pub description: String,
    /// Image reference.
    pub image: String,
    /// HTTP port inside the container.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Memory reservation in MiB (what the memory budget counts).
    pub mem_reservation_mb: u64,
    /// Hard memory limit in MiB; at least the reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_limit_mb: Option<u64>,
    /// CPU share; berth's default when absent (a limit, unless
    /// `cpu_limit` is set: see [`ContainerSpec::cpu_limit`]).
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Hard CPU limit in CPUs; at least `cpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<f64>,
    /// Size of `/dev/shm` in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size_mb: Option<u64>,
    /// Replaces the image's `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<Template>>,
    /// Replaces the image's `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<Template>>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<EnvName, Template>,
    /// Working directory of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<Template>,
    /// User the process runs as (`name`, `uid` or `uid:gid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Template>,
    /// Parameters merged under the caller's.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub default_parameters: Value,
    /// Data-file URLs used when the caller gives none.
    #[serde(default)]
    pub default_files: Vec<String>,
    /// How the input reaches the tool.
    #[serde(default)]
    pub input_mode: InputDelivery,
    /// Path of the input file for mode `file`.
    #[serde(default)]
    pub input_path: Option<String>,
    /// Directories that get a fresh volume each, removed with the container.
    #[serde(default)]
    pub extra_directories: Vec<String>,
    /// Named volumes that outlive the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeDef>,
    /// Path probed for readiness (default `/`), under the tool's public
    /// root: with `strip_prefix = false` under path routing the probe asks
    /// for `<public path><ready_path>` (e.g. `/docker/nb/api/status`), as
    /// the tool receives every other request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_path: Option<String>,
    /// Statuses of the readiness probe that mean ready (default: any 2xx
    /// or 3xx).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ready_status: Vec<u16>,
    /// Seconds the tool may take to become ready (default: the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout_secs: Option<u64>,
    /// Whether the proxy strips `/<prefix>/<name>` before forwarding
    /// (default: yes). A tool told its base path (`{public_path}`) wants
    /// `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<bool>,
    /// Serve it only by path or only by hostname (when the server does
    /// both); the server's default routing when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::Routing>)]
    pub routing: Option<RoutingMode>,
    /// Extra labels on the tool's containers (keys under the manager's root
    /// label are reserved and refused at launch).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Most containers of this tool one user has at once (none when
    /// absent), beside the server's own per-user limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_user: Option<usize>,
    /// Where the tool's containers may run, in Docker Swarm's constraint
    /// language (`node.labels.gpu==yes`), on top of the engine's own
    /// (`[engine.swarm] constraints`); a single engine matches them
    /// against its one node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// Labels to spread the tool's containers over (`node.labels.zone`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<String>,
}

pub(crate) fn default_port() -> u16 {
    80
}

pub(crate) fn empty_object() -> Value {
    json!({})
}

impl ToolDef {
    /// A tool with the defaults: port 80, input by environment, nothing
    /// else set.
    pub fn new(name: impl Into<String>, image: impl Into<String>, mem_reservation_mb: u64) -> Self {
        ToolDef {
            name: name.into(),
            description: String::new(),
            image: image.into(),
            port: default_port(),
            mem_reservation_mb,
            mem_limit_mb: None,
            cpus: None,
            cpu_limit: None,
            shm_size_mb: None,
            command: None,
            entrypoint: None,
            env: BTreeMap::new(),
            working_dir: None,
            user: None,
            default_parameters: empty_object(),
            default_files: Vec::new(),
            input_mode: InputDelivery::Env,
            input_path: None,
            extra_directories: Vec::new(),
            volumes: Vec::new(),
            ready_path: None,
            ready_status: Vec::new(),
            start_timeout_secs: None,
            strip_prefix: None,
            routing: None,
            labels: BTreeMap::new(),
            max_per_user: None,
            constraints: Vec::new(),
            preferences: Vec::new(),
        }
    }

    /// Checks what can be checked without a launch: limits against the
    /// reservation, readiness settings, paths, and that volume names give
    /// valid names. Launch-time values are checked again when the spec is
    /// built.
    ///
    /// # Errors
    ///
    /// What is wrong, naming the key.
    pub fn check(&self) -> Result<(), String> {
        let sample = TemplateVars {
            name: "sample",
            public_path: "/sample/",
            public_url: "http://sample/",
            owner: "sample",
            port: self.port,
        };
        let placement = Placement { mode: RoutingMode::Path, path: "/sample/".into(), url: "http://sample/".into() };
        let spec = self.spec_with(&placement, "sample", &sample, None)?;
        spec.validate().map_err(|e| match e {
            berth_manager::Error::InvalidSpec { reason, .. } => reason,
            other => other.to_string(),
        })
    }

    /// The spec of a container `name` of this tool, published at
    /// `placement`, launched for `owner`.
    ///
    /// # Errors
    ///
    /// What is wrong with an expanded value, naming its key (e.g. a volume
    /// name that `{owner}` made invalid).
    pub fn spec(&self, name: &str, owner: Option<&str>, placement: &Placement) -> Result<ContainerSpec, String> {
        let vars = TemplateVars {
            name,
            public_path: &placement.path,
            public_url: &placement.url,
            owner: owner.unwrap_or(ANONYMOUS_OWNER),
            port: self.port,
        };
        let spec = self.spec_with(placement, name, &vars, owner)?;
        spec.validate().map_err(|e| match e {
            berth_manager::Error::InvalidSpec { reason, .. } => reason,
            other => other.to_string(),
        })?;
        Ok(spec)
    }

    fn spec_with(
        &self,
        placement: &Placement,
        name: &str,
        vars: &TemplateVars<'_>,
        owner: Option<&str>,
    ) -> Result<ContainerSpec, String> {
        let expand_all = |list: &[Template]| list.iter().map(|t| t.expand(vars)).collect::<Vec<_>>();
        let mut spec = ContainerSpec::new(self.image.clone(), name, self.mem_reservation_mb).port(self.port);
        if let Some(cpus) = self.cpus {
            spec = spec.cpus(cpus);
        }
        spec.cpu_limit = self.cpu_limit;
        spec.mem_limit_mb = self.mem_limit_mb;
        spec.shm_size_mb = self.shm_size_mb;
        spec.command = self.command.as_deref().map(expand_all);
        spec.entrypoint = self.entrypoint.as_deref().map(expand_all);
        spec.working_dir = self.working_dir.as_ref().map(|t| t.expand(vars));
        spec.user = self.user.as_ref().map(|t| t.expand(vars));
        for (key, value) in &self.env {
            spec.env.insert(key.as_str().to_owned(), value.expand(vars));
        }
        spec.env.insert("BERTH_NAME".into(), name.to_owned());
        spec.env.insert("BERTH_PUBLIC_PATH".into(), placement.path.clone());
        spec.env.insert("BERTH_PUBLIC_URL".into(), placement.url.clone());
        for dir in &self.extra_directories {
            spec = spec.extra_directory(dir.clone());
        }
        for (i, volume) in self.volumes.iter().enumerate() {
            let volume_name = volume.name.expand(vars);
            berth_manager::validate_volume_name(name, &volume_name).map_err(|e| match e {
                berth_manager::Error::InvalidSpec { reason, .. } => {
                    format!("volumes[{i}].name {:?} gives {reason}", volume.name.as_str())
                }
                other => other.to_string(),
            })?;
            spec = spec.persistent_volume(volume_name, volume.path.clone(), owner);
        }
        for (key, value) in &self.labels {
            spec = spec.label(key.clone(), value.clone());
        }
        spec.placement =
            berth_manager::Placement { constraints: self.constraints.clone(), preferences: self.preferences.clone() };
        // The probe asks for what the container receives. A tool that
        // keeps its prefix is served under its public path, not at `/`
        // (Jupyter with a base_url answers 404 there), and its ready_path
        // is relative to that path too; the name in it is only known now.
        let ready_path = match (self.strip_prefix, placement.mode) {
            (Some(false), RoutingMode::Path) => {
                Some(format!("{}{}", placement.path.trim_end_matches('/'), self.ready_path.as_deref().unwrap_or("/")))
            }
            _ => self.ready_path.clone(),
        };
        spec.hints = RouteHints {
            ready_path,
            ready_status: self.ready_status.clone(),
            start_timeout_secs: self.start_timeout_secs,
            strip_prefix: self.strip_prefix,
            routing: self.routing,
            public_url: Some(placement.url.clone()),
        };
        Ok(spec)
    }
}

/// The tools a server may launch, by name: the registry file's contents
/// (`version = 1` and a `[[tools]]` table per tool; unknown keys refused).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRegistry {
    /// Format version of the registry file; only 1 exists. Absent means 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// The tools.
    #[serde(default)]
    pub tools: Vec<ToolDef>,
}

impl ToolRegistry {
    /// A registry of `tools` (format version 1).
    pub fn new(tools: Vec<ToolDef>) -> Self {
        ToolRegistry { version: Some(1), tools }
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&ToolDef> {
        self.tools.iter().find(|t| t.name == name)
    }
}

/// Where one container is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// By path or by hostname.
    pub mode: RoutingMode,
    /// The path it is served under, with a trailing `/` (`/docker/viz/`,
    /// or `/` under hostname routing).
    pub path: String,
    /// The URL browsers reach it at.
    pub url: String,
}

/// Where a server publishes its containers: the public base URL, and path
/// routing, hostname routing or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrls {
    /// The server's public URL (`http://127.0.0.1:8000`,
    /// `https://portal.example.org/berth`), without a trailing `/`.
    pub base: String,
    /// The path routing prefix (`/docker`), when path routing is on.
    pub path_prefix: Option<String>,
    /// The hostname suffix (`docker.localhost`), when hostname routing is on.
    pub host_suffix: Option<String>,
    /// The routing of containers whose tool does not choose one.
    pub default: RoutingMode,
}

impl Default for PublicUrls {
    fn default() -> Self {
        PublicUrls::path("http://127.0.0.1:8000", berth_proxy::DEFAULT_PREFIX)
    }
}

impl PublicUrls {
    /// Path routing only, under `prefix`.
    pub fn path(base: &str, prefix: &str) -> Self {
        PublicUrls {
            base: base.trim_end_matches('/').to_owned(),
            path_prefix: Some(normalize_prefix(prefix)),
            host_suffix: None,
            default: RoutingMode::Path,
        }
    }

    /// Where container `name` is published, by the routing `wanted` (its
    /// tool's choice) or the default.
    ///
    /// # Errors
    ///
    /// When the wanted routing is not on for this server.
    pub fn place(&self, name: &str, wanted: Option<RoutingMode>) -> Result<Placement, String> {
        let mode = wanted.unwrap_or(self.default);
        match mode {
            RoutingMode::Path => {
                let prefix = self.path_prefix.as_deref().ok_or("path routing is not on for this server")?;
                let path = format!("{prefix}/{name}/");
                Ok(Placement { mode, url: format!("{}{path}", self.base), path })
            }
            RoutingMode::Host => {
                let suffix = self.host_suffix.as_deref().ok_or("hostname routing is not on for this server")?;
                let (scheme, rest) = self.base.split_once("://").unwrap_or(("http", self.base.as_str()));
                let authority = rest.split('/').next().unwrap_or(rest);
                let port = authority.rsplit_once(':').map(|(_, p)| p).filter(|p| p.chars().all(|c| c.is_ascii_digit()));
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                Ok(Placement { mode, path: "/".into(), url: format!("{scheme}://{name}.{suffix}{port}/") })
            }
        }
    }

    /// Where an existing container is published: by its hints' routing,
    /// else the default, else whichever routing is on.
    pub fn placed(&self, name: &str, hints: &RouteHints) -> Option<Placement> {
        self.place(name, hints.routing)
            .or_else(|_| self.place(name, Some(RoutingMode::Path)))
            .or_else(|_| self.place(name, Some(RoutingMode::Host)))
            .ok()
    }
}

fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() { String::new() } else { format!("/{trimmed}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements() {
        let urls = PublicUrls {
            base: "https://portal.example.org:8443/berth".into(),
            path_prefix: Some("/docker".into()),
            host_suffix: Some("apps.example.org".into()),
            default: RoutingMode::Path,
        };
        let p = urls.place("viz", None).unwrap();
        assert_eq!(
            (p.path.as_str(), p.url.as_str()),
            ("/docker/viz/", "https://portal.example.org:8443/berth/docker/viz/")
        );
        let h = urls.place("viz", Some(RoutingMode::Host)).unwrap();
        assert_eq!((h.path.as_str(), h.url.as_str()), ("/", "https://viz.apps.example.org:8443/"));
        let only_path = PublicUrls::path("http://127.0.0.1:8000/", "/docker/");
        assert!(only_path.place("viz", Some(RoutingMode::Host)).is_err());
        assert_eq!(only_path.place("viz", None).unwrap().url, "http://127.0.0.1:8000/docker/viz/");
        let hinted = RouteHints { routing: Some(RoutingMode::Host), ..RouteHints::default() };
        assert_eq!(only_path.placed("viz", &hinted).unwrap().mode, RoutingMode::Path, "falls back to what is on");
    }

    fn jupyter() -> ToolDef {
        let mut tool = ToolDef::new("jupyter", "quay.io/jupyter/base-notebook", 512);
        tool.port = 8888;
        tool.mem_limit_mb = Some(1024);
        tool.command = Some(
            ["start-notebook.py", "--ServerApp.base_url={public_path}", "--IdentityProvider.token="]
                .iter()
                .map(|s| Template::parse(s).unwrap())
                .collect(),
        );
        tool.env.insert(EnvName::new("NB_USER_NAME").unwrap(), Template::parse("{owner}@{name}:{port}").unwrap());
        tool.volumes
            .push(VolumeDef { name: Template::parse("home-{owner}").unwrap(), path: "/home/jovyan/work".into() });
        tool.strip_prefix = Some(false);
        tool
    }

    #[test]
    fn a_tool_becomes_a_spec() {
        let tool = jupyter();
        tool.check().unwrap();
        let placement = PublicUrls::default().place("nb", None).unwrap();
        let spec = tool.spec("nb", Some("ann"), &placement).unwrap();
        assert_eq!(spec.command.as_ref().unwrap()[1], "--ServerApp.base_url=/docker/nb/");
        assert_eq!(spec.env["NB_USER_NAME"], "ann@nb:8888");
        assert_eq!(spec.env["BERTH_PUBLIC_PATH"], "/docker/nb/");
        assert_eq!(spec.env["BERTH_PUBLIC_URL"], "http://127.0.0.1:8000/docker/nb/");
        assert_eq!(spec.env["BERTH_NAME"], "nb");
        assert_eq!(spec.volumes[0].name, "home-ann");
        assert_eq!(spec.volumes[0].owner.as_deref(), Some("ann"));
        assert_eq!(spec.hints.strip_prefix, Some(false));
        assert_eq!(spec.hints.ready_path.as_deref(), Some("/docker/nb/"), "probed under the path it keeps");
        let mut api = jupyter();
        api.ready_path = Some("/api/status".into());
        let spec = api.spec("nb", Some("ann"), &placement).unwrap();
        assert_eq!(spec.hints.ready_path.as_deref(), Some("/docker/nb/api/status"));
        let urls = PublicUrls { host_suffix: Some("docker.localhost".into()), ..PublicUrls::default() };
        let hosted = api.spec("nb", Some("ann"), &urls.place("nb", Some(RoutingMode::Host)).unwrap()).unwrap();
        assert_eq!(hosted.hints.ready_path.as_deref(), Some("/api/status"), "by hostname the public path is /");
        let mut stripped = api.clone();
        stripped.strip_prefix = None;
        assert_eq!(stripped.spec("nb", None, &placement).unwrap().hints.ready_path.as_deref(), Some("/api/status"));
        assert_eq!(spec.hints.public_url.as_deref(), Some("http://127.0.0.1:8000/docker/nb/"));
        let anonymous = tool.spec("nb", None, &placement).unwrap();
        assert_eq!(anonymous.volumes[0].name, "home-anonymous");
    }

    #[test]
    fn bad_tools_and_expansions_are_refused() {
        let placement = PublicUrls::default().place("nb", None).unwrap();
        let e = jupyter().spec("nb", Some("ann@example.org"), &placement).unwrap_err();
        assert!(e.contains("volumes[0].name \"home-{owner}\"") && e.contains("not valid"), "{e}");
        let mut low = jupyter();
        low.mem_limit_mb = Some(100);
        assert!(low.check().unwrap_err().contains("mem_limit_mb 100 is below"));
        let mut cpu = jupyter();
        cpu.cpus = Some(2.0);
        cpu.cpu_limit = Some(1.0);
        assert!(cpu.check().unwrap_err().contains("cpu_limit"));
        let mut bad_volume = jupyter();
        bad_volume.volumes[0].name = Template::parse("home dir").unwrap();
        assert!(bad_volume.check().unwrap_err().contains("volumes[0].name"));
        let mut status = jupyter();
        status.ready_status = vec![700];
        assert!(status.check().unwrap_err().contains("ready_status 700"));
    }
}
