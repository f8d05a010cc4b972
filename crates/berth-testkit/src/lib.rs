//! berth-testkit: what berth's Docker tests share.
//!
//! - [`docker_or_skip`]: connect to the engine, or say loudly that the test
//!   is skipped; with `BERTH_REQUIRE_DOCKER=1` (CI) a missing engine is a
//!   failure instead.
//! - [`TestRun`]: a per-test label put on everything the test creates; the
//!   run removes it all on drop (even when the test panics), and the first
//!   run of a process sweeps leftovers of test processes that died.
//! - [`static_tool_image`] / [`test_tool_image`] / [`test_proxy_image`]: build a workspace binary
//!   statically, put it alone in a root filesystem tar and import it as an
//!   image through the engine's API (no registry, no Dockerfile), cached by a
//!   hash of its sources.
//! - [`swarm::swarm_or_skip`]: a single-node swarm on the test engine,
//!   made only when swarm mode is inactive and left by the last test
//!   process using it; [`cluster::TestCluster`]: a multi-node swarm of
//!   extra Docker daemons in network namespaces the test creates.
//!
//! A container a test runs itself rather than through berth (the real
//! apps, `tests/real_apps.rs`) is run with testcontainers: this crate
//! builds its image and labels it with the run; testcontainers starts it,
//! waits for it and removes it. What stays here is what testcontainers
//! cannot do: images imported through the engine's API, swarms, the sweep
//! of everything berth creates (docs/ARCHITECTURE.md, `berth-testkit`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use berth_manager::{ContainerManager, ContainerSpec};
//!
//! let Some(docker) = berth_testkit::docker_or_skip("my_test").await else { return Ok(()) };
//! let run = berth_testkit::TestRun::start(&docker).await;
//! let image = berth_testkit::test_tool_image(&docker).await?;
//! let mut spec = ContainerSpec::new(image, run.name("viz"), 32);
//! spec.labels = run.labels();
//! docker.launch(&spec).await?;
//! // ... the run's containers are removed when `run` drops.
//! # Ok(()) }
//! ```

mod real;

pub use real::{
    BASE_PACKAGES, DEBIAN_SUITE, DEBOOTSTRAP_VARIANT, DEFAULT_DEBIAN_MIRROR, ENV_DEBIAN_MIRROR, HOST_CA_DIR,
    REAL_BASE_REPO, REAL_PYTHON_REPO, RealApp, real_app_image, real_base_image, real_image_references, real_images_dir,
    real_python_image, real_rootfs, real_tools_registry,
};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use berth_manager::docker::{DockerConfig, DockerManager, EndpointMode};
use sha2::{Digest, Sha256};

pub mod cluster;
pub mod swarm;

/// Environment variable that turns "no Docker engine" into a test failure.
pub const ENV_REQUIRE_DOCKER: &str = "BERTH_REQUIRE_DOCKER";

/// Label key on every container and volume a test creates; its value names
/// the run (`<pid>x<counter>`).
pub const RUN_LABEL: &str = "berth-test.run";

/// Label key on every image the test kit builds.
pub const IMAGE_LABEL: &str = "berth-test.image";

/// Repository name of the test tool image.
pub const TEST_TOOL_REPO: &str = "berth-testtool";

/// Errors of the test kit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Building the tool binary failed.
    #[error("building {package} failed: {detail}")]
    Build {
        /// Cargo package.
        package: String,
        /// Cargo's output or the spawn error.
        detail: String,
    },
    /// Reading sources or the built binary failed.
    #[error("i/o error while {context}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Making an image outside the engine's builder failed (debootstrap,
    /// the root filesystem's set-up, packing it).
    #[error("building image {image} failed: {detail}")]
    ImageBuild {
        /// The image (repository) being made.
        image: String,
        /// What failed, with the tool's last output.
        detail: String,
    },
    /// The engine refused something.
    #[error(transparent)]
    Manager(#[from] berth_manager::Error),
}

