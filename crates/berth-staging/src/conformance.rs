//! The contract every [`StagingStore`] backend must keep, as public async
//! checks over `&dyn StagingStore`.
//!
//! Each check expects a fresh, empty store whose
//! [`max_file_size`](StagingStore::max_file_size) is [`MAX_FILE_SIZE`].
//! Every backend's tests run the same checks through
//! [`conformance_tests!`](crate::conformance_tests), which expands to one
//! `#[tokio::test]` per check:
//!
//! ```ignore
//! async fn setup(max_file_size: u64) -> berth_staging::conformance::Fixture {
//!     let store = berth_staging::MemoryStore::new().with_max_file_size(max_file_size);
//!     berth_staging::conformance::Fixture::new(std::sync::Arc::new(store))
//! }
//! berth_staging::conformance_tests!(setup);
//! ```

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};

use crate::error::{BoxError, Error};
use crate::object::{ByteStream, ObjectKey, ObjectMeta, ObjectStream};
use crate::store::{StagingStore, StagingStoreExt};

/// The size limit the checks expect the store under test to have: 64 MiB.
pub const MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// Size of the generated chunks of the large-file checks.
const MIB: usize = 1024 * 1024;

/// A store to check and whatever must live as long as it.
pub struct Fixture {
    /// The store under test: fresh, empty, with a limit of [`MAX_FILE_SIZE`].
    pub store: Arc<dyn StagingStore>,
    /// Anything the setup needs kept alive until the check ends (e.g. the
    /// temporary directory of a [`LocalDirStore`](crate::LocalDirStore)).
    pub guard: Option<Box<dyn Any + Send + Sync>>,
}

impl Fixture {
    /// A fixture without a guard.
    pub fn new(store: Arc<dyn StagingStore>) -> Self {
        Fixture { store, guard: None }
    }

    /// Keeps `guard` alive as long as the fixture.
    pub fn with_guard(mut self, guard: impl Any + Send + Sync) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture").field("backend", &self.store.capabilities().backend).finish_non_exhaustive()
    }
}

/// A failed check: what was expected and what happened.
#[derive(Debug, thiserror::Error)]
#[error("conformance check {check} failed: {message}")]
pub struct CheckFailure {
    /// Name of the check.
    pub check: &'static str,
    /// What went wrong.
    pub message: String,
}

/// Result of one check.
pub type CheckResult = std::result::Result<(), CheckFailure>;

macro_rules! ensure {
    ($check:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(CheckFailure { check: $check, message: format!($($fmt)+) });
        }
    };
}

/// Turns any error into a failure of `check`.
trait Ctx<T> {
    fn ctx(self, check: &'static str, what: &str) -> std::result::Result<T, CheckFailure>;
}

impl<T, E: std::fmt::Display> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, check: &'static str, what: &str) -> std::result::Result<T, CheckFailure> {
        self.map_err(|e| CheckFailure { check, message: format!("{what}: {e}") })
    }
}

fn chunks<I>(parts: I) -> ByteStream
where
    I: IntoIterator,
    I::Item: Into<Bytes>,
{
    let parts: Vec<Result<Bytes, BoxError>> = parts.into_iter().map(|p| Ok(p.into())).collect();
    stream::iter(parts).boxed()
}

/// Chunks that yield to the scheduler in between, so concurrent writes
/// really interleave.
fn slow_chunks(parts: Vec<Bytes>) -> ByteStream {
    stream::unfold(parts.into_iter(), |mut parts| async move {
        tokio::task::yield_now().await;
        parts.next().map(|p| (Ok(p), parts))
    })
    .boxed()
}

async fn read(
    store: &dyn StagingStore,
    c: &'static str,
    container: &str,
    key: &ObjectKey,
) -> Result<Bytes, CheckFailure> {
    store.read_bytes(container, key).await.ctx(c, &format!("reading {key} of {container}"))
}

fn file(name: &str) -> ObjectKey {
    ObjectKey::file(name)
}

fn is_not_found<T>(r: &Result<T, Error>) -> bool {
    r.as_ref().err().is_some_and(Error::is_not_found)
}

fn is_invalid_name<T>(r: &Result<T, Error>) -> bool {
    r.as_ref().err().is_some_and(Error::is_invalid_name)
}

fn names(list: &[ObjectMeta]) -> Vec<&str> {
    list.iter().filter_map(|m| m.key.file_name()).collect()
}

