//! Images of real, unmodified web apps (JupyterLab, Streamlit, Dash,
//! Shiny), built locally because no registry is reachable.
//!
//! Three layers, each cached by a hash of what it is built from:
//!
//! 1. a Debian root filesystem made with `debootstrap --variant=minbase`,
//!    with the host's extra CA certificates installed and pip pointed at
//!    the system bundle ([`real_rootfs`]; the tarball is kept under
//!    `target/real-images/`, so removing the images does not mean
//!    bootstrapping again), imported through the engine as
//!    `berth-real/base:<hash>` ([`real_base_image`]);
//! 2. `berth-real/python:<hash>`: Debian's Python with a venv at
//!    `/opt/venv` ([`real_python_image`]);
//! 3. one image per [`RealApp`], built from `demo/real-tools/<app>/`
//!    ([`real_app_image`]).
//!
//! An image's tag hashes its build context and its parent's reference, so
//! an unchanged image is found, not rebuilt. Every image carries
//! [`IMAGE_LABEL`](crate::IMAGE_LABEL) (`berth-test.image=<repo>`);
//! `cargo xtask test` removes the test images at its end but keeps the
//! real ones the current sources make ([`real_image_references`]), and
//! removes their stale versions. Building needs
//! root and `debootstrap` (for the root filesystem) and the Debian and
//! PyPI mirrors; build output is logged at `info`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use berth_manager::docker::{DockerManager, ImageBuild};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{Error, IMAGE_LABEL, workspace_root};

/// Repository of the Debian base image.
pub const REAL_BASE_REPO: &str = "berth-real/base";

/// Repository of the Python layer the Python apps start from.
pub const REAL_PYTHON_REPO: &str = "berth-real/python";

/// Debian release of the root filesystem.
pub const DEBIAN_SUITE: &str = "bookworm";

/// debootstrap's variant: only what apt needs.
pub const DEBOOTSTRAP_VARIANT: &str = "minbase";

/// Packages debootstrap adds to the variant.
pub const BASE_PACKAGES: &[&str] = &["ca-certificates"];

/// Environment variable naming the Debian mirror debootstrap downloads
/// from (default [`DEFAULT_DEBIAN_MIRROR`]). Not part of the cache key: a
/// mirror serves the same packages.
pub const ENV_DEBIAN_MIRROR: &str = "BERTH_DEBIAN_MIRROR";

/// Debian's own mirror network.
pub const DEFAULT_DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// Where the host keeps its extra CA certificates (`*.crt`, read by
/// `update-ca-certificates`); they are installed in the root filesystem,
/// so builds trust the same TLS proxies the host does.
pub const HOST_CA_DIR: &str = "/usr/local/share/ca-certificates";

/// The recipe's fixed parts, hashed into the base image's tag: change
/// this string when the way the root filesystem is made changes.
const ROOTFS_RECIPE: &str = "debootstrap v1; tar --numeric-owner without dev/proc/sys contents; gzip -1";

/// Where the images' Dockerfiles and app files live, under the workspace.
const REAL_TOOLS_DIR: &str = "demo/real-tools";

/// Dockerfile-style changes applied to the imported root filesystem (what
/// Debian's own image sets).
const BASE_CHANGES: &[&str] =
    &["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8", "CMD [\"bash\"]"];

/// A real web app, as its upstream image runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RealApp {
    /// JupyterLab 4 as jupyter/docker-stacks' base-notebook runs it
    /// (`start-notebook.py`, user jovyan, port 8888, a random token).
    JupyterLab,
    /// Streamlit as its Docker guide runs it (`streamlit run app.py`,
    /// port 8501).
    Streamlit,
    /// Dash under gunicorn (`gunicorn -b 0.0.0.0:8050 app:server`).
    Dash,
    /// R Shiny from Debian's `r-cran-shiny` via `shiny::runApp`, port 3838.
    Shiny,
}

impl RealApp {
    /// Every app.
    pub const ALL: [RealApp; 4] = [RealApp::JupyterLab, RealApp::Streamlit, RealApp::Dash, RealApp::Shiny];