/// True when `BERTH_REQUIRE_DOCKER` is set to anything but empty or `0`.
pub fn docker_required() -> bool {
    std::env::var(ENV_REQUIRE_DOCKER).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Installs a `tracing` subscriber for tests (once; honours `RUST_LOG`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// The configuration tests use: from the environment, with endpoints
/// through ports published on `127.0.0.1`, so test traffic stays on
/// loopback.
///
/// # Errors
///
/// A bad `DOCKER_HOST`.
pub fn docker_config() -> berth_manager::Result<DockerConfig> {
    Ok(DockerConfig::from_env()?.endpoint_mode(EndpointMode::PublishedPort).publish_ip("127.0.0.1"))
}

/// Connects to the engine for test `test`, or returns `None` after
/// printing that the test is skipped.
///
/// # Panics
///
/// When the engine is unreachable and [`docker_required`] is true: CI
/// must never skip Docker tests silently.
pub async fn docker_or_skip(test: &str) -> Option<DockerManager> {
    init_tracing();
    let result = match docker_config() {
        Ok(config) => DockerManager::connect(config).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(m) => Some(m),
        Err(e) if docker_required() => {
            panic!("{ENV_REQUIRE_DOCKER} is set but the Docker engine is unreachable for {test}: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: no Docker engine ({e}); set {ENV_REQUIRE_DOCKER}=1 to make this a failure");
            None
        }
    }
}

static RUN_COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// One test's share of the engine: a unique label value and name prefix.
/// Dropping it removes every container and volume carrying its label.
#[derive(Debug)]
pub struct TestRun {
    id: String,
    config: DockerConfig,
}

impl TestRun {
    /// Starts a run. The first run of a process also removes leftovers of
    /// earlier test processes that are no longer alive.
    pub async fn start(manager: &DockerManager) -> TestRun {
        SWEPT
            .get_or_init(|| async {
                if let Err(e) = sweep_dead_runs(manager).await {
                    tracing::warn!(error = %e, "sweeping leftovers of earlier test runs failed");
                }
            })
            .await;
        let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
        TestRun { id: format!("{}x{n}", std::process::id()), config: manager.config().clone() }
    }

    /// The run's label value.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Labels to put on everything the run creates.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(RUN_LABEL.to_owned(), self.id.clone())])
    }

    /// A container name unique to this run: `t<id>-<suffix>`.
    pub fn name(&self, suffix: &str) -> String {
        format!("t{}-{suffix}", self.id)
    }

    /// Removes everything carrying the run's label now: swarm services
    /// and configs first (their containers go with them), then containers
    /// and volumes.
    pub async fn cleanup(&self) {
        match DockerManager::connect(self.config.clone()).await {
            Ok(m) => match sweep_all(&m, &self.id).await {
                Ok((0, 0)) => {}
                Ok((c, v)) => tracing::debug!(run = %self.id, containers = c, volumes = v, "test run cleaned up"),
                Err(e) => tracing::warn!(run = %self.id, error = %e, "test run clean-up failed"),
            },
            Err(e) => tracing::warn!(run = %self.id, error = %e, "test run clean-up could not connect"),
        }
    }
}

impl Drop for TestRun {
    fn drop(&mut self) {
        let id = self.id.clone();
        let config = self.config.clone();
        // Drop may run inside or outside a runtime, during a panic or not:
        // a thread of its own with a runtime of its own works everywhere.
        let worker = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(TestRun { id, config: config.clone() }.cleanup_and_forget());
        });
        let _ = worker.join();
    }
}

impl TestRun {
    async fn cleanup_and_forget(self) {
        self.cleanup().await;
        // Cleaning up is done; skip the Drop that would do it again.
        std::mem::forget(self);
    }
}

/// Removes the swarm services and configs, then the containers and
/// volumes, of run `run`; the numbers of containers and volumes removed.
async fn sweep_all(manager: &DockerManager, run: &str) -> berth_manager::Result<(usize, usize)> {
    swarm::sweep_run(manager, run).await;
    manager.sweep_label(RUN_LABEL, run).await
}

/// The test-run label values on anything in the engine: containers,
/// volumes, and (on a swarm manager) services and configs.
///
/// # Errors
///
/// Transport errors.
pub async fn run_label_values(manager: &DockerManager) -> berth_manager::Result<std::collections::BTreeSet<String>> {
    let mut values = manager.label_values(RUN_LABEL).await?;
    values.extend(swarm::run_values(manager).await);
    Ok(values)
}

/// Removes everything of test run `run` (swarm services and configs,
/// containers, volumes).
///
/// # Errors
///
/// Transport errors.
pub async fn sweep_run(manager: &DockerManager, run: &str) -> berth_manager::Result<(usize, usize)> {
    sweep_all(manager, run).await
}

async fn sweep_dead_runs(manager: &DockerManager) -> Result<(), Error> {
    for value in run_label_values(manager).await? {
        let pid = value.split('x').next().unwrap_or_default();
        let alive = !pid.is_empty() && Path::new("/proc").join(pid).exists();
        if !alive {
            let (c, v) = sweep_all(manager, &value).await?;
            tracing::info!(run = %value, containers = c, volumes = v, "removed leftovers of a dead test run");
        }
    }
    Ok(())
}