/// Deterministic content for large objects: 1 MiB blocks of pseudo-random
/// bytes, each starting with its block number, so that a misplaced or
/// repeated block is noticed.
struct Pattern {
    base: Vec<u8>,
}

impl Pattern {
    fn new() -> Self {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let base = (0..MIB)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[3]
            })
            .collect();
        Pattern { base }
    }

    fn block(&self, k: u64) -> Bytes {
        let mut block = self.base.clone();
        block[..8].copy_from_slice(&k.to_le_bytes());
        block.into()
    }

    /// True when `data` is what the pattern holds at `offset`.
    fn matches(&self, offset: u64, data: &[u8]) -> bool {
        let mut offset = offset;
        let mut data = data;
        while !data.is_empty() {
            let k = offset / MIB as u64;
            let start = (offset % MIB as u64) as usize;
            let n = data.len().min(MIB - start);
            if self.block(k)[start..start + n] != data[..n] {
                return false;
            }
            offset += n as u64;
            data = &data[n..];
        }
        true
    }
}

/// A stream of `total` bytes of the pattern in 1 MiB chunks, generated as
/// it is read; `pulled` counts the bytes handed out.
fn pattern_stream(pattern: Arc<Pattern>, total: u64, pulled: Arc<AtomicU64>) -> ByteStream {
    stream::unfold(0u64, move |offset| {
        let pattern = pattern.clone();
        let pulled = pulled.clone();
        async move {
            if offset >= total {
                return None;
            }
            let k = offset / MIB as u64;
            let n = (total - offset).min(MIB as u64);
            let chunk = pattern.block(k).slice(..n as usize);
            pulled.fetch_add(n, Ordering::Relaxed);
            Some((Ok(chunk), offset + n))
        }
    })
    .boxed()
}

/// Reads `stream`, checking it against the pattern from `offset`; returns
/// (bytes, chunks, largest chunk).
async fn check_pattern_stream(
    c: &'static str,
    pattern: &Pattern,
    offset: u64,
    mut stream: ObjectStream,
) -> Result<(u64, usize, usize), CheckFailure> {
    let (mut total, mut count, mut largest) = (0u64, 0usize, 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ctx(c, "reading the large file")?;
        ensure!(c, pattern.matches(offset + total, &chunk), "wrong bytes at offset {}", offset + total);
        total += chunk.len() as u64;
        count += 1;
        largest = largest.max(chunk.len());
    }
    Ok((total, count, largest))
}

/// A file written from a stream reads back byte for byte, with the right
/// metadata from `put`, `stat` and `get` alike.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn file_round_trip(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "file_round_trip";
    let before = SystemTime::now() - Duration::from_secs(60);
    let meta = store.put("rt", &file("data.csv"), chunks(["a,b\n", "1,2\n", "3,4\n"])).await.ctx(C, "put")?;
    ensure!(C, meta.key == file("data.csv"), "key {:?}", meta.key);
    ensure!(C, meta.size == 12, "size {}", meta.size);
    ensure!(C, meta.content_type == "text/csv; charset=utf-8", "content type {}", meta.content_type);
    ensure!(
        C,
        meta.etag.len() > 2 && meta.etag.starts_with('"') && meta.etag.ends_with('"'),
        "etag {:?} is not a quoted strong tag",
        meta.etag
    );
    ensure!(C, meta.modified >= before, "modified {:?} is in the past", meta.modified);
    let stat = store.stat("rt", &file("data.csv")).await.ctx(C, "stat")?;
    ensure!(C, stat == meta, "stat {stat:?} differs from put {meta:?}");
    let object = store.get_file("rt", "data.csv").await.ctx(C, "get")?;
    ensure!(C, *object.meta() == meta, "get {:?} differs from put {meta:?}", object.meta());
    let bytes = object.into_bytes().await.ctx(C, "read")?;
    ensure!(C, &bytes[..] == b"a,b\n1,2\n3,4\n", "read back {bytes:?}");
    let containers = store.containers().await.ctx(C, "containers")?;
    ensure!(C, containers == ["rt"], "containers {containers:?}");
    Ok(())
}

