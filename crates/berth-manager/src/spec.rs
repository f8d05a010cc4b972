//! What to launch: [`ContainerSpec`] and the input document's delivery.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default HTTP port a tool listens on inside its container.
pub const DEFAULT_CONTAINER_PORT: u16 = 80;

/// Default CPU share of a container, in CPUs.
pub const DEFAULT_CPUS: f64 = 0.5;

/// Default path of the input document in mode [`InputMode::File`].
pub const DEFAULT_INPUT_PATH: &str = "/tmp/input.json";

/// Environment variable that holds the document in mode [`InputMode::Env`].
pub const ENV_INPUT_JSON: &str = "INPUT_JSON";

/// Environment variable that holds the document's URL in mode [`InputMode::Url`].
pub const ENV_INPUT_JSON_URL: &str = "INPUT_JSON_URL";

/// Environment variable that names the document's path in mode [`InputMode::File`].
///
/// Tools may ignore it and read their configured path; berth sets it so a
/// tool does not have to be told the path twice.
pub const ENV_INPUT_JSON_PATH: &str = "INPUT_JSON_PATH";

/// Environment variable of the test tool contract, read by the mock tool
/// and by the Docker test tool: milliseconds during which `GET /` answers
/// 503, as a slow-starting tool would. Not used by berth itself.
pub const ENV_STARTUP_DELAY_MS: &str = "BERTH_TOOL_STARTUP_DELAY_MS";

/// Largest document accepted in mode [`InputMode::Env`], in bytes.
///
/// Linux refuses to `exec` a process with any single environment string
/// longer than `MAX_ARG_STRLEN` (32 pages, 131072 bytes on x86-64), and the
/// string is `INPUT_JSON=<document>` plus a NUL. A larger document would
/// make the container fail at start with an obscure error, so it is refused
/// up front; use mode `file` or `url` for large documents.
pub const MAX_ENV_INPUT_BYTES: usize = 131_072 - ENV_INPUT_JSON.len() - 2;

/// Largest document accepted in modes [`InputMode::File`] and
/// [`InputMode::Url`], in bytes (64 MiB): a guard against accidents, not a
/// limit of the engine.
pub const MAX_FILE_INPUT_BYTES: usize = 64 * 1024 * 1024;

/// Largest memory reservation a spec may ask for, in MiB (16 TiB): far
/// above any real host, low enough that sums of reservations cannot
/// overflow.
pub const MAX_MEM_RESERVATION_MB: u64 = 16 * 1024 * 1024;

/// Shortest container name accepted (the Docker engine's own minimum).
pub const MIN_NAME_LEN: usize = 2;

/// Longest container name accepted: one DNS label.
pub const MAX_NAME_LEN: usize = 63;

/// How the input document reaches the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum InputMode {
    /// Environment variable `INPUT_JSON` holds the document.
    Env,
    /// Environment variable `INPUT_JSON_URL` holds this URL, where the
    /// document is served (typically by berth's staging store).
    Url {
        /// The URL, reachable from inside the container.
        url: String,
    },
    /// The document is written into the container's filesystem at `path`
    /// before the container starts (through the engine's archive API, so it
    /// works with a remote engine too).
    File {
        /// Absolute path inside the container.
        path: String,
    },
}

impl InputMode {
    /// Short name of the mode: `env`, `url` or `file`.
    pub fn as_str(&self) -> &'static str {
        match self {
            InputMode::Env => "env",
            InputMode::Url { .. } => "url",
            InputMode::File { .. } => "file",
        }
    }
}

/// An input document and how to deliver it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// The JSON document. Conventional keys (`file_relationships`,
    /// `node_info`, `parameters`, `api_prefix`, `extra_directories`) are
    /// passed through untouched.
    pub document: serde_json::Value,
    /// How the container receives it.
    #[serde(flatten)]
    pub mode: InputMode,
}

