//! Staged objects: their keys, metadata, byte streams and ranges.

use std::fmt;
use std::ops::Range;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::error::{BoxError, Error, Result};
use crate::name::validate_file_name;

/// Bytes going into a store: a stream of chunks that may fail.
pub type ByteStream = BoxStream<'static, Result<Bytes, BoxError>>;

/// Bytes coming out of a store, in chunks of bounded size.
pub type ObjectStream = BoxStream<'static, Result<Bytes>>;

/// File name of the input document, on disk and in URLs.
pub const INPUT_FILE_NAME: &str = "input.json";

/// Which object of a container: its input document or one data file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKey {
    /// The container's input document (`input.json`).
    Input,
    /// A data file, by name (see [`validate_file_name`]).
    File(String),
}

impl ObjectKey {
    /// The key of data file `name`.
    pub fn file(name: impl Into<String>) -> Self {
        ObjectKey::File(name.into())
    }

    /// The data file's name, `None` for the input document.
    pub fn file_name(&self) -> Option<&str> {
        match self {
            ObjectKey::Input => None,
            ObjectKey::File(name) => Some(name),
        }
    }

    /// Checks the file name of a [`ObjectKey::File`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name [`validate_file_name`] refuses.
    pub fn validate(&self) -> Result<()> {
        match self {
            ObjectKey::Input => Ok(()),
            ObjectKey::File(name) => validate_file_name(name),
        }
    }

    /// The media type the object is served with: `application/json` for
    /// the input document, [`content_type_for`] of the name for files.
    pub fn content_type(&self) -> &'static str {
        match self {
            ObjectKey::Input => "application/json",
            ObjectKey::File(name) => content_type_for(name),
        }
    }

    /// The object in words, for error messages.
    pub(crate) fn describe(&self, container: &str) -> String {
        match self {
            ObjectKey::Input => format!("input document of container {container:?}"),
            ObjectKey::File(name) => format!("file {name:?} of container {container:?}"),
        }
    }
}

impl fmt::Display for ObjectKey {
    /// `input.json` or `files/<name>`, the object's path below a container.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::Input => f.write_str(INPUT_FILE_NAME),
            ObjectKey::File(name) => write!(f, "files/{name}"),
        }
    }
}

/// Guesses a media type from a file name's extension (case-insensitive):
/// csv, tsv, json, txt, html/htm, png, jpg/jpeg, svg; anything else is
/// `application/octet-stream`.
///
/// ```
/// use berth_staging::content_type_for;
/// assert_eq!(content_type_for("counts.CSV"), "text/csv; charset=utf-8");
/// assert_eq!(content_type_for("matrix.h5"), "application/octet-stream");
/// ```
pub fn content_type_for(name: &str) -> &'static str {
    let Some((_, ext)) = name.rsplit_once('.') else {
        return "application/octet-stream";
    };
    match ext.to_ascii_lowercase().as_str() {
        "csv" => "text/csv; charset=utf-8",
        "tsv" => "text/tab-separated-values; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

/// What a store knows about one staged object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectMeta {
    /// Which object.
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// Media type, from [`ObjectKey::content_type`].
    pub content_type: &'static str,
    /// Strong entity tag, quoted as in HTTP (`"…"`); it changes whenever
    /// the content does.
    pub etag: String,
    /// When the object was last written.
    pub modified: SystemTime,
}

impl ObjectMeta {
    /// Metadata for `key`, with the content type derived from the key.
    pub fn new(key: ObjectKey, size: u64, etag: String, modified: SystemTime) -> Self {
        let content_type = key.content_type();
        ObjectMeta { key, size, content_type, etag, modified }
    }
}

/// The strong entity tag of content whose SHA-256 digest is `digest`:
/// the first 128 bits in hex, quoted.
pub fn etag_from_digest(digest: &[u8]) -> String {
    let n = digest.len().min(16);
    format!("\"{}\"", hex::encode(&digest[..n]))
}