/// Root of the workspace.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

static TEST_TOOL: tokio::sync::Mutex<Option<String>> = tokio::sync::Mutex::const_new(None);

/// The `berth-testtool` image (see that crate for its routes), built and
/// imported on first use in a process, reused while its sources are
/// unchanged.
///
/// # Errors
///
/// As [`static_tool_image`].
pub async fn test_tool_image(manager: &DockerManager) -> Result<String, Error> {
    let mut cached = TEST_TOOL.lock().await;
    if let Some(image) = cached.as_ref() {
        return Ok(image.clone());
    }
    let image = static_tool_image(manager, "berth-testtool", "berth-testtool", TEST_TOOL_REPO).await?;
    *cached = Some(image.clone());
    Ok(image)
}

static TEST_PROXY: tokio::sync::Mutex<Option<String>> = tokio::sync::Mutex::const_new(None);

/// Image repository of [`test_proxy_image`].
pub const TEST_PROXY_REPO: &str = "berth-test-proxy";

/// The `proxy-server` example as an image (`/proxy-server`), for tests
/// that run berth's proxy inside a test cluster (the swarm's overlay
/// endpoint mode needs berth on the overlay network); built like
/// [`test_tool_image`].
///
/// # Errors
///
/// As [`static_tool_image`].
pub async fn test_proxy_image(manager: &DockerManager) -> Result<String, Error> {
    let mut cached = TEST_PROXY.lock().await;
    if let Some(image) = cached.as_ref() {
        return Ok(image.clone());
    }
    let image = static_tool_image(manager, "proxy-server", "proxy-server", TEST_PROXY_REPO).await?;
    *cached = Some(image.clone());
    Ok(image)
}

/// Builds binary `bin` of workspace package `package` as a static
/// executable, and imports it as image `<repo>:<hash>` holding only
/// `/<bin>`, with `CMD ["/<bin>"]` and label [`IMAGE_LABEL`]. The hash
/// covers the package's files and `Cargo.lock`; an image with that tag is
/// reused without building.
///
/// # Errors
///
/// [`Error::Build`] when cargo fails; [`Error::Io`] reading files;
/// [`Error::Manager`] when the engine refuses the import.
pub async fn static_tool_image(manager: &DockerManager, package: &str, bin: &str, repo: &str) -> Result<String, Error> {
    let root = workspace_root();
    let package_dir = find_package_dir(&root, package)?;
    let mut inputs = vec![package_dir.clone(), root.join("Cargo.lock")];
    inputs.extend(path_dependencies(&package_dir)?);
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    let tag = source_hash(&inputs)?;
    let reference = format!("{repo}:{tag}");
    if manager.image_exists(&reference).await? {
        return Ok(reference);
    }
    let binary = build_static(&root, package, bin).await?;
    let content = tokio::fs::read(&binary)
        .await
        .map_err(|source| Error::Io { context: format!("reading {}", binary.display()), source })?;
    let tar =
        rootfs_tar(bin, &content).map_err(|source| Error::Io { context: "building the image tar".into(), source })?;
    manager
        .import_image(tar.into(), repo, &tag, vec![format!("CMD [\"/{bin}\"]"), format!("LABEL {IMAGE_LABEL}={repo}")])
        .await?;
    tracing::info!(%reference, "imported tool image");
    Ok(reference)
}

fn find_package_dir(root: &Path, package: &str) -> Result<PathBuf, Error> {
    for dir in ["crates", "examples"] {
        let candidate = root.join(dir).join(package);
        if candidate.join("Cargo.toml").is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::Build {
        package: package.to_owned(),
        detail: format!("no crates/{package} or examples/{package} under {}", root.display()),
    })
}

