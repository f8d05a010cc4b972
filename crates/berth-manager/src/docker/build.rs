//! Image builds through the engine's build API (`POST /build`, the
//! classic builder every engine has): a Dockerfile and its context as a
//! tar, no registry and no Docker CLI involved.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use bollard::query_parameters::BuildImageOptions;
use bytes::Bytes;
use futures_util::StreamExt;

use super::DockerManager;
use crate::error::{Error, Result};

/// How long a build may go without a line of output before it is given
/// up: build steps (a `pip install`, an `apt-get install`) print as they
/// go, so ten silent minutes mean a hung step.
pub const BUILD_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Lines of build output kept for [`Error::BuildFailed`].
pub const BUILD_LOG_TAIL_LINES: usize = 40;

/// An image made by [`DockerManager::build_image`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The `repo:tag` reference it was tagged with.
    pub reference: String,
    /// The engine's image id (`sha256:...`), as inspecting the tag
    /// reported it.
    pub id: Option<String>,
}

/// What to build: the tag, build arguments and labels of one
/// [`DockerManager::build_image`] call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageBuild {
    /// `repo:tag` the image gets.
    pub reference: String,
    /// Path of the Dockerfile inside the context; `Dockerfile` when empty.
    pub dockerfile: String,
    /// Values of the Dockerfile's `ARG`s (`--build-arg`), e.g. the base
    /// image for `ARG BASE` / `FROM ${BASE}`.
    pub build_args: BTreeMap<String, String>,
    /// Labels put on the image (`--label`).
    pub labels: BTreeMap<String, String>,
}

impl ImageBuild {
    /// A build tagged `reference`, with the context's `Dockerfile`, no
    /// build arguments and no labels.
    pub fn new(reference: impl Into<String>) -> Self {
        ImageBuild { reference: reference.into(), ..Default::default() }
    }

    /// Adds build argument `key=value`.
    pub fn build_arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.build_args.insert(key.into(), value.into());
        self
    }

    /// Adds label `key=value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

impl DockerManager {
    /// Builds an image from `context_tar` (a tar of the build context, with
    /// the Dockerfile in it) with the engine's classic builder, as
    /// `docker build` does, and tags it `build.reference`.
    ///
    /// The build's output is logged line by line at `info` (target
    /// `berth_manager::docker::build`, field `image`). Base images must be
    /// on the engine already or pullable; the builder removes its
    /// intermediate containers, also when a step fails. The whole build has
    /// no deadline (builds take minutes), but going
    /// [`BUILD_IDLE_TIMEOUT`] without output fails it.
    ///
    /// # Errors
    ///
    /// [`Error::BuildFailed`] when a step fails, the Dockerfile is refused
    /// or the output stalls, with the engine's message and the last
    /// [`BUILD_LOG_TAIL_LINES`] lines of output; [`Error::EngineUnavailable`]
    /// when the engine cannot be reached.
    pub async fn build_image(&self, context_tar: Bytes, build: &ImageBuild) -> Result<BuiltImage> {
        let reference = build.reference.clone();
        let to_map = |m: &BTreeMap<String, String>| -> HashMap<String, String> {
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let options = BuildImageOptions {
            dockerfile: if build.dockerfile.is_empty() { "Dockerfile".to_owned() } else { build.dockerfile.clone() },
            t: Some(reference.clone()),
            rm: true,
            forcerm: true,
            buildargs: (!build.build_args.is_empty()).then(|| to_map(&build.build_args)),
            labels: (!build.labels.is_empty()).then(|| to_map(&build.labels)),
            ..Default::default()
        };
        tracing::info!(image = %reference, context_bytes = context_tar.len(), "building image");
        let mut stream = self.docker.build_image(options, None, Some(bollard::body_full(context_tar)));
        let mut log = LogTail::default();
        loop {
            let item = match tokio::time::timeout(BUILD_IDLE_TIMEOUT, stream.next()).await {
                Err(_) => {
                    return Err(Error::BuildFailed {
                        image: reference,
                        message: format!("no build output for {BUILD_IDLE_TIMEOUT:?}"),
                        log_tail: log.text(),
                    });
                }
                Ok(None) => break,
                Ok(Some(item)) => item,
            };
            match item {
                Ok(info) => {
                    for text in [info.stream.as_deref(), info.status.as_deref()].into_iter().flatten() {
                        log.push(&reference, text);
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(Error::BuildFailed { image: reference, message: error, log_tail: log.text() });
                }
                Err(e) => {
                    return Err(match self.classify("build image", &reference, e) {
                        unavailable @ (Error::EngineUnavailable { .. } | Error::EngineTimeout { .. }) => unavailable,
                        other => {
                            Error::BuildFailed { image: reference, message: other.to_string(), log_tail: log.text() }
                        }
                    });
                }
            }
        }
        // A build that ends without an error has tagged the image; check
        // rather than trust a stream that may have been cut short. The id
        // comes from this inspection, not from the stream's `aux` record,
        // whose type changes with bollard's `buildkit` feature (which
        // testcontainers turns on in test builds).
        let id = match self.call("inspect image", &reference, self.docker.inspect_image(&reference)).await {
            Ok(image) => image.id,
            Err(Error::NotFound { .. }) => {
                return Err(Error::BuildFailed {
                    image: reference,
                    message: "the build ended without producing the image".to_owned(),
                    log_tail: log.text(),
                });
            }
            Err(e) => return Err(e),
        };
        tracing::info!(image = %reference, id = id.as_deref().unwrap_or("?"), "built image");
        Ok(BuiltImage { reference, id })
    }
}

/// The last [`BUILD_LOG_TAIL_LINES`] lines of a build's output.
#[derive(Debug, Default)]
struct LogTail {
    lines: VecDeque<String>,
    /// A line not yet ended by a newline (the engine splits output freely).
    partial: String,
}

impl LogTail {
    /// Adds a chunk of output, logging each completed line.
    fn push(&mut self, image: &str, chunk: &str) {
        self.partial.push_str(chunk);
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            self.keep(image, line.trim_end());
        }
    }

    fn keep(&mut self, image: &str, line: &str) {
        if line.is_empty() {
            return;
        }
        tracing::info!(target: "berth_manager::docker::build", image = %image, "{line}");
        if self.lines.len() == BUILD_LOG_TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line.to_owned());
    }

    /// The kept lines (and any unfinished one), newline-separated.
    fn text(&mut self) -> String {
        let rest = std::mem::take(&mut self.partial);
        self.keep("", rest.trim_end());
        self.lines.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_joins_split_lines_and_keeps_the_last() {
        let mut tail = LogTail::default();
        tail.push("i", "Step 1/2 : FROM x\n ---> ab");
        tail.push("i", "c\nStep 2/2");
        assert_eq!(tail.text(), "Step 1/2 : FROM x\n ---> abc\nStep 2/2");
        let mut tail = LogTail::default();
        for n in 0..100 {
            tail.push("i", &format!("line {n}\n"));
        }
        let text = tail.text();
        assert_eq!(text.lines().count(), BUILD_LOG_TAIL_LINES);
        assert!(text.ends_with("line 99") && text.starts_with("line 60"), "{text}");
    }

    #[test]
    fn build_builder() {
        let b = ImageBuild::new("r:t").build_arg("BASE", "b:1").label("k", "v");
        assert_eq!(b.reference, "r:t");
        assert_eq!(b.build_args.get("BASE").map(String::as_str), Some("b:1"));
        assert_eq!(b.labels.get("k").map(String::as_str), Some("v"));
    }
}
