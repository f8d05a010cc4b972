//! [`StagingUrls`]: the URLs a container fetches its staged objects from.

use std::sync::Arc;

use crate::name::encode_segment;
use crate::object::INPUT_FILE_NAME;
use crate::serve::{DEFAULT_PREFIX, normalize_prefix};
use crate::token::Token;

/// Host name under which a container reaches the host running berth,
/// through the engine's host-gateway mapping (Docker Desktop has it
/// built in; on Linux the container needs
/// `--add-host host.docker.internal:host-gateway`).
pub const HOST_GATEWAY_HOST: &str = "host.docker.internal";

/// Builds the URLs under which a container finds its staged objects, as
/// served by a [`StagingService`](crate::StagingService) with the same
/// prefix.
///
/// ```
/// use berth_staging::{StagingUrls, Token};
///
/// let urls = StagingUrls::host_gateway(8000);
/// let token = Token::generate();
/// assert_eq!(
///     urls.input_url(&token),
///     format!("http://host.docker.internal:8000/_berth/staged/{token}/input.json"),
/// );
/// assert!(urls.file_url(&token, "a b.csv").ends_with("/files/a%20b.csv"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingUrls {
    public_base: Arc<str>,
    prefix: Arc<str>,
}

impl StagingUrls {
    /// URLs below `public_base` (scheme, host, optional port and path, as
    /// a container sees the host: `http://10.0.0.5:8000`, with or without
    /// a trailing `/`), with the default prefix.
    pub fn new(public_base: impl AsRef<str>) -> Self {
        StagingUrls {
            public_base: Arc::from(public_base.as_ref().trim_end_matches('/')),
            prefix: normalize_prefix(DEFAULT_PREFIX),
        }
    }

    /// The default: `http://host.docker.internal:<port>`, the host as seen
    /// from a container through the engine's host-gateway mapping.
    pub fn host_gateway(port: u16) -> Self {
        StagingUrls::new(format!("http://{HOST_GATEWAY_HOST}:{port}"))
    }

    /// Uses `prefix` instead of [`DEFAULT_PREFIX`]; it must be the one
    /// the serving [`StagingService`](crate::StagingService) uses.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = normalize_prefix(prefix);
        self
    }

    /// The base URL, without a trailing `/`.
    pub fn public_base(&self) -> &str {
        &self.public_base
    }

    /// The URL of the input document of the container holding `token`.
    pub fn input_url(&self, token: &Token) -> String {
        format!("{}/{INPUT_FILE_NAME}", self.token_url(token))
    }

    /// The URL of data file `name` (percent-encoded into one path segment)
    /// of the container holding `token`.
    pub fn file_url(&self, token: &Token, name: &str) -> String {
        format!("{}/files/{}", self.token_url(token), encode_segment(name))
    }

    /// The URL all of a token's objects are below, without a trailing `/`.
    pub fn token_url(&self, token: &Token) -> String {
        format!("{}{}/{}", self.public_base, self.prefix, token.as_str())
    }
}
