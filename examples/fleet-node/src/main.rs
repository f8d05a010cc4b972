//! A berth node in one process: a [`Fleet`] over the Docker engine, its
//! activity in a SQLite history file, and the proxy in front. State lives
//! in the engine (containers, labels) and in the history file, so the
//! process can be killed and started again without losing anything; the
//! restart tests do exactly that.
//!
//! ```text
//! fleet-node --db FILE [--root LABEL] [--orphan-grace SECS] COMMAND
//!   serve --listen ADDR          recover, then proxy /docker/<name>/ until killed
//!   launch NAME IMAGE [MB] [k=v ...]   launch through the fleet (prints the outcome)
//!   kill NAME                    remove through the fleet
//!   recover                      recover only, print the report
//!   lru                          print containers, least recently used first
//!   history NAME                 print the container's request history
//! ```
//!
//! Output is JSON on stdout, one document per command.

#![allow(clippy::print_stdout)] // A command-line program reports on stdout.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use anyhow::{Context, bail};
use berth_fleet::{Fleet, FleetConfig, LaunchOutcome};
use berth_history::{HistoryConfig, HistoryQuery, HistoryStore};
use berth_manager::docker::{DockerConfig, DockerManager, EndpointMode};
use berth_manager::{ContainerSpec, LabelScheme};
use berth_proxy::{ActivityRecorder, Proxy, ProxyConfig, RouteTable, ServerLimits, TableConfig};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let db = take_flag(&mut args, "--db").context("--db FILE is required")?;
    let root = take_flag(&mut args, "--root").unwrap_or_else(|| "berth".to_owned());
    let mut fleet_config = FleetConfig::default();
    if let Some(secs) = take_flag(&mut args, "--orphan-grace") {
        fleet_config.orphan_grace =
            std::time::Duration::from_secs(secs.parse().context("--orphan-grace takes seconds")?);
    }
    let Some((command, rest)) = args.split_first() else {
        bail!("no command; see the module docs");
    };

    let config = DockerConfig::from_env()?
        .labels(LabelScheme::new(root))
        .endpoint_mode(EndpointMode::PublishedPort)
        .publish_ip("127.0.0.1");
    let manager = Arc::new(DockerManager::connect(config).await?);
    let history = Arc::new(HistoryStore::open(&db, HistoryConfig::default()).await?);
    let fleet = Arc::new(Fleet::new(manager.clone(), history.clone(), fleet_config));

    match (command.as_str(), rest) {
        ("serve", [flag, listen]) if flag == "--listen" => {
            let report = fleet.recover().await?;
            println!("{}", json!({"recovered": report.adopted, "removed_half_made": report.removed_half_made}));
            let table = RouteTable::start(manager.clone(), TableConfig::default()).await?;
            let recorder = ActivityRecorder::spawn(history.clone(), 10_000);
            let proxy = Proxy::with_hooks(table, ProxyConfig::default(), berth_proxy::AllowAll, recorder);
            berth_proxy::bind_and_serve(listen.parse()?, proxy, ServerLimits::default()).await?;
        }
        ("launch", [name, image, more @ ..]) => {
            let mb = more.first().and_then(|m| m.parse().ok()).unwrap_or(16);
            let mut spec = ContainerSpec::new(image.clone(), name.clone(), mb);
            for kv in more.iter().skip(1) {
                let (k, v) = kv.split_once('=').with_context(|| format!("label {kv:?} is not k=v"))?;
                spec = spec.label(k, v);
            }
            println!("{}", json!({"launching": name}));
            let outcome = fleet.launch(spec, None).await?;
            let (kind, evicted) = match &outcome {
                LaunchOutcome::Launched { evicted, .. } => ("launched", evicted.clone()),
                LaunchOutcome::Existing(_) => ("existing", vec![]),
            };
            println!("{}", json!({"outcome": kind, "name": outcome.info().name, "evicted": evicted}));
        }
        ("kill", [name]) => {
            fleet.kill(name).await?;
            println!("{}", json!({"killed": name}));
        }
        ("recover", []) => {
            let r = fleet.recover().await?;
            println!(
                "{}",
                json!({"adopted": r.adopted, "removed_half_made": r.removed_half_made, "removed_orphan_volumes": r.removed_orphan_volumes})
            );
        }
        ("lru", []) => {
            let order: Vec<_> = fleet
                .lru_order()
                .await?
                .into_iter()
                .map(|(name, t)| json!({"name": name, "at_ns": t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64}))
                .collect();
            println!("{}", json!(order));
        }
        ("history", [name]) => {
            let entries: Vec<_> = history
                .history(name, HistoryQuery::default())
                .await?
                .into_iter()
                .map(|e| json!({"path": e.path, "status": e.status, "bytes": e.bytes}))
                .collect();
            println!("{}", json!(entries));
        }
        (other, _) => bail!("unknown command or arguments: {other} {rest:?}"),
    }
    history.close().await?;
    Ok(())
}

fn take_flag(args: &mut Vec<String>, flag: &str) -> Option<String> {
    let i = args.iter().position(|a| a == flag)?;
    if i + 1 >= args.len() {
        return None;
    }
    let value = args.remove(i + 1);
    args.remove(i);
    Some(value)
}