/// Reads an opened object as a stream: what a backend hands
/// [`StagedObject`] so that metadata and bytes come from the same version
/// of the object even when it is overwritten meanwhile.
pub trait ObjectSource: Send {
    /// Streams bytes `range` of the object. The range was checked against
    /// the object's size before this is called.
    fn read(self: Box<Self>, range: Range<u64>) -> ObjectStream;
}

/// An opened staged object: its metadata and, on demand, its bytes.
pub struct StagedObject {
    meta: ObjectMeta,
    object: String,
    source: Box<dyn ObjectSource>,
}

impl fmt::Debug for StagedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagedObject").field("meta", &self.meta).finish_non_exhaustive()
    }
}

impl StagedObject {
    /// An opened object of `container`; backends call this from
    /// [`StagingStore::get`](crate::StagingStore::get).
    pub fn new(container: &str, meta: ObjectMeta, source: Box<dyn ObjectSource>) -> Self {
        let object = meta.key.describe(container);
        StagedObject { meta, object, source }
    }

    /// The object's metadata.
    pub fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    /// All bytes of the object, as a stream.
    pub fn into_stream(self) -> ObjectStream {
        let size = self.meta.size;
        self.source.read(0..size)
    }

    /// Bytes `range` of the object, as a stream.
    ///
    /// # Errors
    ///
    /// [`Error::RangeNotSatisfiable`] when the range is empty, reversed or
    /// reaches past the end.
    pub fn into_range_stream(self, range: Range<u64>) -> Result<ObjectStream> {
        if range.start >= range.end || range.end > self.meta.size {
            return Err(Error::RangeNotSatisfiable {
                object: self.object,
                start: range.start,
                end: range.end,
                size: self.meta.size,
            });
        }
        Ok(self.source.read(range))
    }

    /// All bytes of the object, collected in memory. Meant for small
    /// objects such as input documents and for tests.
    ///
    /// # Errors
    ///
    /// Whatever reading the object fails with (usually [`Error::Io`]).
    pub async fn into_bytes(self) -> Result<Bytes> {
        let capacity = usize::try_from(self.meta.size).unwrap_or(0);
        let chunks: Vec<Bytes> = self.into_stream().try_collect().await?;
        if chunks.len() == 1 {
            return Ok(chunks.into_iter().next().unwrap_or_default());
        }
        let mut all = Vec::with_capacity(capacity);
        for chunk in chunks {
            all.extend_from_slice(&chunk);
        }
        Ok(all.into())
    }
}

/// One HTTP byte range as written in a `Range` header, before it is
/// resolved against an object's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b`: from `a` to `b`, both inclusive.
    FromTo(u64, u64),
    /// `bytes=a-`: from `a` to the end.
    From(u64),
    /// `bytes=-n`: the last `n` bytes.
    Last(u64),
}

impl ByteRange {
    /// Parses a `Range` header holding exactly one byte range; `None` for
    /// anything else (other units, several ranges, bad syntax), which HTTP
    /// servers ignore and answer with the whole object.
    ///
    /// ```
    /// use berth_staging::ByteRange;
    /// assert_eq!(ByteRange::parse("bytes=0-99"), Some(ByteRange::FromTo(0, 99)));
    /// assert_eq!(ByteRange::parse("bytes=-5"), Some(ByteRange::Last(5)));
    /// assert_eq!(ByteRange::parse("bytes=0-1,5-6"), None);
    /// ```
    pub fn parse(header: &str) -> Option<Self> {
        let spec = header.trim().strip_prefix("bytes=")?.trim();
        let (first, last) = spec.split_once('-')?;
        let number = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        match (first.is_empty(), last.is_empty()) {
            (true, true) => None,
            (true, false) => Some(ByteRange::Last(number(last)?)),
            (false, true) => Some(ByteRange::From(number(first)?)),
            (false, false) => {
                let (a, b) = (number(first)?, number(last)?);
                (a <= b).then_some(ByteRange::FromTo(a, b))
            }
        }
    }

