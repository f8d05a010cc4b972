//! What only `LocalDirStore` promises: its layout on disk, atomic writes
//! that leave no temporary files, clean-up at start-up, durability.

use std::path::Path;
use std::time::Duration;

use berth_staging::{LocalDirStore, ObjectKey, StagingStore, StagingStoreExt};
use bytes::Bytes;
use futures_util::{StreamExt, stream};

fn temp_entries(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join(".tmp"))
        .expect("read .tmp")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn layout_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalDirStore::open(dir.path()).await.expect("open");
    assert_eq!(store.root(), dir.path());
    store.put_input_json("viz-1", &serde_json::json!({"a": 1})).await.expect("put input");
    store.put_bytes("viz-1", &ObjectKey::file("counts.csv"), Bytes::from_static(b"x,y\n")).await.expect("put file");
    let input = std::fs::read(dir.path().join("viz-1/input.json")).expect("input.json");
    assert_eq!(input, br#"{"a":1}"#);
    let file = std::fs::read(dir.path().join("viz-1/files/counts.csv")).expect("counts.csv");
    assert_eq!(file, b"x,y\n");
    assert!(temp_entries(dir.path()).is_empty());
    assert_eq!(store.capabilities().backend, "local-dir");
    assert!(store.capabilities().durable);
}

#[tokio::test]
async fn startup_removes_leftovers_of_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join(".tmp/del-old-1/files")).expect("mkdir");
    std::fs::write(root.join(".tmp/del-old-1/files/a.csv"), b"old").expect("write");
    std::fs::write(root.join(".tmp/put-0123456789abcdef"), b"half a fi").expect("write");
    std::fs::create_dir_all(root.join("kept/files")).expect("mkdir");
    std::fs::write(root.join("kept/files/b.csv"), b"kept").expect("write");

    let store = LocalDirStore::open(root).await.expect("open");
    assert!(temp_entries(root).is_empty(), "leftovers: {:?}", temp_entries(root));
    assert_eq!(store.containers().await.expect("containers"), ["kept"]);
    let bytes = store.read_bytes("kept", &ObjectKey::file("b.csv")).await.expect("read");
    assert_eq!(&bytes[..], b"kept");
}

#[tokio::test]
async fn failed_and_cancelled_writes_leave_no_temporary_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalDirStore::open(dir.path()).await.expect("open").with_max_file_size(10);
    let key = ObjectKey::file("a.bin");

    let r = store.put_bytes("c", &key, Bytes::from_static(b"eleven byte")).await;
    assert!(r.expect_err("too large").is_too_large());

    let broken = stream::iter([Ok(Bytes::from_static(b"abc")), Err(std::io::Error::other("broken pipe"))]);
    let r = store.put_file("c", "a.bin", broken).await;
    assert!(matches!(r, Err(berth_staging::Error::Source { .. })), "{r:?}");

    // A writer whose client stops sending: the put is cancelled (dropped)
    // while the temporary file exists.
    let stalled = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"abc"))]).chain(stream::pending());
    let r = tokio::time::timeout(Duration::from_millis(200), store.put_file("c", "a.bin", stalled)).await;
    assert!(r.is_err(), "the stalled put finished: {r:?}");

    assert!(temp_entries(dir.path()).is_empty(), "leftovers: {:?}", temp_entries(dir.path()));
    assert!(!dir.path().join("c/files/a.bin").exists());
    assert!(store.list_files("c").await.expect("list").is_empty());
}

#[tokio::test]
async fn objects_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ObjectKey::file("data.tsv");
    let first = {
        let store = LocalDirStore::open(dir.path()).await.expect("open");
        store.put_bytes("persist", &key, Bytes::from_static(b"a\tb\n")).await.expect("put")
    };
    let store = LocalDirStore::open(dir.path()).await.expect("reopen");
    let meta = store.stat("persist", &key).await.expect("stat");
    assert_eq!(meta.size, first.size);
    assert_eq!(meta.modified, first.modified);
    // Stable across reads, even though the content hash is not known after
    // the restart.
    let again = store.stat("persist", &key).await.expect("stat again");
    assert_eq!(meta.etag, again.etag);
    let listed = store.list_files("persist").await.expect("list");
    assert_eq!(listed[0].etag, meta.etag);
    // And it changes when the file does.
    let rewritten = store.put_bytes("persist", &key, Bytes::from_static(b"c\td\n")).await.expect("put");
    assert_ne!(rewritten.etag, meta.etag);
    assert_eq!(store.stat("persist", &key).await.expect("stat").etag, rewritten.etag);
}

#[tokio::test]
async fn an_open_object_keeps_its_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalDirStore::open(dir.path()).await.expect("open");
    let key = ObjectKey::file("v.txt");
    store.put_bytes("ver", &key, Bytes::from(vec![b'1'; 300_000])).await.expect("put v1");
    let opened = store.get("ver", &key).await.expect("get");
    store.put_bytes("ver", &key, Bytes::from(vec![b'2'; 10])).await.expect("put v2");
    assert!(store.delete_container("ver").await.expect("delete"));
    let bytes = opened.into_bytes().await.expect("read v1");
    assert_eq!(bytes.len(), 300_000);
    assert!(bytes.iter().all(|b| *b == b'1'));
}

#[tokio::test]
async fn foreign_entries_are_not_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let store = LocalDirStore::open(root).await.expect("open");
    store.put_bytes("own", &ObjectKey::file("ok.csv"), Bytes::from_static(b"1")).await.expect("put");
    std::fs::create_dir_all(root.join("own/files/subdir")).expect("mkdir");
    std::fs::write(root.join("own/files/bad..name"), b"x").expect("write");
    std::fs::create_dir_all(root.join("Not-A-Label")).expect("mkdir");
    std::fs::write(root.join("stray-file"), b"x").expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"latin1-\xe9.csv");
        std::fs::write(root.join("own/files").join(name), b"x").expect("write");
    }
    let listed = store.list_files("own").await.expect("list");
    let names: Vec<_> = listed.iter().filter_map(|m| m.key.file_name()).collect();
    assert_eq!(names, ["ok.csv"]);
    assert_eq!(store.containers().await.expect("containers"), ["own"]);
    let r = store.get_file("own", "subdir").await;
    assert!(r.expect_err("a directory is not a file").is_not_found());
}

#[tokio::test]
async fn files_can_be_staged_from_a_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalDirStore::open(dir.path()).await.expect("open");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let meta = store
        .put_reader("rd", &ObjectKey::file("r.bin"), std::io::Cursor::new(content.clone()))
        .await
        .expect("put from reader");
    assert_eq!(meta.size, content.len() as u64);
    let bytes = store.read_bytes("rd", &ObjectKey::file("r.bin")).await.expect("read");
    assert_eq!(bytes[..], content[..]);
}
