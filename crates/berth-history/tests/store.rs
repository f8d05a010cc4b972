//! The store's contract, through its public API.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_activity::{ActivityKind, ActivityRecord, ActivityRecorder, ActivitySink};
use berth_history::{Error, HistoryConfig, HistoryQuery, HistoryStats, HistoryStore, PruneStats};

/// A fixed origin, so that tests can use a fake clock.
fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
}

fn rec(container: &str, ms: u64, path: &str) -> ActivityRecord {
    ActivityRecord {
        container: container.into(),
        time: at(ms),
        path: path.into(),
        status: 200,
        bytes: 100,
        kind: ActivityKind::Http,
        duration: std::time::Duration::ZERO,
    }
}

async fn paths(store: &HistoryStore, container: &str, query: HistoryQuery) -> Vec<String> {
    store.history(container, query).await.unwrap().into_iter().map(|e| e.path).collect()
}

const ALL: HistoryQuery = HistoryQuery { since: None, limit: None };

#[tokio::test]
async fn a_batch_comes_back_in_time_order_ties_by_insertion() {
    let store = HistoryStore::in_memory().unwrap();
    let mut socket = rec("viz", 5, "/ws");
    socket.kind = ActivityKind::WebSocket;
    socket.status = 101;
    socket.bytes = u64::from(u32::MAX) * 4;
    store
        .record(vec![
            rec("viz", 30, "/c"),
            rec("viz", 10, "/a"),
            rec("other", 1, "/elsewhere"),
            rec("viz", 20, "/b1"),
            rec("viz", 20, "/b2"),
            socket.clone(),
        ])
        .await;
    // A later batch with an equal time still sorts after the earlier ones.
    store.record(vec![rec("viz", 20, "/b3")]).await;

    assert_eq!(paths(&store, "viz", ALL).await, ["/ws", "/a", "/b1", "/b2", "/b3", "/c"]);
    assert_eq!(paths(&store, "other", ALL).await, ["/elsewhere"]);
    assert!(paths(&store, "nobody", ALL).await.is_empty());

    let first = &store.history("viz", ALL).await.unwrap()[0];
    assert_eq!(
        (first.time, first.status, first.bytes, first.kind),
        (socket.time, 101, socket.bytes, ActivityKind::WebSocket)
    );
    assert_eq!(store.stats(), HistoryStats { records_stored: 7, records_failed: 0 });
}

#[tokio::test]
async fn since_is_inclusive_and_limit_keeps_the_most_recent() {
    let store = HistoryStore::in_memory().unwrap();
    store.record((0..10).map(|i| rec("viz", i * 10, &format!("/{i}"))).collect()).await;

    let since = |ms| HistoryQuery { since: Some(at(ms)), limit: None };
    let limit = |n| HistoryQuery { since: None, limit: Some(n) };
    assert_eq!(paths(&store, "viz", since(70)).await, ["/7", "/8", "/9"]);
    assert_eq!(paths(&store, "viz", since(71)).await, ["/8", "/9"]);
    assert_eq!(paths(&store, "viz", limit(3)).await, ["/7", "/8", "/9"]);
    assert_eq!(paths(&store, "viz", limit(100)).await.len(), 10);
    assert!(paths(&store, "viz", limit(0)).await.is_empty());
    let both = HistoryQuery { since: Some(at(20)), limit: Some(2) };
    assert_eq!(paths(&store, "viz", both).await, ["/8", "/9"]);
    assert!(paths(&store, "viz", since(1_000)).await.is_empty());
}