/// The input document reads back as the same JSON, is `application/json`
/// and is not listed among the data files.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn input_round_trip(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "input_round_trip";
    let document = serde_json::json!({
        "parameters": {"zoom": 2, "title": "ünïcode \"quoted\""},
        "file_relationships": ["http://example.invalid/a.csv"],
    });
    let meta = store.put_input_json("inp", &document).await.ctx(C, "put")?;
    ensure!(C, meta.key == ObjectKey::Input, "key {:?}", meta.key);
    ensure!(C, meta.content_type == "application/json", "content type {}", meta.content_type);
    let serialized = serde_json::to_vec(&document).ctx(C, "serialize")?;
    ensure!(C, meta.size == serialized.len() as u64, "size {} for {} bytes", meta.size, serialized.len());
    let back = store.read_input_json("inp").await.ctx(C, "read")?;
    ensure!(C, back == document, "read back {back}");
    let raw = read(store, C, "inp", &ObjectKey::Input).await?;
    ensure!(C, raw[..] == serialized[..], "raw bytes differ");
    let files = store.list_files("inp").await.ctx(C, "list")?;
    ensure!(C, files.is_empty(), "input listed as a file: {:?}", names(&files));
    // A file may be called input.json too; it is not the input document.
    store.put_bytes("inp", &file("input.json"), Bytes::from_static(b"[]")).await.ctx(C, "put file input.json")?;
    let back = store.read_input_json("inp").await.ctx(C, "read again")?;
    ensure!(C, back == document, "file input.json replaced the input document");
    Ok(())
}

/// An empty file is a file of size 0; it has no satisfiable range.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn empty_file(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "empty_file";
    let meta = store.put("empty", &file("nothing.txt"), chunks(Vec::<Bytes>::new())).await.ctx(C, "put")?;
    ensure!(C, meta.size == 0, "size {}", meta.size);
    let bytes = read(store, C, "empty", &file("nothing.txt")).await?;
    ensure!(C, bytes.is_empty(), "read back {bytes:?}");
    let listed = store.list_files("empty").await.ctx(C, "list")?;
    ensure!(C, names(&listed) == ["nothing.txt"] && listed[0].size == 0, "listed {listed:?}");
    let object = store.get_file("empty", "nothing.txt").await.ctx(C, "get")?;
    let r = object.into_range_stream(0..1);
    ensure!(C, matches!(r, Err(Error::RangeNotSatisfiable { .. })), "range 0..1 of an empty file was accepted");
    Ok(())
}

/// Writing again replaces the content whole; the entity tag changes with
/// the content, also when the size stays the same.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn overwrite(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "overwrite";
    let key = file("v.txt");
    let v1 =
        store.put_bytes("ow", &key, Bytes::from_static(b"the first version, which is long")).await.ctx(C, "put v1")?;
    let v2 = store.put_bytes("ow", &key, Bytes::from_static(b"second")).await.ctx(C, "put v2")?;
    ensure!(C, v2.size == 6, "size {} after overwrite", v2.size);
    ensure!(C, v2.etag != v1.etag, "etag unchanged after overwrite");
    let bytes = read(store, C, "ow", &key).await?;
    ensure!(C, &bytes[..] == b"second", "read back {bytes:?}");
    let v3 = store.put_bytes("ow", &key, Bytes::from_static(b"third!")).await.ctx(C, "put v3")?;
    ensure!(C, v3.etag != v2.etag, "etag unchanged after a same-size overwrite");
    let stat = store.stat("ow", &key).await.ctx(C, "stat")?;
    ensure!(C, stat.etag == v3.etag && stat.size == 6, "stat {stat:?} is not v3 {v3:?}");
    let bytes = read(store, C, "ow", &key).await?;
    ensure!(C, &bytes[..] == b"third!", "read back {bytes:?}");
    let listed = store.list_files("ow").await.ctx(C, "list")?;
    ensure!(C, names(&listed) == ["v.txt"], "listed {:?}", names(&listed));
    Ok(())
}

/// Reading, stating or deleting what is not staged is `NotFound`; listing
/// or deleting an unknown container is empty, not an error.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn missing_is_not_found(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "missing_is_not_found";
    let r = store.get_file("ghost", "a.csv").await;
    ensure!(C, is_not_found(&r), "get in an unknown container: {r:?}");
    let r = store.get_input("ghost").await;
    ensure!(C, is_not_found(&r), "get input of an unknown container: {r:?}");
    let r = store.stat("ghost", &file("a.csv")).await;
    ensure!(C, is_not_found(&r), "stat: {r:?}");
    let r = store.delete("ghost", &file("a.csv")).await;
    ensure!(C, is_not_found(&r), "delete: {r:?}");
    let r = store.delete("ghost", &ObjectKey::Input).await;
    ensure!(C, is_not_found(&r), "delete input: {r:?}");
    let listed = store.list_files("ghost").await.ctx(C, "list unknown container")?;
    ensure!(C, listed.is_empty(), "listed {:?}", names(&listed));
    ensure!(
        C,
        !store.delete_container("ghost").await.ctx(C, "delete unknown container")?,
        "deleting an unknown container said it deleted something"
    );

    store.put_bytes("half", &file("present.csv"), Bytes::from_static(b"x")).await.ctx(C, "put")?;
    let r = store.get_file("half", "absent.csv").await;
    ensure!(C, is_not_found(&r), "get of a missing file: {r:?}");
    let r = store.get_input("half").await;
    ensure!(C, is_not_found(&r), "get of a missing input: {r:?}");
    let r = store.get_file("half", "present.csv.bak").await;
    ensure!(C, is_not_found(&r), "get of a name extending a present one: {r:?}");
    Ok(())
}