    /// Short name: `jupyterlab`, `streamlit`, `dash`, `shiny` (also the
    /// directory under `demo/real-tools/`).
    pub fn name(self) -> &'static str {
        match self {
            RealApp::JupyterLab => "jupyterlab",
            RealApp::Streamlit => "streamlit",
            RealApp::Dash => "dash",
            RealApp::Shiny => "shiny",
        }
    }

    /// The app whose [`name`](RealApp::name) is `name`.
    pub fn from_name(name: &str) -> Option<RealApp> {
        RealApp::ALL.into_iter().find(|app| app.name() == name)
    }

    /// Image repository, e.g. `berth-real/jupyterlab`.
    pub fn repo(self) -> &'static str {
        match self {
            RealApp::JupyterLab => "berth-real/jupyterlab",
            RealApp::Streamlit => "berth-real/streamlit",
            RealApp::Dash => "berth-real/dash",
            RealApp::Shiny => "berth-real/shiny",
        }
    }

    /// The port the app listens on inside its container (its upstream
    /// image's port).
    pub fn port(self) -> u16 {
        match self {
            RealApp::JupyterLab => 8888,
            RealApp::Streamlit => 8501,
            RealApp::Dash => 8050,
            RealApp::Shiny => 3838,
        }
    }

    /// A path that answers 2xx or 3xx once the app is up: `/` (a 302 to
    /// `/lab` for JupyterLab), `/_stcore/health` for Streamlit.
    pub fn ready_path(self) -> &'static str {
        match self {
            RealApp::Streamlit => "/_stcore/health",
            RealApp::JupyterLab | RealApp::Dash | RealApp::Shiny => "/",
        }
    }

    /// Whether the image starts FROM the Python layer (else FROM the base).
    fn on_python(self) -> bool {
        !matches!(self, RealApp::Shiny)
    }
}

impl std::fmt::Display for RealApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// Serializes builds within this process; [`BuildLock`] does across
/// processes (a file lock is per open file, so it cannot do both).
static PROCESS_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Directory of the cached root filesystem tarballs and the build lock.
pub fn real_images_dir() -> PathBuf {
    workspace_root().join("target").join("real-images")
}

/// The image of `app`, built (with the layers below it) when the engine
/// lacks it, found otherwise. Concurrent callers, in this process or in
/// others (test binaries run in parallel), wait for one build.
///
/// # Errors
///
/// [`Error::ImageBuild`] when debootstrap or the root filesystem set-up
/// fails (not root, no `debootstrap`, mirror unreachable);
/// [`Error::Manager`] with `BuildFailed` (and the build's last lines) when
/// a Dockerfile step fails, or when the engine refuses the import;
/// [`Error::Io`] reading the build contexts.
pub async fn real_app_image(manager: &DockerManager, app: RealApp) -> Result<String, Error> {
    let plan = Plan::new()?;
    let reference = plan.app(app).reference.clone();
    if manager.image_exists(&reference).await? {
        return Ok(reference);
    }
    let _lock = BuildLock::acquire().await?;
    plan.ensure_app(manager, app).await?;
    Ok(reference)
}