#[tokio::test]
async fn last_activity_is_the_latest_time_whatever_the_arrival_order() {
    let store = HistoryStore::in_memory().unwrap();
    assert_eq!(store.last_activity("viz").await.unwrap(), None);
    assert!(store.last_activity_all().await.unwrap().is_empty());

    store.record(vec![rec("viz", 50, "/"), rec("viz", 40, "/"), rec("nb", 7, "/")]).await;
    // A late batch with older records does not move the time back.
    store.record(vec![rec("viz", 45, "/late")]).await;
    assert_eq!(store.last_activity("viz").await.unwrap(), Some(at(50)));
    store.record(vec![rec("viz", 60, "/")]).await;
    assert_eq!(store.last_activity("viz").await.unwrap(), Some(at(60)));

    let all = store.last_activity_all().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all["viz"], at(60));
    assert_eq!(all["nb"], at(7));

    // A name only marked (no traffic) has no last activity.
    store.mark_launched("quiet", at(0)).await.unwrap();
    assert_eq!(store.last_activity("quiet").await.unwrap(), None);
    assert_eq!(store.last_activity_all().await.unwrap().len(), 2);
}

#[tokio::test]
async fn removed_containers_are_pruned_once_the_retention_has_passed() {
    let config = HistoryConfig { retention: Duration::from_secs(60), ..HistoryConfig::default() };
    let store = HistoryStore::in_memory_with(config).unwrap();
    store.record(vec![rec("gone", 1, "/a"), rec("gone", 2, "/b"), rec("kept", 3, "/c")]).await;
    store.mark_removed("gone", at(1_000)).await.unwrap();

    // Still within the retention: readable, nothing pruned.
    assert_eq!(store.prune(at(1_000 + 59_999)).await.unwrap(), PruneStats::default());
    assert_eq!(paths(&store, "gone", ALL).await, ["/a", "/b"]);
    assert_eq!(store.last_activity("gone").await.unwrap(), Some(at(2)));

    assert_eq!(store.prune(at(1_000 + 60_000)).await.unwrap(), PruneStats { containers: 1, records: 2 });
    assert!(paths(&store, "gone", ALL).await.is_empty());
    assert_eq!(store.last_activity("gone").await.unwrap(), None);
    assert_eq!(paths(&store, "kept", ALL).await, ["/c"]);
    // Running containers are never pruned by retention, however old.
    assert_eq!(store.prune(at(u64::from(u32::MAX))).await.unwrap(), PruneStats::default());
}

#[tokio::test]
async fn zero_retention_prunes_at_the_removal_time() {
    let config = HistoryConfig { retention: Duration::ZERO, ..HistoryConfig::default() };
    let store = HistoryStore::in_memory_with(config).unwrap();
    store.record(vec![rec("viz", 1, "/")]).await;
    store.mark_removed("viz", at(10)).await.unwrap();
    assert_eq!(store.prune(at(9)).await.unwrap(), PruneStats::default());
    assert_eq!(store.prune(at(10)).await.unwrap(), PruneStats { containers: 1, records: 1 });
    assert!(store.last_activity_all().await.unwrap().is_empty());
}

#[tokio::test]
async fn max_age_drops_old_records_of_every_container() {
    let config = HistoryConfig { max_age: Some(Duration::from_millis(100)), ..HistoryConfig::default() };
    let store = HistoryStore::in_memory_with(config).unwrap();
    store.record(vec![rec("a", 0, "/old"), rec("a", 150, "/new"), rec("b", 10, "/old"), rec("b", 100, "/edge")]).await;

    assert_eq!(store.prune(at(200)).await.unwrap(), PruneStats { containers: 0, records: 2 });
    assert_eq!(paths(&store, "a", ALL).await, ["/new"]);
    assert_eq!(paths(&store, "b", ALL).await, ["/edge"]);
    // The last activity is a fact about the container, not a record.
    assert_eq!(store.last_activity("b").await.unwrap(), Some(at(100)));
}

