//! [`LocalDirStore`]: staged objects as files in a directory.

use std::collections::HashMap;
use std::io::{ErrorKind, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::BytesMut;
use futures_util::{StreamExt, stream};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::name::{validate_container_name, validate_file_name};
use crate::object::{
    ByteStream, INPUT_FILE_NAME, Intake, ObjectKey, ObjectMeta, ObjectSource, ObjectStream, StagedObject,
    etag_from_digest, source_error,
};
use crate::store::{Capabilities, DEFAULT_MAX_FILE_SIZE, StagingStore};

/// Directory below the root for files being written and containers being
/// deleted. Its name is not a valid container name, so it never collides.
const TEMP_DIR: &str = ".tmp";

/// Directory below a container's directory that holds its data files.
const FILES_DIR: &str = "files";

/// Size of the chunks a read streams.
const READ_CHUNK: usize = 128 * 1024;

/// A [`StagingStore`] in a directory on the local file system:
///
/// ```text
/// <root>/<container>/input.json
/// <root>/<container>/files/<name>
/// <root>/.tmp/                      files being written, containers being deleted
/// ```
///
/// Writes go to a temporary file in `<root>/.tmp`, are flushed to disk
/// (`fsync`) and then renamed over the target, and the directory is synced
/// too, so a crash leaves either the old or the new version, never a torn
/// file. [`open`](Self::open) empties `<root>/.tmp`, removing what a crash
/// left there; so only one store (one process) may use a root at a time.
/// Deleting a container first renames its directory into `<root>/.tmp`,
/// so it disappears at once.
///
/// Entity tags are the SHA-256 of the content, computed while writing and
/// remembered for files this store wrote; for files it did not write (for
/// instance after a restart) the tag is derived from inode, size and
/// modification time instead. Both change whenever the content does.
#[derive(Debug)]
pub struct LocalDirStore {
    root: PathBuf,
    tmp: PathBuf,
    max_file_size: u64,
    etags: Mutex<HashMap<PathBuf, (FileId, String)>>,
}

/// What identifies one version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    modified_nanos: u128,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        FileId {
            dev,
            ino,
            size: meta.len(),
            modified_nanos: modified(meta).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
        }
    }

    /// An entity tag for a file whose content hash is not known.
    fn etag(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"berth-staging file id\0");
        hasher.update(self.dev.to_le_bytes());
        hasher.update(self.ino.to_le_bytes());
        hasher.update(self.size.to_le_bytes());
        hasher.update(self.modified_nanos.to_le_bytes());
        etag_from_digest(&hasher.finalize())
    }
}

fn modified(meta: &std::fs::Metadata) -> SystemTime {
    meta.modified().unwrap_or(UNIX_EPOCH)
}

