//! What the unit tests of the server's modules share: an [`ApiState`] over
//! mock containers with one tool, `viewer`.

use std::sync::Arc;
use std::time::Duration;

use berth_axum::api::{ApiState, InputDelivery, ToolDef, ToolRegistry};
use berth_fleet::{Fleet, FleetConfig, MemoryActivityStore};
use berth_manager::{MOCK_TOOL_IMAGE, MockConfig, MockEngine, MockManager};
use berth_proxy::{RouteTable, TableConfig};

/// The API's state over mock tools that answer 503 on `/` for `warmup`
/// after start; its one tool `viewer` takes its input from the environment.
pub async fn mock_api(warmup: Duration) -> ApiState {
    let config = MockConfig { default_warmup: warmup, ..MockConfig::default() };
    let manager = Arc::new(MockManager::with_config(MockEngine::new(), config));
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.expect("route table");
    let fleet = Arc::new(Fleet::new(manager, Arc::new(MemoryActivityStore::new()), FleetConfig::default()));
    let tool = ToolDef {
        description: "views <things>".into(),
        default_parameters: serde_json::json!({"palette": "viridis"}),
        default_files: vec!["http://gw:8001/_berth/data/a.csv".into()],
        input_mode: InputDelivery::Env,
        ..ToolDef::new("viewer", MOCK_TOOL_IMAGE, 16)
    };
    ApiState {
        fleet,
        table,
        history: None,
        registry: Arc::new(ToolRegistry::new(vec![tool])),
        token: None,
        urls: berth_axum::api::PublicUrls::default(),
        owner_label: "berth-owner".into(),
        ready_timeout: Duration::from_secs(5),
        metrics: Arc::default(),
        activity: berth_proxy::ActivityRecorder::disabled(),
        launches: Default::default(),
        images: berth_axum::api::ImagePolicy::default(),
    }
}

/// The server's auth for `api`, configured by the `[auth]` table text
/// `auth_toml` (empty: mode `none`), its key and sessions under `dir`.
pub async fn auth(dir: &std::path::Path, api: &ApiState, auth_toml: &str) -> Arc<crate::auth::Auth> {
    let text = format!("data_dir = {:?}\n{auth_toml}", dir.join("state").display().to_string());
    let config = crate::config::Config::parse(&dir.join("berth.toml"), &text).expect("config");
    let store = Arc::new(berth_history::HistoryStore::in_memory().expect("history"));
    Arc::new(crate::auth::Auth::new(&config, store, api.table.clone(), &api.owner_label).expect("auth"))
}