#[tokio::test]
async fn a_reused_name_starts_without_the_earlier_incarnations_history() {
    let store = HistoryStore::in_memory().unwrap();
    store.mark_launched("viz", at(0)).await.unwrap();
    store.record(vec![rec("viz", 10, "/first-user")]).await;

    // Launching again without a removal (re-adoption after a restart)
    // keeps the history.
    store.mark_launched("viz", at(0)).await.unwrap();
    assert_eq!(paths(&store, "viz", ALL).await, ["/first-user"]);

    store.mark_removed("viz", at(20)).await.unwrap();
    assert_eq!(paths(&store, "viz", ALL).await, ["/first-user"], "history stays until pruned");
    store.mark_launched("viz", at(30)).await.unwrap();
    assert!(paths(&store, "viz", ALL).await.is_empty());
    assert_eq!(store.last_activity("viz").await.unwrap(), None);

    store.record(vec![rec("viz", 40, "/second-user")]).await;
    assert_eq!(paths(&store, "viz", ALL).await, ["/second-user"]);
    // The new incarnation is not flagged removed, so retention leaves it.
    assert_eq!(store.prune(at(u64::from(u32::MAX))).await.unwrap(), PruneStats::default());
    assert_eq!(store.last_activity("viz").await.unwrap(), Some(at(40)));
}

#[tokio::test]
async fn forget_deletes_everything_of_one_container() {
    let store = HistoryStore::in_memory().unwrap();
    store.record(vec![rec("a", 1, "/"), rec("b", 2, "/")]).await;
    store.mark_removed("a", at(5)).await.unwrap();
    store.forget("a").await.unwrap();
    store.forget("never-seen").await.unwrap();
    assert!(paths(&store, "a", ALL).await.is_empty());
    assert_eq!(store.last_activity("a").await.unwrap(), None);
    assert_eq!(store.last_activity_all().await.unwrap().keys().collect::<Vec<_>>(), ["b"]);
    // Nothing is left for prune to find either.
    assert_eq!(store.prune(at(u64::from(u32::MAX))).await.unwrap(), PruneStats::default());
}

#[tokio::test]
async fn history_and_last_activity_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The parent directory does not exist yet: open creates it.
    let path = dir.path().join("state").join("history.sqlite3");

    let store = HistoryStore::open(&path, HistoryConfig::default()).await.unwrap();
    store.record(vec![rec("viz", 10, "/a"), rec("viz", 20, "/b"), rec("nb", 5, "/n")]).await;
    store.mark_removed("nb", at(30)).await.unwrap();
    store.close().await.unwrap();
    assert!(matches!(store.history("viz", ALL).await, Err(Error::Closed)));
    drop(store);

    let store = HistoryStore::open(&path, HistoryConfig::default()).await.unwrap();
    assert_eq!(paths(&store, "viz", ALL).await, ["/a", "/b"]);
    assert_eq!(store.last_activity("viz").await.unwrap(), Some(at(20)));
    assert_eq!(store.last_activity_all().await.unwrap().len(), 2);
    // The removal mark survived too: a relaunch of the name starts afresh.
    store.mark_launched("nb", at(40)).await.unwrap();
    assert!(paths(&store, "nb", ALL).await.is_empty());

    // Dropping without close loses nothing committed either.
    store.record(vec![rec("viz", 30, "/c")]).await;
    drop(store);
    let store = HistoryStore::open(&path, HistoryConfig::default()).await.unwrap();
    assert_eq!(paths(&store, "viz", ALL).await, ["/a", "/b", "/c"]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "this is not an sqlite database, but it is long enough to have a header".repeat(20)).unwrap();
    let err = HistoryStore::open(&path, HistoryConfig::default()).await.unwrap_err();
    assert!(matches!(err, Error::Sqlite { .. }), "{err:?}");
    assert!(err.to_string().contains("notes.txt"), "{err}");

    let err = HistoryStore::open(dir.path(), HistoryConfig::default()).await.unwrap_err();
    assert!(matches!(err, Error::Sqlite { .. }), "{err:?}");
}