/// File names that could escape a directory, confuse a path or a log, or
/// exceed 255 bytes are `InvalidName` for every method; so are container
/// names that are not lowercase DNS labels. The longest valid names work.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn invalid_names(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "invalid_names";
    let long = "a".repeat(256);
    let bad_files = [
        "",
        ".",
        "..",
        "../x",
        "x/..",
        "a..b",
        "a/b",
        "/abs",
        "a\\b",
        "..\\x",
        "a\0b",
        "a\nb",
        "\r",
        "\u{1b}[31m",
        "tab\t",
        "del\u{7f}",
        &long,
    ];
    for name in bad_files {
        let key = file(name);
        let r = store.put("names", &key, chunks(["x"])).await;
        ensure!(C, is_invalid_name(&r), "put of file {name:?}: {r:?}");
        let r = store.get("names", &key).await;
        ensure!(C, is_invalid_name(&r), "get of file {name:?}: {r:?}");
        let r = store.stat("names", &key).await;
        ensure!(C, is_invalid_name(&r), "stat of file {name:?}: {r:?}");
        let r = store.delete("names", &key).await;
        ensure!(C, is_invalid_name(&r), "delete of file {name:?}: {r:?}");
    }
    let long_container = "a".repeat(64);
    let bad_containers =
        ["", ".", "..", "../x", "a/b", "a\\b", "A", "a b", "a_b", "a.b", "-a", "a-", "a\0", "é", &long_container];
    for name in bad_containers {
        let r = store.put(name, &file("ok.txt"), chunks(["x"])).await;
        ensure!(C, is_invalid_name(&r), "put into container {name:?}: {r:?}");
        let r = store.put(name, &ObjectKey::Input, chunks(["{}"])).await;
        ensure!(C, is_invalid_name(&r), "put input into container {name:?}: {r:?}");
        let r = store.get(name, &ObjectKey::Input).await;
        ensure!(C, is_invalid_name(&r), "get from container {name:?}: {r:?}");
        let r = store.list_files(name).await;
        ensure!(C, is_invalid_name(&r), "list of container {name:?}: {r:?}");
        let r = store.delete_container(name).await;
        ensure!(C, is_invalid_name(&r), "delete of container {name:?}: {r:?}");
    }
    let containers = store.containers().await.ctx(C, "containers")?;
    ensure!(C, containers.is_empty(), "refused writes left containers {containers:?}");

    let longest = "b".repeat(255);
    let longest_container = "c".repeat(63);
    for name in [longest.as_str(), ".hidden", "a.b.c", "ünï cöde.txt", "x.y."] {
        store
            .put(&longest_container, &file(name), chunks(["ok"]))
            .await
            .ctx(C, &format!("put of valid name {name:?}"))?;
        let bytes = read(store, C, &longest_container, &file(name)).await?;
        ensure!(C, &bytes[..] == b"ok", "read back {bytes:?} from {name:?}");
    }
    Ok(())
}

