//! The [`StagingStore`] trait, its extension trait and forwarding impls.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{BoxError, Error, Result};
use crate::object::{ByteStream, ObjectKey, ObjectMeta, StagedObject};

/// Default largest object a store accepts: 1 GiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 30;

/// What a backend can and cannot do, declared rather than hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Short name of the backend (`local-dir`, `memory`).
    pub backend: &'static str,
    /// True when staged objects outlive the process, so a new store on the
    /// same location finds them again.
    pub durable: bool,
}

impl Capabilities {
    /// Capabilities with the given backend name and durability.
    pub const fn new(backend: &'static str, durable: bool) -> Self {
        Capabilities { backend, durable }
    }
}

/// Keeps, for each container (named by its container name, a lowercase
/// DNS label), an input document and any number of data files.
///
/// Object safe: use it as `Arc<dyn StagingStore>`. Writes take a stream of
/// chunks and never need the whole object in memory; reads hand back a
/// stream. A write either replaces the object whole or leaves the previous
/// version in place: readers never see a partly written object, and a
/// write that fails (too large, source error, I/O error) leaves nothing
/// behind.
///
/// Every method checks names first ([`validate_container_name`],
/// [`validate_file_name`]) and refuses bad ones with
/// [`Error::InvalidName`] before the backend is touched.
///
/// [`validate_container_name`]: crate::validate_container_name
/// [`validate_file_name`]: crate::validate_file_name
#[async_trait]
pub trait StagingStore: Send + Sync {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Largest object, in bytes, that [`put`](Self::put) accepts.
    fn max_file_size(&self) -> u64;

    /// Writes object `key` of `container` from `body`, replacing any
    /// previous version atomically.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::TooLarge`] as soon as `body` goes
    /// past [`max_file_size`](Self::max_file_size) (the rest of `body` is
    /// not read); [`Error::Source`] when `body` yields an error;
    /// [`Error::Io`]. On every error the previous version, if any, stays.
    async fn put(&self, container: &str, key: &ObjectKey, body: ByteStream) -> Result<ObjectMeta>;

    /// Opens object `key` of `container`: its metadata now, its bytes as a
    /// stream on demand (see [`StagedObject`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::NotFound`] when nothing is staged
    /// under that key; [`Error::Io`].
    async fn get(&self, container: &str, key: &ObjectKey) -> Result<StagedObject>;

    /// Metadata of object `key` of `container`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    async fn stat(&self, container: &str, key: &ObjectKey) -> Result<ObjectMeta>;

    /// The data files of `container` (not its input document), sorted by
    /// name. A container with nothing staged has none.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::Io`].
    async fn list_files(&self, container: &str) -> Result<Vec<ObjectMeta>>;

    /// Deletes one object of `container`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::NotFound`] when nothing is staged
    /// under that key; [`Error::Io`].
    async fn delete(&self, container: &str, key: &ObjectKey) -> Result<()>;

    /// Deletes everything staged for `container`, all at once (readers see
    /// either everything or nothing); returns whether anything was staged.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`]; [`Error::Io`].
    async fn delete_container(&self, container: &str) -> Result<bool>;

    /// Names of the containers that have anything staged, sorted.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    async fn containers(&self) -> Result<Vec<String>>;
}

/// Conveniences built only on [`StagingStore`]'s required methods; every
/// store has them through a blanket impl.
#[async_trait]
pub trait StagingStoreExt: StagingStore {
    /// Stages `document` as the input document of `container`.
    ///
    /// # Errors
    ///
    /// As [`StagingStore::put`].
    async fn put_input_json(&self, container: &str, document: &serde_json::Value) -> Result<ObjectMeta> {
        let bytes = serde_json::to_vec(document)
            .map_err(|e| Error::Source { object: ObjectKey::Input.describe(container), source: Box::new(e) })?;
        self.put_bytes(container, &ObjectKey::Input, bytes.into()).await
    }

