//! [`MemoryStore`]: staged objects in process memory.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::error::{Error, Result};
use crate::name::validate_container_name;
use crate::object::{
    ByteStream, Intake, ObjectKey, ObjectMeta, ObjectSource, ObjectStream, StagedObject, chunked, source_error,
};
use crate::store::{Capabilities, DEFAULT_MAX_FILE_SIZE, StagingStore};

/// Size of the chunks a read streams.
const READ_CHUNK: usize = 64 * 1024;

/// A [`StagingStore`] that keeps everything in memory: for tests, and for
/// hosts that stage only small inputs and need nothing to survive a
/// restart.
///
/// Writes still go through the streaming API and the size limit, and reads
/// stream in 64 KiB chunks, so code written against it behaves the same on
/// [`LocalDirStore`](crate::LocalDirStore).
#[derive(Debug)]
pub struct MemoryStore {
    containers: Mutex<BTreeMap<String, Staged>>,
    max_file_size: u64,
}

#[derive(Debug, Default)]
struct Staged {
    input: Option<Stored>,
    files: BTreeMap<String, Stored>,
}

#[derive(Debug, Clone)]
struct Stored {
    data: Bytes,
    meta: ObjectMeta,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store that accepts objects up to [`DEFAULT_MAX_FILE_SIZE`].
    pub fn new() -> Self {
        MemoryStore { containers: Mutex::new(BTreeMap::new()), max_file_size: DEFAULT_MAX_FILE_SIZE }
    }

    /// Sets the largest object [`put`](StagingStore::put) accepts.
    pub fn with_max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = bytes;
        self
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Staged>> {
        // A panic while holding the lock cannot leave a half-made object:
        // objects are inserted whole.
        self.containers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn find(&self, container: &str, key: &ObjectKey) -> Result<Stored> {
        validate_container_name(container)?;
        key.validate()?;
        let containers = self.lock();
        let staged = containers.get(container);
        let stored = match key {
            ObjectKey::Input => staged.and_then(|s| s.input.as_ref()),
            ObjectKey::File(name) => staged.and_then(|s| s.files.get(name)),
        };
        stored.cloned().ok_or_else(|| Error::NotFound { object: key.describe(container) })
    }
}

struct MemorySource(Bytes);

impl ObjectSource for MemorySource {
    fn read(self: Box<Self>, range: Range<u64>) -> ObjectStream {
        // The range was checked against the size, which fits in usize.
        let start = usize::try_from(range.start).unwrap_or(usize::MAX);
        let end = usize::try_from(range.end).unwrap_or(usize::MAX);
        chunked(self.0.slice(start..end), READ_CHUNK)
    }
}

#[async_trait]
impl StagingStore for MemoryStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new("memory", false)
    }

    fn max_file_size(&self) -> u64 {
        self.max_file_size
    }

    async fn put(&self, container: &str, key: &ObjectKey, mut body: ByteStream) -> Result<ObjectMeta> {
        validate_container_name(container)?;
        key.validate()?;
        let object = || key.describe(container);
        let mut intake = Intake::new(self.max_file_size);
        let mut data = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| source_error(object(), e))?;
            intake.accept(&chunk, object)?;
            data.extend_from_slice(&chunk);
        }
        let (size, etag) = intake.finish();
        let meta = ObjectMeta::new(key.clone(), size, etag, SystemTime::now());
        let stored = Stored { data: data.freeze(), meta: meta.clone() };
        let mut containers = self.lock();
        let staged = containers.entry(container.to_owned()).or_default();
        match key {
            ObjectKey::Input => staged.input = Some(stored),
            ObjectKey::File(name) => {
                staged.files.insert(name.clone(), stored);
            }
        }
        Ok(meta)
    }

    async fn get(&self, container: &str, key: &ObjectKey) -> Result<StagedObject> {
        let stored = self.find(container, key)?;
        Ok(StagedObject::new(container, stored.meta, Box::new(MemorySource(stored.data))))
    }

    async fn stat(&self, container: &str, key: &ObjectKey) -> Result<ObjectMeta> {
        Ok(self.find(container, key)?.meta)
    }

    async fn list_files(&self, container: &str) -> Result<Vec<ObjectMeta>> {
        validate_container_name(container)?;
        let containers = self.lock();
        Ok(containers.get(container).map(|s| s.files.values().map(|f| f.meta.clone()).collect()).unwrap_or_default())
    }

    async fn delete(&self, container: &str, key: &ObjectKey) -> Result<()> {
        validate_container_name(container)?;
        key.validate()?;
        let mut containers = self.lock();
        let staged = containers.get_mut(container);
        let removed = match key {
            ObjectKey::Input => staged.and_then(|s| s.input.take()),
            ObjectKey::File(name) => staged.and_then(|s| s.files.remove(name)),
        };
        removed.map(drop).ok_or_else(|| Error::NotFound { object: key.describe(container) })
    }

    async fn delete_container(&self, container: &str) -> Result<bool> {
        validate_container_name(container)?;
        Ok(self.lock().remove(container).is_some())
    }

    async fn containers(&self) -> Result<Vec<String>> {
        Ok(self.lock().keys().cloned().collect())
    }
}