/// Past the size limit a write is `TooLarge`, stops reading its source,
/// leaves nothing behind and keeps the previous version.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn too_large(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "too_large";
    let limit = store.max_file_size();
    ensure!(C, limit == MAX_FILE_SIZE, "store limit is {limit}, the checks need {MAX_FILE_SIZE}");
    let pattern = Arc::new(Pattern::new());
    store.put_bytes("big", &file("big.bin"), Bytes::from_static(b"keep me")).await.ctx(C, "put small version")?;

    // The source would go on for 16 MiB more; the store must stop early.
    let pulled = Arc::new(AtomicU64::new(0));
    let r = store
        .put("big", &file("big.bin"), pattern_stream(pattern.clone(), limit + 16 * MIB as u64, pulled.clone()))
        .await;
    ensure!(C, r.as_ref().err().is_some_and(Error::is_too_large), "overwrite past the limit: {r:?}");
    let pulled = pulled.load(Ordering::Relaxed);
    ensure!(
        C,
        pulled <= limit + MIB as u64,
        "the store read {pulled} bytes of the source, past the limit {limit} and one chunk"
    );
    let bytes = read(store, C, "big", &file("big.bin")).await?;
    ensure!(C, &bytes[..] == b"keep me", "previous version lost: {} bytes", bytes.len());

    // A new file, in one chunk that alone is over the limit.
    let r = store.put("big", &file("fresh.bin"), chunks([vec![0u8; (limit + 1) as usize]])).await;
    ensure!(C, r.as_ref().err().is_some_and(Error::is_too_large), "new file one byte past the limit: {r:?}");
    let r = store.get_file("big", "fresh.bin").await;
    ensure!(C, is_not_found(&r), "refused file is readable: {r:?}");

    let r = store.put("big", &ObjectKey::Input, chunks([vec![b' '; (limit + 1) as usize]])).await;
    ensure!(C, r.as_ref().err().is_some_and(Error::is_too_large), "input past the limit: {r:?}");
    let r = store.get_input("big").await;
    ensure!(C, is_not_found(&r), "refused input is readable: {r:?}");
    let listed = store.list_files("big").await.ctx(C, "list")?;
    ensure!(C, names(&listed) == ["big.bin"], "listed {:?}", names(&listed));
    Ok(())
}

/// A source stream that fails mid-way is `Source`, leaves nothing behind
/// and keeps the previous version.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn failed_source_leaves_nothing(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "failed_source_leaves_nothing";
    let failing = || -> ByteStream {
        let broken: BoxError = Box::new(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "client went away"));
        stream::iter([Ok(Bytes::from_static(b"new data, ")), Err(broken)]).boxed()
    };
    store.put_bytes("src", &file("kept.txt"), Bytes::from_static(b"old")).await.ctx(C, "put")?;
    let r = store.put("src", &file("kept.txt"), failing()).await;
    ensure!(C, matches!(r, Err(Error::Source { .. })), "overwrite from a failing source: {r:?}");
    let bytes = read(store, C, "src", &file("kept.txt")).await?;
    ensure!(C, &bytes[..] == b"old", "previous version lost: {bytes:?}");
    let r = store.put("src", &file("new.txt"), failing()).await;
    ensure!(C, matches!(r, Err(Error::Source { .. })), "new file from a failing source: {r:?}");
    let r = store.get_file("src", "new.txt").await;
    ensure!(C, is_not_found(&r), "failed file is readable: {r:?}");
    let listed = store.list_files("src").await.ctx(C, "list")?;
    ensure!(C, names(&listed) == ["kept.txt"], "listed {:?}", names(&listed));
    Ok(())
}

/// Concurrent writers of different files of one container all succeed,
/// and each file holds exactly its writer's bytes.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn concurrent_writers(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "concurrent_writers";
    let content = |i: usize| -> Vec<Bytes> {
        (0..8).map(|part| Bytes::from(format!("writer {i:02} part {part} ").repeat(200))).collect()
    };
    let writes = (0..16).map(|i| {
        let key = file(&format!("w{i:02}.txt"));
        async move { store.put("conc", &key, slow_chunks(content(i))).await }
    });
    for (i, r) in futures_util::future::join_all(writes).await.into_iter().enumerate() {
        r.ctx(C, &format!("writer {i}"))?;
    }
    for i in 0..16 {
        let bytes = read(store, C, "conc", &file(&format!("w{i:02}.txt"))).await?;
        let want: Vec<u8> = content(i).concat();
        ensure!(C, bytes[..] == want[..], "file {i} holds {} bytes, not its writer's", bytes.len());
    }
    let listed = store.list_files("conc").await.ctx(C, "list")?;
    ensure!(C, listed.len() == 16, "listed {} files", listed.len());
    Ok(())
}