/// The registry of real tools a server here can run: the entries of
/// `demo/real-tools.toml` with a `local` app, each with `image` set to that
/// app's locally built image (built when missing) and the build-only
/// `local` key removed; entries without `local` (images only a registry
/// has) are left out. Returns the registry as TOML text, for a server's
/// `tools` file.
///
/// # Errors
///
/// As [`real_app_image`]; [`Error::ImageBuild`] when the file does not
/// parse or names an unknown app.
pub async fn real_tools_registry(manager: &DockerManager) -> Result<String, Error> {
    let path = crate::workspace_root().join("demo/real-tools.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|source| Error::Io { context: format!("reading {}", path.display()), source })?;
    let bad = |detail: String| Error::ImageBuild { image: "real tools registry".into(), detail };
    let mut registry: toml::Table = text.parse().map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let tools = registry
        .get_mut("tools")
        .and_then(toml::Value::as_array_mut)
        .ok_or_else(|| bad(format!("{} has no [[tools]]", path.display())))?;
    let mut kept = Vec::new();
    for tool in tools.drain(..) {
        let toml::Value::Table(mut tool) = tool else { continue };
        let Some(local) = tool.remove("local") else { continue };
        let name = local.as_str().unwrap_or_default().to_owned();
        let app = RealApp::from_name(&name).ok_or_else(|| bad(format!("unknown local app {name:?}")))?;
        let image = real_app_image(manager, app).await?;
        tool.insert("image".into(), toml::Value::String(image));
        kept.push(toml::Value::Table(tool));
    }
    *tools = kept;
    toml::to_string(&registry).map_err(|e| bad(format!("writing the registry: {e}")))
}

/// The references of every real image the current sources make (base,
/// Python layer, apps), computed without building anything: what a cache
/// of real images keeps, anything else of their repositories is stale.
///
/// # Errors
///
/// [`Error::Io`] reading the build contexts or the host's CA files.
pub fn real_image_references() -> Result<Vec<String>, Error> {
    let plan = Plan::new()?;
    let mut references = vec![plan.base_reference, plan.python.reference];
    references.extend(plan.apps.into_iter().map(|(_, layer)| layer.reference));
    Ok(references)
}

/// The Python layer `berth-real/python:<hash>` (Debian's python3 with a
/// venv at `/opt/venv` on `PATH`), built when missing.
///
/// # Errors
///
/// As [`real_app_image`].
pub async fn real_python_image(manager: &DockerManager) -> Result<String, Error> {
    let plan = Plan::new()?;
    if manager.image_exists(&plan.python.reference).await? {
        return Ok(plan.python.reference);
    }
    let _lock = BuildLock::acquire().await?;
    plan.ensure_python(manager).await?;
    Ok(plan.python.reference)
}

/// The Debian base image `berth-real/base:<hash>`, imported from
/// [`real_rootfs`] when missing.
///
/// # Errors
///
/// As [`real_app_image`].
pub async fn real_base_image(manager: &DockerManager) -> Result<String, Error> {
    let plan = Plan::new()?;
    if manager.image_exists(&plan.base_reference).await? {
        return Ok(plan.base_reference);
    }
    let _lock = BuildLock::acquire().await?;
    plan.ensure_base(manager).await?;
    Ok(plan.base_reference)
}

/// The root filesystem tarball (gzip) of the base image, made with
/// debootstrap when `target/real-images/` has none for the current
/// inputs. Needs no engine.
///
/// # Errors
///
/// [`Error::ImageBuild`] when debootstrap, the chroot set-up or tar fail;
/// [`Error::Io`] for local files.
pub async fn real_rootfs() -> Result<PathBuf, Error> {
    let plan = Plan::new()?;
    let _lock = BuildLock::acquire().await?;
    plan.ensure_rootfs().await
}

/// A Dockerfile build: its context as a tar, its tag.
#[derive(Debug, Clone)]
struct Layer {
    /// Repository.
    repo: &'static str,
    /// `repo:tag`, the tag hashing the context and the parent reference.
    reference: String,
    /// The build context, a deterministic tar of the layer's directory.
    context: Vec<u8>,
}

impl Layer {
    fn new(repo: &'static str, dir: &str, parent: &str) -> Result<Layer, Error> {
        let path = workspace_root().join(REAL_TOOLS_DIR).join(dir);
        let context = context_tar(&path)?;
        let mut hasher = Sha256::new();
        hasher.update(&context);
        hasher.update([0]);
        hasher.update(parent.as_bytes());
        Ok(Layer { repo, reference: format!("{repo}:{}", hex16(&hasher.finalize())), context })
    }
}

/// Every reference of the stack, computed from the sources without
/// building anything.
#[derive(Debug)]
struct Plan {
    /// Tag of the base image (the hash of the root filesystem's inputs).
    base_tag: String,
    /// `berth-real/base:<base_tag>`.
    base_reference: String,
    /// The Python layer.
    python: Layer,
    /// The apps, in [`RealApp::ALL`] order.
    apps: Vec<(RealApp, Layer)>,
}

impl Plan {
    fn new() -> Result<Plan, Error> {
        let base_tag = rootfs_hash()?;
        let base_reference = format!("{REAL_BASE_REPO}:{base_tag}");
        let python = Layer::new(REAL_PYTHON_REPO, "python", &base_reference)?;
        let apps = RealApp::ALL
            .into_iter()
            .map(|app| {
                let parent = if app.on_python() { &python.reference } else { &base_reference };
                Ok((app, Layer::new(app.repo(), app.name(), parent)?))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Plan { base_tag, base_reference, python, apps })
    }

    fn app(&self, app: RealApp) -> &Layer {
        // `apps` holds every app of `RealApp::ALL`.
        &self.apps.iter().find(|(a, _)| *a == app).unwrap_or(&self.apps[0]).1
    }

    fn rootfs_path(&self) -> PathBuf {
        real_images_dir().join(format!("rootfs-{DEBIAN_SUITE}-{}.tar.gz", self.base_tag))
    }

    async fn ensure_rootfs(&self) -> Result<PathBuf, Error> {
        let path = self.rootfs_path();
        if path.is_file() {
            tracing::info!(rootfs = %path.display(), "root filesystem tarball is cached");
            return Ok(path);
        }
        make_rootfs(&path).await?;
        Ok(path)
    }

    async fn ensure_base(&self, manager: &DockerManager) -> Result<(), Error> {
        if manager.image_exists(&self.base_reference).await? {
            return Ok(());
        }
        let tarball = self.ensure_rootfs().await?;
        let started = Instant::now();
        let content = tokio::fs::read(&tarball)
            .await
            .map_err(|source| Error::Io { context: format!("reading {}", tarball.display()), source })?;
        let mut changes: Vec<String> = BASE_CHANGES.iter().map(|c| (*c).to_owned()).collect();
        changes.push(format!("LABEL {IMAGE_LABEL}={REAL_BASE_REPO}"));
        manager.import_image(content.into(), REAL_BASE_REPO, &self.base_tag, changes).await?;
        tracing::info!(image = %self.base_reference, took = ?started.elapsed(), "imported the base image");
        Ok(())
    }

    async fn ensure_layer(&self, manager: &DockerManager, layer: &Layer, parent: &str) -> Result<(), Error> {
        if manager.image_exists(&layer.reference).await? {
            return Ok(());
        }
        let started = Instant::now();
        let build = ImageBuild::new(&layer.reference).build_arg("BASE", parent).label(IMAGE_LABEL, layer.repo);
        manager.build_image(layer.context.clone().into(), &build).await?;
        tracing::info!(image = %layer.reference, took = ?started.elapsed(), "built image");
        Ok(())
    }

    async fn ensure_python(&self, manager: &DockerManager) -> Result<(), Error> {
        self.ensure_base(manager).await?;
        self.ensure_layer(manager, &self.python, &self.base_reference).await
    }

    async fn ensure_app(&self, manager: &DockerManager, app: RealApp) -> Result<(), Error> {
        let parent = if app.on_python() {
            self.ensure_python(manager).await?;
            &self.python.reference
        } else {
            self.ensure_base(manager).await?;
            &self.base_reference
        };
        self.ensure_layer(manager, self.app(app), parent).await
    }
}

/// Holds the process lock and the file lock `target/real-images/build.lock`
/// while a build runs; dropping it releases both.
struct BuildLock {
    _file: std::fs::File,
    _process: tokio::sync::MutexGuard<'static, ()>,
}

impl BuildLock {
    async fn acquire() -> Result<BuildLock, Error> {
        let process = PROCESS_LOCK.lock().await;
        let dir = real_images_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|source| Error::Io { context: format!("creating {}", dir.display()), source })?;
        let path = dir.join("build.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Io { context: format!("opening {}", path.display()), source })?;
        // Another process may hold it for minutes: wait off the runtime.
        let file = tokio::task::spawn_blocking(move || {
            if fs4::FileExt::try_lock(&file).is_err() {
                tracing::info!(lock = %path.display(), "waiting for another process's real image build");
                fs4::FileExt::lock(&file)
                    .map_err(|source| Error::Io { context: format!("locking {}", path.display()), source })?;
            }
            Ok::<_, Error>(file)
        })
        .await
        .map_err(|e| Error::Io { context: "waiting for the build lock".into(), source: std::io::Error::other(e) })??;
        Ok(BuildLock { _file: file, _process: process })
    }
}

/// The base image's tag: a hash of the recipe, the suite, variant and
/// packages, the chroot set-up script and the host's CA certificates.
fn rootfs_hash() -> Result<String, Error> {
    let mut hasher = Sha256::new();
    for part in [ROOTFS_RECIPE, DEBIAN_SUITE, DEBOOTSTRAP_VARIANT] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    for package in BASE_PACKAGES {
        hasher.update(package.as_bytes());
        hasher.update([0]);
    }
    let script = configure_script();
    hasher.update(read(&script)?);
    for ca in host_ca_files()? {
        hasher.update(ca.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
        hasher.update([0]);
        hasher.update(read(&ca)?);
    }
    Ok(hex16(&hasher.finalize()))
}

fn configure_script() -> PathBuf {
    workspace_root().join(REAL_TOOLS_DIR).join("base").join("configure.sh")
}

/// The host's `*.crt` files in [`HOST_CA_DIR`], sorted; none when the
/// directory is missing.
fn host_ca_files() -> Result<Vec<PathBuf>, Error> {
    let entries = match std::fs::read_dir(HOST_CA_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Io { context: format!("listing {HOST_CA_DIR}"), source }),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "crt"))
        .collect();
    files.sort();
    Ok(files)
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io { context: format!("reading {}", path.display()), source })
}

