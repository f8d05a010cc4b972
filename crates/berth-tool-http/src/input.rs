//! The tool's input document: from `INPUT_JSON`, fetched from
//! `INPUT_JSON_URL` with the [`Client`], or read from the file at
//! `INPUT_JSON_PATH` (default `/tmp/input.json`), in that order of
//! precedence, as berth's three input modes (env, url, file) deliver it.
//!
//! ```no_run
//! use berth_tool_http::{client::Client, input};
//!
//! match input::load(&Client::new("my-tool")) {
//!     Ok(document) => println!("{} bytes of input", document.len()),
//!     Err(e) => eprintln!("{e}"),
//! }
//! ```

use std::io;

use crate::Error;
use crate::client::Client;

/// Environment variable holding the document itself (mode `env`).
pub const ENV_INPUT_JSON: &str = "INPUT_JSON";
/// Environment variable holding a URL to fetch the document from (mode `url`).
pub const ENV_INPUT_JSON_URL: &str = "INPUT_JSON_URL";
/// Environment variable holding the path of the document's file (mode `file`).
pub const ENV_INPUT_JSON_PATH: &str = "INPUT_JSON_PATH";
/// Where the document is read from when no variable says otherwise.
pub const DEFAULT_INPUT_PATH: &str = "/tmp/input.json";

/// Reads the input document's bytes (anew on every call, so a tool that
/// calls it per request sees changes), or says why there is none.
///
/// # Errors
///
/// The fetch from `INPUT_JSON_URL` failed, or the file could not be read
/// (a missing file says that no variable and no file gave an input).
pub fn load(client: &Client) -> Result<Vec<u8>, Error> {
    if let Some(doc) = std::env::var_os(ENV_INPUT_JSON) {
        return Ok(doc.into_encoded_bytes());
    }
    if let Some(url) = std::env::var_os(ENV_INPUT_JSON_URL) {
        let url = url.to_string_lossy();
        return client.get(&url).map_err(|e| Error::new(format!("fetching {ENV_INPUT_JSON_URL} {url}: {e}")));
    }
    let path = std::env::var_os(ENV_INPUT_JSON_PATH).unwrap_or_else(|| DEFAULT_INPUT_PATH.into());
    std::fs::read(&path).map_err(|e| {
        let path = path.to_string_lossy();
        Error::new(if e.kind() == io::ErrorKind::NotFound {
            format!("no input: no {ENV_INPUT_JSON}, no {ENV_INPUT_JSON_URL}, no file {path}")
        } else {
            format!("reading input file {path}: {e}")
        })
    })
}