/// Concurrent writers of one file: the survivor is one writer's content,
/// whole; readers meanwhile see whole versions only.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn concurrent_same_file(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "concurrent_same_file";
    let key = file("race.bin");
    let version =
        |i: usize| -> Vec<Bytes> { (0..4).map(|_| Bytes::from(vec![b'a' + i as u8; 1000 + i * 10])).collect() };
    let versions: Vec<Vec<u8>> = (0..8).map(|i| version(i).concat()).collect();
    store.put("race", &key, chunks(version(0))).await.ctx(C, "put first version")?;
    let writes = (0..8).map(|i| {
        let key = key.clone();
        async move { store.put("race", &key, slow_chunks(version(i))).await.map(drop) }
    });
    let reads = (0..8).map(|_| {
        let key = key.clone();
        async move {
            tokio::task::yield_now().await;
            let object = store.get("race", &key).await?;
            let size = object.meta().size;
            let bytes = object.into_bytes().await?;
            Ok::<_, Error>((size, bytes))
        }
    });
    let (written, seen) =
        futures_util::future::join(futures_util::future::join_all(writes), futures_util::future::join_all(reads)).await;
    for r in written {
        r.ctx(C, "write")?;
    }
    for r in seen {
        let (size, bytes) = r.ctx(C, "read during writes")?;
        ensure!(C, size == bytes.len() as u64, "metadata says {size} bytes, read {}", bytes.len());
        ensure!(C, versions.iter().any(|v| v[..] == bytes[..]), "a reader saw a torn version of {} bytes", bytes.len());
    }
    let object = store.get("race", &key).await.ctx(C, "get")?;
    let size = object.meta().size;
    let bytes = object.into_bytes().await.ctx(C, "read")?;
    ensure!(C, size == bytes.len() as u64, "metadata says {size} bytes, read {}", bytes.len());
    ensure!(C, versions.iter().any(|v| v[..] == bytes[..]), "the survivor is torn ({} bytes)", bytes.len());
    Ok(())
}

/// `list_files` returns every file once, sorted by name (byte order), with
/// sizes and content types.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn listing_sorted(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "listing_sorted";
    let names_in = ["b.txt", "a.csv", "C.json", "a b.png", "ä.txt", "10.txt", "9.txt", "a"];
    for (i, name) in names_in.iter().enumerate() {
        store.put_bytes("ls", &file(name), Bytes::from(vec![b'x'; i])).await.ctx(C, &format!("put {name}"))?;
    }
    store.put_input_json("ls", &serde_json::json!({})).await.ctx(C, "put input")?;
    let listed = store.list_files("ls").await.ctx(C, "list")?;
    let mut want: Vec<&str> = names_in.to_vec();
    want.sort_unstable();
    ensure!(C, names(&listed) == want, "listed {:?}, want {want:?}", names(&listed));
    for meta in &listed {
        let name = meta.key.file_name().unwrap_or_default();
        let i = names_in.iter().position(|n| *n == name).unwrap_or_default();
        ensure!(C, meta.size == i as u64, "{name} listed with size {}", meta.size);
        ensure!(C, meta.content_type == crate::content_type_for(name), "{name} listed as {}", meta.content_type);
    }
    Ok(())
}

/// Deleting one object leaves the others.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn delete_one_file(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "delete_one_file";
    store.put_bytes("del1", &file("a.csv"), Bytes::from_static(b"a")).await.ctx(C, "put a")?;
    store.put_bytes("del1", &file("b.csv"), Bytes::from_static(b"b")).await.ctx(C, "put b")?;
    store.put_input_json("del1", &serde_json::json!([1])).await.ctx(C, "put input")?;
    store.delete("del1", &file("a.csv")).await.ctx(C, "delete a")?;
    let r = store.get_file("del1", "a.csv").await;
    ensure!(C, is_not_found(&r), "deleted file readable: {r:?}");
    let r = store.delete("del1", &file("a.csv")).await;
    ensure!(C, is_not_found(&r), "second delete: {r:?}");
    let bytes = read(store, C, "del1", &file("b.csv")).await?;
    ensure!(C, &bytes[..] == b"b", "other file changed: {bytes:?}");
    let listed = store.list_files("del1").await.ctx(C, "list")?;
    ensure!(C, names(&listed) == ["b.csv"], "listed {:?}", names(&listed));
    store.delete("del1", &ObjectKey::Input).await.ctx(C, "delete input")?;
    let r = store.get_input("del1").await;
    ensure!(C, is_not_found(&r), "deleted input readable: {r:?}");
    let bytes = read(store, C, "del1", &file("b.csv")).await?;
    ensure!(C, &bytes[..] == b"b", "file changed by deleting the input: {bytes:?}");
    Ok(())
}