fn hex16(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Makes the root filesystem tarball at `out`: debootstrap into a work
/// directory, install the host's CAs and run `configure.sh` in a chroot,
/// tar it (device nodes and the contents of `/proc` and `/sys` left out:
/// the engine provides those), then rename into place.
async fn make_rootfs(out: &Path) -> Result<(), Error> {
    let image = REAL_BASE_REPO.to_owned();
    let failed = |detail: String| Error::ImageBuild { image: image.clone(), detail };
    let work = real_images_dir().join(format!("work-{}", std::process::id()));
    remove_work_dir(&work).await?;
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&work)
        .map_err(|source| Error::Io { context: format!("creating {}", work.display()), source })?;
    let mirror = std::env::var(ENV_DEBIAN_MIRROR).unwrap_or_else(|_| DEFAULT_DEBIAN_MIRROR.to_owned());
    let debootstrap = ["/usr/sbin/debootstrap", "/sbin/debootstrap", "/usr/bin/debootstrap"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .ok_or_else(|| failed("debootstrap is not installed (apt-get install -y debootstrap)".into()))?;
    let started = Instant::now();
    let result = async {
        run_logged(
            "debootstrap",
            tokio::process::Command::new(debootstrap)
                .arg(format!("--variant={DEBOOTSTRAP_VARIANT}"))
                .arg(format!("--include={}", BASE_PACKAGES.join(",")))
                .arg(DEBIAN_SUITE)
                .arg(&rootfs)
                .arg(&mirror),
        )
        .await
        .map_err(|tail| failed(format!("debootstrap {DEBIAN_SUITE} from {mirror} failed (it needs root):\n{tail}")))?;
        tracing::info!(took = ?started.elapsed(), "debootstrap finished");

        let ca_dir = rootfs.join(HOST_CA_DIR.trim_start_matches('/'));
        std::fs::create_dir_all(&ca_dir)
            .map_err(|source| Error::Io { context: format!("creating {}", ca_dir.display()), source })?;
        for ca in host_ca_files()? {
            let Some(name) = ca.file_name() else { continue };
            std::fs::copy(&ca, ca_dir.join(name))
                .map_err(|source| Error::Io { context: format!("copying {}", ca.display()), source })?;
        }
        let script_in_root = rootfs.join("tmp").join("berth-configure.sh");
        std::fs::copy(configure_script(), &script_in_root)
            .map_err(|source| Error::Io { context: format!("copying to {}", script_in_root.display()), source })?;
        run_logged(
            "configure.sh",
            tokio::process::Command::new("chroot")
                .arg(&rootfs)
                .args(["/bin/sh", "/tmp/berth-configure.sh"])
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("LC_ALL", "C")
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .await
        .map_err(|tail| failed(format!("configure.sh in the chroot failed:\n{tail}")))?;
        let _ = std::fs::remove_file(&script_in_root);

        let partial = work.join("rootfs.tar.gz");
        run_logged(
            "tar",
            tokio::process::Command::new("tar")
                .arg("--numeric-owner")
                .arg("-C")
                .arg(&rootfs)
                .args(["--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*", "-I", "gzip -1", "-cf"])
                .arg(&partial)
                .arg("."),
        )
        .await
        .map_err(|tail| failed(format!("tar of the root filesystem failed:\n{tail}")))?;
        std::fs::rename(&partial, out)
            .map_err(|source| Error::Io { context: format!("moving the tarball to {}", out.display()), source })?;
        Ok::<(), Error>(())
    }
    .await;
    let cleaned = remove_work_dir(&work).await;
    result?;
    cleaned?;
    tracing::info!(rootfs = %out.display(), took = ?started.elapsed(), "made the root filesystem tarball");
    Ok(())
}

/// Removes a work directory, first unmounting anything a failed
/// debootstrap left mounted inside it (`proc`, `sys`), so removal never
/// reaches into the host's `/proc` or `/sys`.
async fn remove_work_dir(work: &Path) -> Result<(), Error> {
    if !work.exists() {
        return Ok(());
    }
    let prefix = format!("{}/", work.display());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> =
        mounts.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|p| p.starts_with(&prefix)).collect();
    // Deepest first.
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in &points {
        tracing::warn!(mount = %point, "unmounting what an earlier root filesystem build left mounted");
        let status = tokio::process::Command::new("umount").args(["-l", point]).status().await;
        if !status.is_ok_and(|s| s.success()) {
            return Err(Error::ImageBuild {
                image: REAL_BASE_REPO.to_owned(),
                detail: format!("cannot unmount {point}; not removing {}", work.display()),
            });
        }
    }
    tokio::fs::remove_dir_all(work)
        .await
        .map_err(|source| Error::Io { context: format!("removing {}", work.display()), source })
}

/// Runs `command`, logging each line it prints at `info`; on failure
/// returns its last lines (or why it could not start).
async fn run_logged(what: &'static str, command: &mut tokio::process::Command) -> Result<(), String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let mut pumps = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        pumps.push(tokio::spawn(pump_lines(what, stdout, Arc::clone(&tail))));
    }
    if let Some(stderr) = child.stderr.take() {
        pumps.push(tokio::spawn(pump_lines(what, stderr, Arc::clone(&tail))));
    }
    let status = child.wait().await.map_err(|e| format!("waiting for {what}: {e}"))?;
    for pump in pumps {
        let _ = pump.await;
    }
    if status.success() {
        return Ok(());
    }
    let tail = tail.lock().map(|t| Vec::from(t.clone()).join("\n")).unwrap_or_default();
    Err(format!("{what} exited with {status}; last output:\n{tail}"))
}