/// Everything needed to launch one tool container.
///
/// Build one with [`ContainerSpec::new`] and the chained setters, then hand
/// it to [`ContainerManager::launch`](crate::ContainerManager::launch),
/// which validates it before calling the engine.
///
/// ```
/// use berth_manager::ContainerSpec;
///
/// let spec = ContainerSpec::new("berth/debugger", "viz-1", 256)
///     .port(8080)
///     .label("owner", "alice")
///     .extra_directory("/data")
///     .input_env(serde_json::json!({"parameters": {"zoom": 2}}));
/// assert_eq!(spec.normalized_image(), "berth/debugger:latest");
/// assert!(spec.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Image reference; a missing tag means `:latest`.
    pub image: String,
    /// Container name: a lowercase DNS label (`a-z`, `0-9`, `-`; at most 63
    /// characters; no leading or trailing `-`), since it also routes by
    /// hostname.
    pub name: String,
    /// HTTP port the tool listens on inside the container.
    pub container_port: u16,
    /// Extra labels. Keys under the manager's root label are reserved.
    pub labels: BTreeMap<String, String>,
    /// CPU share in CPUs (converted to nano-CPUs for the engine).
    pub cpus: f64,
    /// Memory reservation in MiB (required; used by the memory budget).
    pub mem_reservation_mb: u64,
    /// Absolute paths inside the container that each get a fresh writable
    /// volume, removed with the container.
    pub extra_directories: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// The input document, if any.
    pub input: Option<Input>,
}

impl ContainerSpec {
    /// A spec with the defaults: port 80, 0.5 CPUs, no labels, no extra
    /// directories, no environment, no input.
    pub fn new(image: impl Into<String>, name: impl Into<String>, mem_reservation_mb: u64) -> Self {
        ContainerSpec {
            image: image.into(),
            name: name.into(),
            container_port: DEFAULT_CONTAINER_PORT,
            labels: BTreeMap::new(),
            cpus: DEFAULT_CPUS,
            mem_reservation_mb,
            extra_directories: Vec::new(),
            env: BTreeMap::new(),
            input: None,
        }
    }

    /// Sets the container port.
    pub fn port(mut self, port: u16) -> Self {
        self.container_port = port;
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the CPU share.
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = cpus;
        self
    }