/// `delete_container` removes the input and every file at once; the
/// container can be staged again afterwards.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn delete_container_removes_all(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "delete_container_removes_all";
    store.put_input_json("gone", &serde_json::json!({"a": 1})).await.ctx(C, "put input")?;
    for name in ["x.csv", "y.png", "z"] {
        store.put_bytes("gone", &file(name), Bytes::from_static(b"data")).await.ctx(C, "put file")?;
    }
    ensure!(C, store.delete_container("gone").await.ctx(C, "delete")?, "delete said nothing was staged");
    let r = store.get_input("gone").await;
    ensure!(C, is_not_found(&r), "input after delete: {r:?}");
    for name in ["x.csv", "y.png", "z"] {
        let r = store.get_file("gone", name).await;
        ensure!(C, is_not_found(&r), "{name} after delete: {r:?}");
    }
    let listed = store.list_files("gone").await.ctx(C, "list")?;
    ensure!(C, listed.is_empty(), "listed {:?} after delete", names(&listed));
    let containers = store.containers().await.ctx(C, "containers")?;
    ensure!(C, containers.is_empty(), "containers {containers:?} after delete");
    ensure!(C, !store.delete_container("gone").await.ctx(C, "delete again")?, "second delete found something");
    store.put_bytes("gone", &file("x.csv"), Bytes::from_static(b"new")).await.ctx(C, "put after delete")?;
    let bytes = read(store, C, "gone", &file("x.csv")).await?;
    ensure!(C, &bytes[..] == b"new", "read back {bytes:?}");
    let listed = store.list_files("gone").await.ctx(C, "list after re-staging")?;
    ensure!(C, names(&listed) == ["x.csv"], "old files came back: {:?}", names(&listed));
    Ok(())
}

/// Containers are separate: same names hold different content, and
/// deleting one container (even one whose name prefixes another's) leaves
/// the other alone.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn containers_are_isolated(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "containers_are_isolated";
    for (container, content) in [("iso", "one"), ("iso-2", "two")] {
        store.put_bytes(container, &file("same.csv"), Bytes::from(content)).await.ctx(C, "put file")?;
        store.put_input_json(container, &serde_json::json!({ "who": container })).await.ctx(C, "put input")?;
    }
    let one = read(store, C, "iso", &file("same.csv")).await?;
    let two = read(store, C, "iso-2", &file("same.csv")).await?;
    ensure!(C, &one[..] == b"one" && &two[..] == b"two", "read {one:?} and {two:?}");
    let containers = store.containers().await.ctx(C, "containers")?;
    ensure!(C, containers == ["iso", "iso-2"], "containers {containers:?}");
    ensure!(C, store.delete_container("iso").await.ctx(C, "delete")?, "nothing deleted");
    let two = read(store, C, "iso-2", &file("same.csv")).await?;
    ensure!(C, &two[..] == b"two", "other container's file is {two:?}");
    let input = store.read_input_json("iso-2").await.ctx(C, "read other input")?;
    ensure!(C, input == serde_json::json!({"who": "iso-2"}), "other container's input is {input}");
    let containers = store.containers().await.ctx(C, "containers after delete")?;
    ensure!(C, containers == ["iso-2"], "containers {containers:?} after delete");
    Ok(())
}

/// Byte ranges of an opened object stream exactly those bytes; ranges
/// outside the object are `RangeNotSatisfiable`.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn ranges(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "ranges";
    store.put_bytes("rng", &file("digits.txt"), Bytes::from_static(b"0123456789")).await.ctx(C, "put")?;
    for (range, want) in [(2..5, &b"234"[..]), (9..10, b"9"), (0..10, b"0123456789"), (0..1, b"0")] {
        let object = store.get_file("rng", "digits.txt").await.ctx(C, "get")?;
        let stream = object.into_range_stream(range.clone()).ctx(C, &format!("range {range:?}"))?;
        let parts: Vec<Bytes> = stream
            .map(|r| r.map_err(|e| e.to_string()))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .ctx(C, "read range")?;
        let got = parts.concat();
        ensure!(C, got == want, "range {range:?} gave {:?}", String::from_utf8_lossy(&got));
    }
    let reversed = std::ops::Range { start: 7, end: 2 };
    for range in [5..11, 10..11, 3..3, reversed] {
        let object = store.get_file("rng", "digits.txt").await.ctx(C, "get")?;
        let r = object.into_range_stream(range.clone());
        ensure!(C, matches!(r, Err(Error::RangeNotSatisfiable { size: 10, .. })), "range {range:?} was not refused");
    }
    Ok(())
}