    /// Stages data file `name` of `container` from any stream of chunks.
    ///
    /// # Errors
    ///
    /// As [`StagingStore::put`].
    async fn put_file<S, E>(&self, container: &str, name: &str, body: S) -> Result<ObjectMeta>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.put(container, &ObjectKey::file(name), body.map_err(Into::into).boxed()).await
    }

    /// Stages object `key` of `container` from bytes already in memory.
    ///
    /// # Errors
    ///
    /// As [`StagingStore::put`].
    async fn put_bytes(&self, container: &str, key: &ObjectKey, bytes: Bytes) -> Result<ObjectMeta> {
        self.put(container, key, stream::iter([Ok(bytes)]).boxed()).await
    }

    /// Stages object `key` of `container` from a reader, in chunks of
    /// 64 KiB.
    ///
    /// # Errors
    ///
    /// As [`StagingStore::put`]; read errors are [`Error::Source`].
    async fn put_reader<R>(&self, container: &str, key: &ObjectKey, reader: R) -> Result<ObjectMeta>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        self.put(container, key, reader_stream(reader)).await
    }

    /// Opens the input document of `container`.
    ///
    /// # Errors
    ///
    /// As [`StagingStore::get`].
    async fn get_input(&self, container: &str) -> Result<StagedObject> {
        self.get(container, &ObjectKey::Input).await
    }

    /// Opens data file `name` of `container`.
    ///
    /// # Errors
    ///
    /// As [`StagingStore::get`].
    async fn get_file(&self, container: &str, name: &str) -> Result<StagedObject> {
        self.get(container, &ObjectKey::file(name)).await
    }

    /// Reads object `key` of `container` whole into memory.
    ///
    /// # Errors
    ///
    /// As [`StagingStore::get`], plus read errors.
    async fn read_bytes(&self, container: &str, key: &ObjectKey) -> Result<Bytes> {
        self.get(container, key).await?.into_bytes().await
    }

    /// Reads and parses the input document of `container`.
    ///
    /// # Errors
    ///
    /// As [`StagingStore::get`]; a document that is not JSON is
    /// [`Error::Source`].
    async fn read_input_json(&self, container: &str) -> Result<serde_json::Value> {
        let bytes = self.read_bytes(container, &ObjectKey::Input).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Source { object: ObjectKey::Input.describe(container), source: Box::new(e) })
    }
}

impl<T: StagingStore + ?Sized> StagingStoreExt for T {}

/// Turns a reader into a [`ByteStream`] of chunks of up to 64 KiB.
pub fn reader_stream<R>(reader: R) -> ByteStream
where
    R: AsyncRead + Send + Unpin + 'static,
{
    stream::try_unfold(reader, |mut reader| async move {
        let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
        match reader.read_buf(&mut buf).await {
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some((buf.freeze(), reader))),
            Err(e) => Err(Box::new(e) as BoxError),
        }
    })
    .boxed()
}

macro_rules! forward_store {
    ($ptr:ident) => {
        #[async_trait]
        impl<T: StagingStore + ?Sized> StagingStore for $ptr<T> {
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            fn max_file_size(&self) -> u64 {
                (**self).max_file_size()
            }
            async fn put(&self, container: &str, key: &ObjectKey, body: ByteStream) -> Result<ObjectMeta> {
                (**self).put(container, key, body).await
            }
            async fn get(&self, container: &str, key: &ObjectKey) -> Result<StagedObject> {
                (**self).get(container, key).await
            }
            async fn stat(&self, container: &str, key: &ObjectKey) -> Result<ObjectMeta> {
                (**self).stat(container, key).await
            }
            async fn list_files(&self, container: &str) -> Result<Vec<ObjectMeta>> {
                (**self).list_files(container).await
            }
            async fn delete(&self, container: &str, key: &ObjectKey) -> Result<()> {
                (**self).delete(container, key).await
            }
            async fn delete_container(&self, container: &str) -> Result<bool> {
                (**self).delete_container(container).await
            }
            async fn containers(&self) -> Result<Vec<String>> {
                (**self).containers().await
            }
        }
    };
}

forward_store!(Arc);
forward_store!(Box);