#[tokio::test]
async fn a_closed_store_says_so() {
    let store = HistoryStore::in_memory().unwrap();
    store.close().await.unwrap();
    store.close().await.unwrap();
    assert!(matches!(store.try_record(vec![rec("viz", 1, "/")]).await, Err(Error::Closed)));
    assert!(matches!(store.last_activity_all().await, Err(Error::Closed)));
    assert!(matches!(store.prune(at(0)).await, Err(Error::Closed)));
    assert_eq!(Error::Closed.to_string(), "history store is closed");
    // The sink logs instead of failing, and counts the loss.
    store.record(vec![rec("viz", 1, "/"), rec("viz", 2, "/")]).await;
    assert_eq!(store.stats(), HistoryStats { records_stored: 0, records_failed: 3 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_all_land_and_keep_their_order() {
    let store = Arc::new(HistoryStore::in_memory().unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                for batch in 0..25u64 {
                    let records = (0..40u64)
                        .flat_map(|i| {
                            let n = batch * 40 + i;
                            // All tasks share container "shared" and one time,
                            // so only insertion order tells records apart.
                            [
                                rec(&format!("own-{task}"), n, &format!("/{n}")),
                                rec("shared", 1, &format!("/{task}/{n}")),
                            ]
                        })
                        .collect();
                    store.record(records).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    assert_eq!(store.stats(), HistoryStats { records_stored: 8 * 25 * 80, records_failed: 0 });
    for task in 0..8 {
        let own = paths(&store, &format!("own-{task}"), ALL).await;
        assert_eq!(own, (0..1000).map(|n| format!("/{n}")).collect::<Vec<_>>());
    }
    let shared = paths(&store, "shared", ALL).await;
    assert_eq!(shared.len(), 8 * 1000);
    for task in 0..8 {
        let prefix = format!("/{task}/");
        let mine: Vec<_> = shared.iter().filter(|p| p.starts_with(&prefix)).cloned().collect();
        let expected: Vec<_> = (0..1000).map(|n| format!("{prefix}{n}")).collect();
        assert_eq!(mine, expected, "records of one task at one time keep their insertion order");
    }
    assert_eq!(store.last_activity_all().await.unwrap().len(), 9);
}

#[tokio::test]
async fn a_100k_record_batch_is_stored_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path().join("h.db"), HistoryConfig::default()).await.unwrap();
    let batch: Vec<_> =
        (0..100_000u64).map(|i| rec(&format!("c{}", i % 16), i, &format!("/static/app.js?v={i}"))).collect();
    let started = Instant::now();
    store.try_record(batch).await.unwrap();
    let took = started.elapsed();
    println!("100k records in one batch: {took:?}");
    // Tens of milliseconds in release, a few hundred in a debug build (the
    // bundled SQLite is then compiled without optimization); the bound is
    // for a slow shared CI machine.
    assert!(took < Duration::from_secs(10), "100k records took {took:?}");
    assert_eq!(store.history("c3", ALL).await.unwrap().len(), 100_000 / 16);
    assert_eq!(store.last_activity("c15").await.unwrap(), Some(at(99_999)));
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_proxys_recorder_drains_into_the_store() {
    let store = Arc::new(HistoryStore::in_memory().unwrap());
    let recorder = ActivityRecorder::spawn(store.clone(), 1024);
    for i in 0..100 {
        recorder.record(rec("viz", i, &format!("/{i}")));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().records_stored < 100 {
        assert!(Instant::now() < deadline, "records did not arrive: {:?}", store.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(paths(&store, "viz", ALL).await.len(), 100);
    assert_eq!(recorder.dropped(), 0);
}

#[tokio::test]
async fn the_pruner_task_prunes_and_stops_with_the_store() {
    let config = HistoryConfig {
        retention: Duration::ZERO,
        prune_interval: Duration::from_millis(10),
        ..HistoryConfig::default()
    };
    let store = Arc::new(HistoryStore::in_memory_with(config).unwrap());
    let pruner = store.clone().spawn_pruner();
    store.record(vec![rec("viz", 1, "/")]).await;
    store.mark_removed("viz", SystemTime::now()).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while store.last_activity("viz").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the pruner did not prune");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(store);
    tokio::time::timeout(Duration::from_secs(10), pruner).await.unwrap().unwrap();
}