/// Logs every line of `reader` at `info` and keeps the last 40 in `tail`.
async fn pump_lines(what: &'static str, reader: impl tokio::io::AsyncRead + Unpin, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(step = %what, "{line}");
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == 40 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}

/// A build context: every file under `dir` (sorted, relative paths),
/// owned by root with mode 755 or 644 and time 0, so the same files give
/// the same bytes, hence the same tag.
fn context_tar(dir: &Path) -> Result<Vec<u8>, Error> {
    let mut files = Vec::new();
    crate::collect_files(dir, &mut files)?;
    files.sort();
    let io = |source| Error::Io { context: format!("packing the build context {}", dir.display()), source };
    let mut builder = tar::Builder::new(Vec::new());
    for file in &files {
        let rel = file.strip_prefix(dir).map_err(|e| io(std::io::Error::other(e)))?;
        let rel = rel.to_string_lossy().replace('\\', "/");
        let content = read(file)?;
        let executable = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(file).map_err(io)?.permissions().mode() & 0o111 != 0
        };
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(if executable { 0o755 } else { 0o644 });
        header.set_size(content.len() as u64);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        builder.append_data(&mut header, &rel, content.as_slice()).map_err(io)?;
    }
    builder.into_inner().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_app_with_distinct_references() {
        let plan = Plan::new().unwrap();
        assert!(plan.base_reference.starts_with("berth-real/base:"));
        for app in RealApp::ALL {
            let layer = plan.app(app);
            assert_eq!(layer.repo, app.repo());
            assert!(layer.reference.starts_with(&format!("{}:", app.repo())), "{}", layer.reference);
        }
        let mut refs: Vec<&str> = plan.apps.iter().map(|(_, l)| l.reference.as_str()).collect();
        refs.push(&plan.python.reference);
        refs.sort_unstable();
        refs.dedup();
        assert_eq!(refs.len(), 5);
        let listed = real_image_references().unwrap();
        assert_eq!(listed.len(), 6, "base, python and four apps: {listed:?}");
        assert!(listed.contains(&plan.base_reference) && listed.contains(&plan.app(RealApp::Shiny).reference));
    }

    #[test]
    fn context_tags_depend_on_content_and_parent() {
        let dir = std::env::temp_dir().join(format!("berth-testkit-ctx-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("Dockerfile"), "FROM x").unwrap();
        std::fs::write(dir.join("sub/a"), "a").unwrap();
        let a = context_tar(&dir).unwrap();
        assert_eq!(a, context_tar(&dir).unwrap(), "the context tar is deterministic");
        std::fs::rename(dir.join("sub/a"), dir.join("a")).unwrap();
        assert_ne!(a, context_tar(&dir).unwrap(), "paths count, not only names");
        let mut archive = tar::Archive::new(&a[..]);
        let names: Vec<String> =
            archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["Dockerfile", "sub/a"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn app_facts() {
        assert_eq!(RealApp::JupyterLab.port(), 8888);
        assert_eq!(RealApp::Streamlit.ready_path(), "/_stcore/health");
        assert_eq!(RealApp::Shiny.to_string(), "shiny");
        assert_eq!(RealApp::from_name("dash"), Some(RealApp::Dash));
        assert_eq!(RealApp::from_name("rstudio"), None);
        assert!(!RealApp::Shiny.on_python() && RealApp::Dash.on_python());
    }
}