    /// Adds an extra directory (absolute path) backed by a fresh volume.
    pub fn extra_directory(mut self, path: impl Into<String>) -> Self {
        self.extra_directories.push(path.into());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Delivers `document` in environment variable `INPUT_JSON`.
    pub fn input_env(mut self, document: serde_json::Value) -> Self {
        self.input = Some(Input { document, mode: InputMode::Env });
        self
    }

    /// Sets `INPUT_JSON_URL` to `url`, where `document` is served.
    pub fn input_url(mut self, document: serde_json::Value, url: impl Into<String>) -> Self {
        self.input = Some(Input { document, mode: InputMode::Url { url: url.into() } });
        self
    }

    /// Writes `document` into the container at `path` before it starts.
    pub fn input_file(mut self, document: serde_json::Value, path: impl Into<String>) -> Self {
        self.input = Some(Input { document, mode: InputMode::File { path: path.into() } });
        self
    }

    /// The image reference with `:latest` added when it has no tag or digest.
    pub fn normalized_image(&self) -> String {
        normalize_image(&self.image)
    }

    /// CPU share in nano-CPUs, as the engine wants it.
    pub fn nano_cpus(&self) -> i64 {
        // Validation bounds cpus to (0, 1024], so the product fits an i64.
        (self.cpus * 1e9).round() as i64
    }

    /// Checks the spec without calling any engine.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSpec`] naming the first problem found: bad name,
    /// empty or malformed image, port 0, CPUs not in (0, 1024], zero memory
    /// reservation, relative or duplicate extra directory, relative input
    /// path, environment key that is empty or contains `=`, or a URL-mode
    /// URL that is not http(s). [`Error::InputTooLarge`] when the document
    /// exceeds its mode's limit.
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        let name = self.name.as_str();
        if self.image.trim().is_empty() {
            return Err(Error::invalid(name, "image is empty"));
        }
        if self.image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(
                name,
                format!("image {:?} contains whitespace or control characters", self.image),
            ));
        }
        if self.container_port == 0 {
            return Err(Error::invalid(name, "container port must not be 0"));
        }
        if !(self.cpus.is_finite() && self.cpus > 0.0 && self.cpus <= 1024.0) {
            return Err(Error::invalid(name, format!("cpus must be in (0, 1024], got {}", self.cpus)));
        }
        if self.mem_reservation_mb == 0 {
            return Err(Error::invalid(name, "memory reservation (MB) is required and must be > 0"));
        }
        if self.mem_reservation_mb > MAX_MEM_RESERVATION_MB {
            return Err(Error::invalid(
                name,
                format!(
                    "memory reservation {} MB is over the {MAX_MEM_RESERVATION_MB} MB limit",
                    self.mem_reservation_mb
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for dir in &self.extra_directories {
            validate_container_path(name, "extra directory", dir)?;
            if dir == "/" {
                return Err(Error::invalid(name, "extra directory must not be \"/\""));
            }
            if !seen.insert(dir.trim_end_matches('/')) {
                return Err(Error::invalid(name, format!("extra directory {dir:?} is listed twice")));
            }
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(Error::invalid(name, format!("environment key {key:?} is not valid")));
            }
        }
        for (key, value) in &self.env {
            if value.contains('\0') {
                return Err(Error::invalid(name, format!("environment value of {key:?} contains NUL")));
            }
        }
        if let Some(input) = &self.input {
            let size = input_size(&input.document);
            let limit = match &input.mode {
                InputMode::Env => MAX_ENV_INPUT_BYTES,
                InputMode::File { path } => {
                    validate_container_path(name, "input path", path)?;
                    if path.ends_with('/') {
                        return Err(Error::invalid(name, format!("input path {path:?} names a directory")));
                    }
                    MAX_FILE_INPUT_BYTES
                }
                InputMode::Url { url } => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(Error::invalid(
                            name,
                            format!("input URL {url:?} must start with http:// or https://"),
                        ));
                    }
                    MAX_FILE_INPUT_BYTES
                }
            };
            if size > limit {
                return Err(Error::InputTooLarge { name: name.to_owned(), size, limit, mode: input.mode.as_str() });
            }
        }
        Ok(())
    }
}

/// Serialized size of a document in bytes.
fn input_size(document: &serde_json::Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing into a counter cannot fail; a failure would only undercount.
    let _ = serde_json::to_writer(&mut counter, document);
    counter.0
}

fn validate_container_path(name: &str, what: &str, path: &str) -> Result<()> {
    if !path.starts_with('/') {
        return Err(Error::invalid(name, format!("{what} {path:?} is not an absolute path")));
    }
    if path.contains('\0') {
        return Err(Error::invalid(name, format!("{what} {path:?} contains NUL")));
    }
    if path.split('/').any(|part| part == ".." || part == ".") {
        return Err(Error::invalid(name, format!("{what} {path:?} contains . or .. components")));
    }
    if path.contains(':') || path.contains(',') {
        // `:` separates bind fields and `,` mount options in the engine's syntax.
        return Err(Error::invalid(name, format!("{what} {path:?} contains ':' or ','")));
    }
    Ok(())
}

/// Checks that `name` is a valid container name: a lowercase DNS label of
/// at least two characters (the Docker engine refuses one-character names).
///
/// # Errors
///
/// [`Error::InvalidSpec`] saying which rule is broken.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(name, "name is empty"));
    }
    if name.len() < MIN_NAME_LEN {
        return Err(Error::invalid(name, format!("name must be at least {MIN_NAME_LEN} characters long")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            name,
            format!("name is {} characters long, at most {MAX_NAME_LEN} allowed", name.len()),
        ));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(Error::invalid(name, format!("name may contain only a-z, 0-9 and '-', found {bad:?}")));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(Error::invalid(name, "name must not start or end with '-'"));
    }
    Ok(())
}