/// A file of exactly the size limit (64 MiB) is accepted from a stream
/// generated as it is read, and read back as a stream of bounded chunks,
/// whole or from a range.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn large_file_streams(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "large_file_streams";
    let size = store.max_file_size();
    ensure!(C, size == MAX_FILE_SIZE, "store limit is {size}, the checks need {MAX_FILE_SIZE}");
    let pattern = Arc::new(Pattern::new());
    let meta = store
        .put("large", &file("large.bin"), pattern_stream(pattern.clone(), size, Arc::default()))
        .await
        .ctx(C, "put")?;
    ensure!(C, meta.size == size, "size {}", meta.size);
    let object = store.get_file("large", "large.bin").await.ctx(C, "get")?;
    ensure!(C, object.meta().size == size, "get size {}", object.meta().size);
    let (total, count, largest) = check_pattern_stream(C, &pattern, 0, object.into_stream()).await?;
    ensure!(C, total == size, "read {total} bytes of {size}");
    ensure!(C, count >= 8, "read in {count} chunks, so not streamed");
    ensure!(C, largest <= 8 * MIB, "a chunk of {largest} bytes");

    let start = size / 2 - 10;
    let object = store.get_file("large", "large.bin").await.ctx(C, "get")?;
    let stream = object.into_range_stream(start..start + 3 * MIB as u64).ctx(C, "range")?;
    let (total, _, _) = check_pattern_stream(C, &pattern, start, stream).await?;
    ensure!(C, total == 3 * MIB as u64, "range read {total} bytes");
    Ok(())
}

/// Content types follow the extension; the input document is JSON.
///
/// # Errors
///
/// A [`CheckFailure`] saying what the store did differently.
pub async fn content_types(store: &dyn StagingStore) -> CheckResult {
    const C: &str = "content_types";
    let cases = [
        ("a.csv", "text/csv; charset=utf-8"),
        ("a.tsv", "text/tab-separated-values; charset=utf-8"),
        ("a.json", "application/json"),
        ("a.txt", "text/plain; charset=utf-8"),
        ("a.html", "text/html; charset=utf-8"),
        ("a.png", "image/png"),
        ("a.JPG", "image/jpeg"),
        ("a.svg", "image/svg+xml"),
        ("a.h5ad", "application/octet-stream"),
        ("Makefile", "application/octet-stream"),
    ];
    for (name, want) in cases {
        let meta = store.put_bytes("ct", &file(name), Bytes::new()).await.ctx(C, "put")?;
        ensure!(C, meta.content_type == want, "{name}: {} from put", meta.content_type);
        let object = store.get_file("ct", name).await.ctx(C, "get")?;
        ensure!(C, object.meta().content_type == want, "{name}: {} from get", object.meta().content_type);
    }
    let meta = store.put_input_json("ct", &serde_json::json!(null)).await.ctx(C, "put input")?;
    ensure!(C, meta.content_type == "application/json", "input: {}", meta.content_type);
    Ok(())
}

/// Names of all checks, in the order [`conformance_tests!`](crate::conformance_tests) runs them.
pub const ALL_CHECKS: &[&str] = &[
    "file_round_trip",
    "input_round_trip",
    "empty_file",
    "overwrite",
    "missing_is_not_found",
    "invalid_names",
    "too_large",
    "failed_source_leaves_nothing",
    "concurrent_writers",
    "concurrent_same_file",
    "listing_sorted",
    "delete_one_file",
    "delete_container_removes_all",
    "containers_are_isolated",
    "ranges",
    "large_file_streams",
    "content_types",
];

/// Expands to one `#[tokio::test]` per conformance check, each on a fresh
/// store from `$setup`: an `async fn(max_file_size: u64) -> Fixture`
/// called with [`MAX_FILE_SIZE`](crate::conformance::MAX_FILE_SIZE).
///
/// The calling crate needs `tokio` with the `macros` and
/// `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance_tests {
    ($setup:path) => {
        $crate::conformance_tests!(@each $setup;
            file_round_trip, input_round_trip, empty_file, overwrite,
            missing_is_not_found, invalid_names, too_large,
            failed_source_leaves_nothing, concurrent_writers,
            concurrent_same_file, listing_sorted, delete_one_file,
            delete_container_removes_all, containers_are_isolated, ranges,
            large_file_streams, content_types);
    };
    (@each $setup:path; $($check:ident),+) => {
        #[test]
        fn conformance_covers_every_check() {
            let generated: &[&str] = &[$(stringify!($check)),+];
            assert_eq!(generated, $crate::conformance::ALL_CHECKS);
        }
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture = $setup($crate::conformance::MAX_FILE_SIZE).await;
                if let Err(failure) = $crate::conformance::$check(&*fixture.store).await {
                    panic!("{failure}");
                }
            }
        )+
    };
}