/// Removes a temporary file when dropped, unless disarmed: on errors and
/// when the writing future is cancelled (a client that disconnects).
struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // Unlinking is quick; a file left behind is removed at the next
            // start-up anyway.
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not remove temporary file");
            }
        }
    }
}

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// `fsync` of a directory, so that a rename or creation in it is durable.
/// Some file systems refuse it; that is logged, not an error.
async fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    {
        let result = async { tokio::fs::File::open(dir).await?.sync_all().await }.await;
        if let Err(e) = result {
            tracing::debug!(dir = %dir.display(), error = %e, "directory fsync failed");
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

impl LocalDirStore {
    /// Opens (creating if needed) a store in directory `root`, accepting
    /// objects up to [`DEFAULT_MAX_FILE_SIZE`], and removes whatever a
    /// previous process left in `<root>/.tmp`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directories cannot be created or cleaned.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(|e| Error::io(format!("creating staging directory {}", root.display()), e))?;
        let tmp = root.join(TEMP_DIR);
        match tokio::fs::remove_dir_all(&tmp).await {
            Ok(()) => tracing::debug!(dir = %tmp.display(), "removed leftovers of an earlier run"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("cleaning {}", tmp.display()), e)),
        }
        tokio::fs::create_dir_all(&tmp).await.map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        Ok(LocalDirStore { root, tmp, max_file_size: DEFAULT_MAX_FILE_SIZE, etags: Mutex::new(HashMap::new()) })
    }

    /// Sets the largest object [`put`](StagingStore::put) accepts.
    pub fn with_max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = bytes;
        self
    }

    /// The directory this store keeps its files in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn etags(&self) -> MutexGuard<'_, HashMap<PathBuf, (FileId, String)>> {
        self.etags.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Path of `key` of `container`; both must have been validated.
    fn path_of(&self, container: &str, key: &ObjectKey) -> PathBuf {
        let dir = self.root.join(container);
        match key {
            ObjectKey::Input => dir.join(INPUT_FILE_NAME),
            ObjectKey::File(name) => dir.join(FILES_DIR).join(name),
        }
    }

    fn etag_for(&self, path: &Path, meta: &std::fs::Metadata) -> String {
        let id = FileId::of(meta);
        match self.etags().get(path) {
            Some((known, etag)) if *known == id => etag.clone(),
            _ => id.etag(),
        }
    }

    fn meta_for(&self, key: &ObjectKey, path: &Path, meta: &std::fs::Metadata) -> ObjectMeta {
        ObjectMeta::new(key.clone(), meta.len(), self.etag_for(path, meta), modified(meta))
    }

    /// Opens the file of `key`, with its metadata from the same handle.
    async fn open_object(&self, container: &str, key: &ObjectKey) -> Result<(tokio::fs::File, ObjectMeta)> {
        validate_container_name(container)?;
        key.validate()?;
        let path = self.path_of(container, key);
        let not_found = || Error::NotFound { object: key.describe(container) };
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => return Err(not_found()),
            Err(e) => return Err(Error::io(format!("opening {}", key.describe(container)), e)),
        };
        let meta = file
            .metadata()
            .await
            .map_err(|e| Error::io(format!("reading metadata of {}", key.describe(container)), e))?;
        if !meta.is_file() {
            return Err(not_found());
        }
        let object = self.meta_for(key, &path, &meta);
        Ok((file, object))
    }

    /// Streams `body` into a new temporary file; returns it (synced) with
    /// its guard and the intake that counted and hashed it.
    async fn write_temp(
        &self,
        container: &str,
        key: &ObjectKey,
        mut body: ByteStream,
    ) -> Result<(TempFile, std::fs::Metadata, String)> {
        let object = || key.describe(container);
        let path = self.tmp.join(format!("put-{}", random_suffix()));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| Error::io(format!("creating a temporary file for {}", object()), e))?;
        let guard = TempFile { path: Some(path) };
        let mut intake = Intake::new(self.max_file_size);
        let write_error = |e| Error::io(format!("writing {}", object()), e);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| source_error(object(), e))?;
            intake.accept(&chunk, object)?;
            file.write_all(&chunk).await.map_err(write_error)?;
        }
        drop(body);
        file.flush().await.map_err(write_error)?;
        file.sync_all().await.map_err(write_error)?;
        let meta = file.metadata().await.map_err(write_error)?;
        let (_, etag) = intake.finish();
        Ok((guard, meta, etag))
    }
}

struct FileSource {
    file: tokio::fs::File,
    object: String,
}

impl ObjectSource for FileSource {
    fn read(self: Box<Self>, range: Range<u64>) -> ObjectStream {
        let FileSource { file, object } = *self;
        let state = (file, object, range, true);
        stream::try_unfold(state, |(mut file, object, range, first)| async move {
            if range.start >= range.end {
                return Ok(None);
            }
            let read_error = |e| Error::io(format!("reading {object}"), e);
            if first && range.start > 0 {
                file.seek(SeekFrom::Start(range.start)).await.map_err(read_error)?;
            }
            let want = usize::try_from(range.end - range.start).map_or(READ_CHUNK, |n| n.min(READ_CHUNK));
            let mut buf = BytesMut::with_capacity(want);
            let n = (&mut file).take(want as u64).read_buf(&mut buf).await.map_err(read_error)?;
            if n == 0 {
                // Files are replaced by rename, never truncated in place, so
                // only someone else writing below the root gets here.
                return Err(read_error(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "file is shorter than when it was opened",
                )));
            }
            let next = (range.start + n as u64)..range.end;
            Ok(Some((buf.freeze(), (file, object, next, false))))
        })
        .boxed()
    }
}