/// Adds `:latest` to an image reference that has neither tag nor digest.
///
/// A colon inside the registry part (`localhost:5000/tool`) is a port, not
/// a tag.
///
/// ```
/// use berth_manager::normalize_image;
/// assert_eq!(normalize_image("tool"), "tool:latest");
/// assert_eq!(normalize_image("tool:1.2"), "tool:1.2");
/// assert_eq!(normalize_image("localhost:5000/tool"), "localhost:5000/tool:latest");
/// assert_eq!(normalize_image("tool@sha256:abc"), "tool@sha256:abc");
/// ```
pub fn normalize_image(image: &str) -> String {
    let image = image.trim();
    if image.contains('@') {
        return image.to_owned();
    }
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    if last_segment.contains(':') { image.to_owned() } else { format!("{image}:latest") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> ContainerSpec {
        ContainerSpec::new("tool", "viz-1", 100)
    }

    #[test]
    fn names() {
        for ok in ["ab", "viz-1", "0abc", "00", &"a".repeat(63)] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "a", "0", "-a", "a-", "Viz", "a_b", "a.b", "a/b", "..", "a b", &"a".repeat(64), "é"] {
            let err = validate_name(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidSpec { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn image_normalization() {
        assert_eq!(normalize_image("a/b"), "a/b:latest");
        assert_eq!(normalize_image("a/b:c"), "a/b:c");
        assert_eq!(normalize_image("reg:1/a/b"), "reg:1/a/b:latest");
    }

    #[test]
    fn nano_cpus() {
        assert_eq!(spec().nano_cpus(), 500_000_000);
        assert_eq!(spec().cpus(2.0).nano_cpus(), 2_000_000_000);
    }

    #[test]
    fn bad_specs() {
        let cases: Vec<(ContainerSpec, &str)> = vec![
            (spec().extra_directory("data"), "not an absolute path"),
            (spec().extra_directory("/a/../b"), ". or .."),
            (spec().extra_directory("/a").extra_directory("/a/"), "twice"),
            (spec().extra_directory("/"), "must not be"),
            (spec().port(0), "port"),
            (spec().cpus(0.0), "cpus"),
            (spec().cpus(f64::NAN), "cpus"),
            (ContainerSpec::new("tool", "xy", 0), "memory"),
            (ContainerSpec::new("tool", "xy", MAX_MEM_RESERVATION_MB + 1), "over the"),
            (ContainerSpec::new(" ", "xy", 1), "image is empty"),
            (ContainerSpec::new("a b", "xy", 1), "whitespace"),
            (spec().env("A=B", "c"), "environment key"),
            (spec().input_file(json!({}), "tmp/input.json"), "not an absolute"),
            (spec().input_file(json!({}), "/tmp/"), "directory"),
            (spec().input_url(json!({}), "ftp://x"), "http"),
        ];
        for (spec, needle) in cases {
            let err = spec.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn env_input_limit() {
        let doc = json!({"blob": "x".repeat(MAX_ENV_INPUT_BYTES)});
        let err = spec().input_env(doc.clone()).validate().unwrap_err();
        assert!(matches!(err, Error::InputTooLarge { mode: "env", .. }), "{err}");
        // The same document is fine as a file.
        spec().input_file(doc, DEFAULT_INPUT_PATH).validate().unwrap();
        // Exactly at the limit is accepted.
        let pad = MAX_ENV_INPUT_BYTES - input_size(&json!({"b": ""}));
        spec().input_env(json!({"b": "y".repeat(pad)})).validate().unwrap();
    }

    #[test]
    fn input_serde_shape() {
        let input = Input { document: json!({"a": 1}), mode: InputMode::File { path: "/tmp/input.json".into() } };
        let v = serde_json::to_value(&input).unwrap();
        assert_eq!(v, json!({"document": {"a": 1}, "mode": "file", "path": "/tmp/input.json"}));
    }
}