    /// The half-open range of bytes this selects in an object of `size`
    /// bytes, or `None` when it selects none (HTTP 416).
    ///
    /// ```
    /// use berth_staging::ByteRange;
    /// assert_eq!(ByteRange::FromTo(2, 999).resolve(10), Some(2..10));
    /// assert_eq!(ByteRange::Last(3).resolve(10), Some(7..10));
    /// assert_eq!(ByteRange::From(10).resolve(10), None);
    /// ```
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        match self {
            ByteRange::FromTo(a, b) if a < size && a <= b => Some(a..b.min(size - 1) + 1),
            ByteRange::From(a) if a < size => Some(a..size),
            ByteRange::Last(n) if n > 0 && size > 0 => Some(size - n.min(size)..size),
            _ => None,
        }
    }
}

/// Counts and hashes the bytes of a write and enforces the size limit,
/// for every backend alike.
pub(crate) struct Intake {
    hasher: Sha256,
    size: u64,
    limit: u64,
}

impl Intake {
    pub(crate) fn new(limit: u64) -> Self {
        Intake { hasher: Sha256::new(), size: 0, limit }
    }

    /// Accounts for `chunk`, refusing it when it would cross the limit, so
    /// that nothing past the limit is ever written.
    pub(crate) fn accept(&mut self, chunk: &[u8], object: impl FnOnce() -> String) -> Result<()> {
        let size = self.size.saturating_add(chunk.len() as u64);
        if size > self.limit {
            return Err(Error::TooLarge { object: object(), limit: self.limit });
        }
        self.size = size;
        self.hasher.update(chunk);
        Ok(())
    }

    /// Size and strong entity tag of everything accepted.
    pub(crate) fn finish(self) -> (u64, String) {
        (self.size, etag_from_digest(&self.hasher.finalize()))
    }
}

/// Maps a source stream's error into [`Error::Source`].
pub(crate) fn source_error(object: String, source: BoxError) -> Error {
    Error::Source { object, source }
}

/// Chunks a buffer into a stream of slices of at most `chunk` bytes,
/// without copying.
pub(crate) fn chunked(data: Bytes, chunk: usize) -> ObjectStream {
    let len = data.len();
    futures_util::stream::iter((0..len).step_by(chunk.max(1)))
        .map(move |start| Ok(data.slice(start..(start + chunk).min(len))))
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        assert_eq!(ByteRange::parse("bytes=5-"), Some(ByteRange::From(5)));
        assert_eq!(ByteRange::parse(" bytes= 1-2 "), Some(ByteRange::FromTo(1, 2)));
        for bad in [
            "bytes=",
            "bytes=-",
            "bytes=2-1",
            "bytes=a-1",
            "bytes=+1-2",
            "items=0-1",
            "bytes=0-1,2-3",
            "bytes=1",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(ByteRange::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ranges_resolve() {
        assert_eq!(ByteRange::FromTo(0, 0).resolve(1), Some(0..1));
        assert_eq!(ByteRange::FromTo(0, 0).resolve(0), None);
        assert_eq!(ByteRange::From(0).resolve(0), None);
        assert_eq!(ByteRange::Last(0).resolve(10), None);
        assert_eq!(ByteRange::Last(20).resolve(10), Some(0..10));
        assert_eq!(ByteRange::Last(1).resolve(0), None);
        assert_eq!(ByteRange::FromTo(9, u64::MAX).resolve(10), Some(9..10));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type_for("a.tsv"), "text/tab-separated-values; charset=utf-8");
        assert_eq!(content_type_for("a.JPEG"), "image/jpeg");
        assert_eq!(content_type_for("a.svg"), "image/svg+xml");
        assert_eq!(content_type_for("noext"), "application/octet-stream");
        assert_eq!(content_type_for("a.tar.gz"), "application/octet-stream");
        assert_eq!(ObjectKey::Input.content_type(), "application/json");
    }

    #[test]
    fn intake_limits() {
        let mut intake = Intake::new(4);
        assert!(intake.accept(b"ab", String::new).is_ok());
        assert!(intake.accept(b"cd", String::new).is_ok());
        assert!(intake.accept(b"e", String::new).unwrap_err().is_too_large());
        let (size, etag) = intake.finish();
        assert_eq!(size, 4);
        assert_eq!(etag.len(), 34);
    }
}
