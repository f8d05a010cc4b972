//! berth-staging: keep the input document and data files of each tool
//! container, and serve them to that container over HTTP.
//!
//! A tool container gets its input by URL (`INPUT_JSON_URL`): the host
//! stages the document (and any data files it refers to) here, issues the
//! container a token, and hands it the URL. The crate is a bottom layer of
//! berth, next to `berth-manager`; it speaks hyper's `http` types and
//! tower's `Service` (never axum). It has:
//!
//! - the [`StagingStore`] trait (object safe, used as
//!   `Arc<dyn StagingStore>`): stage from a stream, open as a stream with
//!   metadata (size, content type, strong ETag, modification time), list,
//!   delete one object or everything of a container; conveniences in
//!   [`StagingStoreExt`];
//! - two backends: [`LocalDirStore`] (a directory, atomic writes that
//!   survive crashes) and [`MemoryStore`];
//! - [`TokenRegistry`]: unguessable per-container [`Token`]s, revoked when
//!   the container goes;
//! - [`StagingService`]: the public, token-authenticated `GET`/`HEAD`
//!   service with ETags, 304s and ranges; [`UploadService`]: the streaming
//!   upload service, for the host to mount behind its own authentication;
//! - [`StagingUrls`]: the URLs a container fetches from;
//! - the crate's one [`Error`] enum.
//!
//! Feature `conformance` adds the module `conformance`: the contract checks every
//! backend passes.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use berth_staging::{MemoryStore, StagingService, StagingStoreExt, StagingUrls, TokenRegistry};
//! use http_body_util::BodyExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), berth_staging::BoxError> {
//! let store = Arc::new(MemoryStore::new());
//! let tokens = TokenRegistry::new();
//!
//! // Stage the input of container "viz-1" and one data file, from a stream.
//! store.put_input_json("viz-1", &serde_json::json!({"parameters": {"zoom": 2}})).await?;
//! let lines = ["gene,count\n", "tp53,7\n"].map(|line| Ok::<_, std::io::Error>(bytes::Bytes::from(line)));
//! let chunks = futures_util::stream::iter(lines);
//! let meta = store.put_file("viz-1", "counts.csv", chunks).await?;
//! assert_eq!((meta.size, meta.content_type), (18, "text/csv; charset=utf-8"));
//!
//! // The container is told where to fetch them.
//! let token = tokens.issue("viz-1")?;
//! let urls = StagingUrls::host_gateway(8000);
//! let input_url = urls.input_url(&token);
//! assert!(input_url.starts_with("http://host.docker.internal:8000/_berth/staged/"));
//!
//! // The service answers that URL's path.
//! let service = StagingService::new(store.clone(), tokens.clone());
//! let path = input_url.trim_start_matches(urls.public_base());
//! let response = service.handle(http::Request::get(path).body(())?).await;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.headers()["content-type"], "application/json");
//! let body = response.into_body().collect().await?.to_bytes();
//! assert_eq!(&body[..], br#"{"parameters":{"zoom":2}}"#);
//!
//! // When the container is removed, its token and its files go too.
//! assert!(service.remove_container("viz-1").await?);
//! let response = service.handle(http::Request::get(path).body(())?).await;
//! assert_eq!(response.status(), 404);
//! # Ok(())
//! # }
//! ```

mod body;
mod error;
mod local;
mod memory;
mod name;
mod object;
mod serve;
mod store;
mod token;
mod upload;
mod urls;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use body::StagingBody;
pub use error::{BoxError, Error, Result};
pub use local::LocalDirStore;
pub use memory::MemoryStore;
pub use name::{MAX_CONTAINER_NAME_LEN, MAX_FILE_NAME_LEN, validate_container_name, validate_file_name};
pub use object::{
    ByteRange, ByteStream, INPUT_FILE_NAME, ObjectKey, ObjectMeta, ObjectSource, ObjectStream, StagedObject,
    content_type_for, etag_from_digest,
};
pub use serve::{DEFAULT_PREFIX, StagingService};
pub use store::{Capabilities, DEFAULT_MAX_FILE_SIZE, StagingStore, StagingStoreExt, reader_stream};
pub use token::{Token, TokenRegistry};
pub use upload::{DEFAULT_UPLOAD_PREFIX, UploadService};
pub use urls::{HOST_GATEWAY_HOST, StagingUrls};
