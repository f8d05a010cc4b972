//! Throughput of the history store: 1,000,000 records in batches of 512
//! (the proxy recorder's batch size), written one batch after another
//! through `ActivitySink::record` into a database in a temporary file.
//!
//! ```text
//! cargo run --release --example throughput [records] [batch] [containers]
//! ```
#![allow(clippy::print_stdout)] // Printing the figures is this program's job.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use berth_activity::{ActivityKind, ActivityRecord, ActivitySink};
use berth_history::{HistoryConfig, HistoryQuery, HistoryStore};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().map(|a| a.parse()).transpose().context("records")?.unwrap_or(1_000_000);
    let batch_size: usize = args.next().map(|a| a.parse()).transpose().context("batch size")?.unwrap_or(512);
    let containers: usize = args.next().map(|a| a.parse()).transpose().context("containers")?.unwrap_or(50);

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("history.sqlite3");
    let store = HistoryStore::open(&path, HistoryConfig::default()).await?;

    // Realistic records: interleaved over 50 containers, paths of a web tool's assets and
    // API calls, made ahead so that only the store is measured.
    let start = SystemTime::now();
    let records: Vec<ActivityRecord> = (0..total)
        .map(|i| ActivityRecord {
            container: format!("tool-{:02}", i % containers.max(1)),
            time: start + Duration::from_micros(i as u64),
            path: format!("/api/v1/tiles/{}/{}.json?session=8c2f{}", i % 17, i % 1013, i % 97),
            status: if i % 31 == 0 { 404 } else { 200 },
            bytes: (i % 40_000) as u64,
            kind: if i % 101 == 0 { ActivityKind::WebSocket } else { ActivityKind::Http },
            duration: std::time::Duration::ZERO,
        })
        .collect();
    let batches: Vec<Vec<ActivityRecord>> = records.chunks(batch_size).map(<[_]>::to_vec).collect();

    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for batch in batches {
        let batch_started = Instant::now();
        store.record(batch).await;
        slowest = slowest.max(batch_started.elapsed());
    }
    let took = started.elapsed();
    let stats = store.stats();
    anyhow::ensure!(stats.records_stored == total as u64, "stored {stats:?}");

    let read_started = Instant::now();
    let recent = store.history("tool-00", HistoryQuery { since: None, limit: Some(100) }).await?;
    let read_took = read_started.elapsed();
    anyhow::ensure!(recent.len() == 100.min(total.div_ceil(containers.max(1))));
    store.close().await?;

    let size = std::fs::metadata(&path)?.len();
    println!(
        "{total} records over {containers} containers in batches of {batch_size}: {:.2} s, {:.0} records/s (slowest batch {:.1} ms)",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        slowest.as_secs_f64() * 1e3,
    );
    println!(
        "database {:.1} MiB ({:.0} bytes/record); last 100 of one container read in {:.2} ms",
        size as f64 / (1024.0 * 1024.0),
        size as f64 / total as f64,
        read_took.as_secs_f64() * 1e3,
    );
    Ok(())
}