/// Directories of the package's path dependencies, transitively: `path =
/// "..."` in a manifest, and `workspace = true` entries that the
/// workspace's `[workspace.dependencies]` give a path (`berth-manager`), so
/// a change in any library the binary is built from changes its hash.
/// Dev-dependencies are not part of the binary and are left out.
fn path_dependencies(package_dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let root = workspace_root();
    let read = |dir: &Path| -> Result<toml::Table, Error> {
        let manifest = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .map_err(|source| Error::Io { context: format!("reading {}", manifest.display()), source })?;
        text.parse().map_err(|e| Error::Build {
            package: dir.display().to_string(),
            detail: format!("{} does not parse: {e}", manifest.display()),
        })
    };
    let workspace = read(&root)?;
    let workspace_deps = workspace.get("workspace").and_then(|w| w.get("dependencies")).and_then(toml::Value::as_table);
    let mut found: Vec<PathBuf> = Vec::new();
    let package_dir = package_dir.canonicalize().unwrap_or_else(|_| package_dir.to_path_buf());
    let mut todo = vec![package_dir.clone()];
    while let Some(dir) = todo.pop() {
        let manifest = read(&dir)?;
        for section in ["dependencies", "build-dependencies"] {
            let Some(deps) = manifest.get(section).and_then(toml::Value::as_table) else { continue };
            for (name, dep) in deps {
                let path = match dep.get("path").and_then(toml::Value::as_str) {
                    Some(rel) => Some(dir.join(rel)),
                    None if dep.get("workspace").and_then(toml::Value::as_bool) == Some(true) => workspace_deps
                        .and_then(|w| w.get(name))
                        .and_then(|d| d.get("path"))
                        .and_then(toml::Value::as_str)
                        .map(|rel| root.join(rel)),
                    None => None,
                };
                let Some(path) = path else { continue };
                let Ok(path) = path.canonicalize() else { continue };
                if path.join("Cargo.toml").is_file() && path != package_dir && !found.contains(&path) {
                    found.push(path.clone());
                    todo.push(path);
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Hex SHA-256 (first 16 digits) over the paths and contents of every file
/// under `paths`, in sorted order.
fn source_hash(paths: &[&Path]) -> Result<String, Error> {
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files)?;
    }
    files.sort();
    let mut hasher = Sha256::new();
    for f in &files {
        let content =
            std::fs::read(f).map_err(|source| Error::Io { context: format!("reading {}", f.display()), source })?;
        hasher.update(f.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(&content);
    }
    let digest = hasher.finalize();
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let entries = std::fs::read_dir(path)
        .map_err(|source| Error::Io { context: format!("listing {}", path.display()), source })?;
    for entry in entries.flatten() {
        let p = entry.path();
        if p.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        collect_files(&p, out)?;
    }
    Ok(())
}

/// The host target triple, under which static binaries are built.
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

async fn build_static(root: &Path, package: &str, bin: &str) -> Result<PathBuf, Error> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let target_dir = root.join("target").join("static-tools");
    tracing::info!(%package, "building static tool binary");
    let output = tokio::process::Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "--quiet", "--package", package, "--bin", bin, "--target", STATIC_TARGET])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .await
        .map_err(|e| Error::Build { package: package.to_owned(), detail: format!("cannot run cargo: {e}") })?;
    if !output.status.success() {
        return Err(Error::Build {
            package: package.to_owned(),
            detail: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(target_dir.join(STATIC_TARGET).join("release").join(bin))
}

/// A root filesystem holding only `/<bin>` (mode 755) and an empty `/tmp`.
fn rootfs_tar(bin: &str, content: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o1777);
    dir.set_size(0);
    builder.append_data(&mut dir, "tmp/", std::io::empty())?;
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o755);
    header.set_size(content.len() as u64);
    builder.append_data(&mut header, bin, content)?;
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_dependencies_are_followed_through_the_workspace() {
        let root = workspace_root();
        let names = |package: &str| -> Vec<String> {
            let dir = find_package_dir(&root, package).unwrap();
            let deps = path_dependencies(&dir).unwrap();
            deps.iter().filter_map(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned()).collect()
        };
        // berth-manager only through `workspace = true` and through
        // berth-proxy: a change there must rebuild the image.
        let proxy = names("proxy-server");
        for dep in ["berth-manager", "berth-proxy", "berth-history"] {
            assert!(proxy.iter().any(|n| n == dep), "{dep} in {proxy:?}");
        }
        assert!(!proxy.iter().any(|n| n == "berth-testkit"), "no dev-dependencies: {proxy:?}");
        assert_eq!(names("berth-testtool"), ["berth-tool-http"]);
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let dir = std::env::temp_dir().join(format!("berth-testkit-hash-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/a.rs"), "a").unwrap();
        let h1 = source_hash(&[&dir]).unwrap();
        assert_eq!(h1, source_hash(&[&dir]).unwrap());
        std::fs::write(dir.join("src/a.rs"), "b").unwrap();
        assert_ne!(h1, source_hash(&[&dir]).unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rootfs_layout() {
        let tar = rootfs_tar("tool", b"\x7fELF").unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), e.header().mode().unwrap())
            })
            .collect();
        assert_eq!(entries, [("tmp/".to_owned(), 0o1777), ("tool".to_owned(), 0o755)]);
    }
}