#[async_trait]
impl StagingStore for LocalDirStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new("local-dir", true)
    }

    fn max_file_size(&self) -> u64 {
        self.max_file_size
    }

    async fn put(&self, container: &str, key: &ObjectKey, body: ByteStream) -> Result<ObjectMeta> {
        validate_container_name(container)?;
        key.validate()?;
        let object = || key.describe(container);
        let target = self.path_of(container, key);
        let Some(parent) = target.parent() else {
            return Err(Error::io(object(), ErrorKind::InvalidInput.into()));
        };
        tokio::fs::create_dir_all(&self.tmp)
            .await
            .map_err(|e| Error::io(format!("creating {}", self.tmp.display()), e))?;
        let (mut temp, meta, etag) = self.write_temp(container, key, body).await?;
        let Some(temp_path) = temp.path.clone() else {
            return Err(Error::io(object(), ErrorKind::NotFound.into()));
        };
        // A concurrent `delete_container` may move the directory away
        // between creating it and renaming into it; then try again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let created = !tokio::fs::try_exists(parent).await.unwrap_or(false);
            if created {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| Error::io(format!("creating the directory of {}", object()), e))?;
            }
            match tokio::fs::rename(&temp_path, &target).await {
                Ok(()) => {
                    temp.disarm();
                    sync_dir(parent).await;
                    if created {
                        for dir in parent.ancestors().skip(1) {
                            sync_dir(dir).await;
                            if dir == self.root {
                                break;
                            }
                        }
                    }
                    break;
                }
                Err(e) if e.kind() == ErrorKind::NotFound && attempts < 3 => continue,
                Err(e) => return Err(Error::io(format!("renaming the new version of {} into place", object()), e)),
            }
        }
        let id = FileId::of(&meta);
        self.etags().insert(target, (id, etag.clone()));
        Ok(ObjectMeta::new(key.clone(), meta.len(), etag, modified(&meta)))
    }

    async fn get(&self, container: &str, key: &ObjectKey) -> Result<StagedObject> {
        let (file, meta) = self.open_object(container, key).await?;
        let source = FileSource { file, object: key.describe(container) };
        Ok(StagedObject::new(container, meta, Box::new(source)))
    }

    async fn stat(&self, container: &str, key: &ObjectKey) -> Result<ObjectMeta> {
        Ok(self.open_object(container, key).await?.1)
    }

    async fn list_files(&self, container: &str) -> Result<Vec<ObjectMeta>> {
        validate_container_name(container)?;
        let dir = self.root.join(container).join(FILES_DIR);
        let context = || format!("listing the files of container {container:?}");
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(context(), e)),
        };
        let mut files = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(|e| Error::io(context(), e))? {
            // Only names this store could have written are listed.
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if validate_file_name(&name).is_err() {
                continue;
            }
            let meta = match entry.metadata().await {
                Ok(meta) if meta.is_file() => meta,
                Ok(_) => continue,
                // Deleted or replaced while listing.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(context(), e)),
            };
            files.push(self.meta_for(&ObjectKey::File(name), &entry.path(), &meta));
        }
        files.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(files)
    }

    async fn delete(&self, container: &str, key: &ObjectKey) -> Result<()> {
        validate_container_name(container)?;
        key.validate()?;
        let path = self.path_of(container, key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return Err(Error::NotFound { object: key.describe(container) });
            }
            Err(e) => return Err(Error::io(format!("deleting {}", key.describe(container)), e)),
        }
        self.etags().remove(&path);
        if let Some(parent) = path.parent() {
            sync_dir(parent).await;
        }
        Ok(())
    }

    async fn delete_container(&self, container: &str) -> Result<bool> {
        validate_container_name(container)?;
        let dir = self.root.join(container);
        let trash = self.tmp.join(format!("del-{container}-{}", random_suffix()));
        let context = || format!("deleting the staged objects of container {container:?}");
        tokio::fs::create_dir_all(&self.tmp).await.map_err(|e| Error::io(context(), e))?;
        match tokio::fs::rename(&dir, &trash).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(context(), e)),
        }
        sync_dir(&self.root).await;
        self.etags().retain(|path, _| !path.starts_with(&dir));
        if let Err(e) = tokio::fs::remove_dir_all(&trash).await {
            // The objects are gone from view already; the next start-up
            // removes the rest.
            tracing::warn!(dir = %trash.display(), error = %e, "could not remove a deleted container's files");
        }
        Ok(true)
    }

    async fn containers(&self) -> Result<Vec<String>> {
        let context = || format!("listing {}", self.root.display());
        let mut entries = tokio::fs::read_dir(&self.root).await.map_err(|e| Error::io(context(), e))?;
        let mut names = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(|e| Error::io(context(), e))? {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if validate_container_name(&name).is_err() {
                continue;
            }
            if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}
