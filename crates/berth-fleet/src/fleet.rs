//! [`Fleet`]: launches and removes containers under a memory budget and
//! limits, culls idle ones, and recovers after a restart.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use berth_manager::{
    ContainerInfo, ContainerManager, ContainerManagerExt, ContainerSpec, ContainerState, ListFilter, NodeInfo,
};
use sha2::{Digest, Sha256};

use crate::activity::ActivityStore;
use crate::error::{Error, Result};

/// Settings of a [`Fleet`].
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Total memory reservation allowed, in MiB; `None` means no budget.
    pub memory_budget_mb: Option<u64>,
    /// Most containers at once; `None` means no limit.
    pub max_containers: Option<usize>,
    /// Most containers of one tool at once; `None` means no limit.
    pub max_per_tool: Option<usize>,
    /// Most containers one user (the owner label's value) has at once;
    /// `None` means no limit. Containers without an owner do not count.
    pub max_per_user: Option<usize>,
    /// Label naming a container's owner, for `max_per_user` and per-tool
    /// per-user limits ([`LaunchAs::tool_max_per_user`]); the same label
    /// the launching layer puts on containers (default
    /// [`DEFAULT_OWNER_LABEL`]).
    pub owner_label: String,
    /// Containers with no proxied activity for this long are removed by
    /// the culler (never one younger than this); `None` disables culling.
    pub idle_timeout: Option<Duration>,
    /// How often the culler looks.
    pub cull_interval: Duration,
    /// Containers found in state `created` at recovery that are older than
    /// this are half-made launches of a crashed process, and are removed.
    pub orphan_grace: Duration,
    /// Memory reservation allowed on each node, in MiB, for nodes without
    /// a budget label of their own; `None`: no per-node budget (unless
    /// [`node_budget_labels`](Self::node_budget_labels) finds one).
    pub node_memory_budget_mb: Option<u64>,
    /// Read each node's own budget from its node label
    /// `<root>.mem_budget_mb` (MiB), over `node_memory_budget_mb`.
    pub node_budget_labels: bool,
    /// How many times a launch that no node had room for
    /// ([`Unschedulable`](berth_manager::Error::Unschedulable) for lack of
    /// resources) is retried, each time after evicting the least recently
    /// used containers of a node that meets its constraints where that
    /// makes room (never when no such node could hold it: that is
    /// [`Error::NoRoom`]).
    pub unschedulable_retries: usize,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            memory_budget_mb: None,
            max_containers: None,
            max_per_tool: None,
            max_per_user: None,
            owner_label: DEFAULT_OWNER_LABEL.to_owned(),
            idle_timeout: None,
            cull_interval: Duration::from_secs(30),
            orphan_grace: Duration::from_secs(10),
            node_memory_budget_mb: None,
            node_budget_labels: false,
            unschedulable_retries: 3,
        }
    }
}

/// Default label naming a container's owner.
pub const DEFAULT_OWNER_LABEL: &str = "berth-owner";

/// What a launch counts as under the fleet's limits. Its owner is the
/// value of the spec's owner label ([`FleetConfig::owner_label`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaunchAs<'a> {
    /// The tool launched (per-tool limits; a label on the container).
    pub tool: Option<&'a str>,
    /// The tool's own limit of containers per user, beside the fleet's
    /// [`FleetConfig::max_per_user`].
    pub tool_max_per_user: Option<usize>,
}

/// A launch between its decision and its container.
#[derive(Debug, Clone)]
struct InFlight {
    mem_mb: u64,
    tool: Option<String>,
    owner: Option<String>,
    /// The node it was sent to, under per-node budgets.
    node: Option<String>,
}

/// Resources a container owns outside the engine (staged input files,
/// access tokens, ...), released when the fleet removes it.
#[async_trait]
pub trait ContainerResources: Send + Sync + 'static {
    /// Releases everything held for `name` (it was removed).
    ///
    /// # Errors
    ///
    /// A message for the log; the fleet carries on.
    async fn release(&self, name: &str) -> std::result::Result<(), String>;

    /// Releases everything held for containers not in `live` (recovery
    /// after a crash).
    ///
    /// # Errors
    ///
    /// A message for the log; the fleet carries on.
    async fn retain_only(&self, live: &HashSet<String>) -> std::result::Result<(), String>;
}

/// What a launch did.
#[derive(Debug, Clone, PartialEq)]
pub enum LaunchOutcome {
    /// A new container was launched; `evicted` names the containers removed
    /// first to make room in the memory budget.
    Launched {
        /// The new container.
        info: ContainerInfo,
        /// Containers evicted for it, least recently used first.
        evicted: Vec<String>,
    },
    /// A container with this name and the same spec already existed.
    Existing(ContainerInfo),
}

impl LaunchOutcome {
    /// The container, new or existing.
    pub fn info(&self) -> &ContainerInfo {
        match self {
            LaunchOutcome::Launched { info, .. } | LaunchOutcome::Existing(info) => info,
        }
    }
}

/// What [`Fleet::recover`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Managed containers found running or stopped, by name.
    pub adopted: Vec<String>,
    /// Half-made containers (created, never started) removed.
    pub removed_half_made: Vec<String>,
    /// Containers found created but younger than `orphan_grace`: a launch
    /// of another process may still start them. Adopted for now; the
    /// reaper ([`Fleet::spawn_reaper`], [`Fleet::reap_half_made`]) removes
    /// those still not started once the grace has passed.
    pub young_created: Vec<String>,
    /// Volumes whose container no longer exists, removed.
    pub removed_orphan_volumes: usize,
}

/// The orchestration layer over a [`ContainerManager`]: the equivalent of
/// the original's run wrapper, without its races.
///
/// - Memory budget: a launch whose reservation does not fit first removes
///   the least recently used containers (by last proxied activity, falling
///   back to creation time) until it fits; with nothing left to remove it
///   warns and starts anyway. Budget decisions are serialized and count
///   launches in flight, so concurrent launches never overshoot together.
/// - Per-node budgets (a cluster backend: [`FleetConfig::node_memory_budget_mb`],
///   node labels `<root>.mem_budget_mb`): the sum of reservations on each
///   node stays within its budget. The fleet picks the node (the one meeting
///   the spec's constraints with the most budget left) and pins the launch
///   to it; when none has room it evicts the least recently used containers
///   of the node where that makes room with the oldest victims.
/// - A launch no node has room for ([`Unschedulable`](berth_manager::Error::Unschedulable)
///   for lack of resources, e.g. a swarm task pending with "no suitable
///   node") evicts the least recently used containers of the node meeting
///   its constraints where that makes room for its reservation (by the
///   node's memory and the reservations the fleet sees there) and retries,
///   up to [`FleetConfig::unschedulable_retries`] times; then, or when
///   nothing can be evicted, it fails with that error. When eviction cannot
///   make room (the reservation is more than every eligible node has, or
///   launches in flight hold the rest) nothing is evicted and the launch
///   fails with [`Error::NoRoom`].
/// - Idempotent launch by name: concurrent launches of one name produce
///   one container; an existing name with a different spec is a
///   [`Error::Conflict`]; an existing one of the same spec that has
///   stopped (exited, or lost with its node) is replaced.
/// - Limits on containers in total and per tool.
/// - Idle culling ([`Fleet::spawn_culler`], [`Fleet::purge_inactive`]) and
///   [`Fleet::purge_by_label`].
/// - [`Fleet::kill`] removes the container, its volumes, its resources
///   (staged files, tokens) and marks its history.
/// - [`Fleet::recover`] after a restart: adopts running containers,
///   removes half-made ones and orphaned volumes and resources;
///   [`Fleet::spawn_reaper`] removes half-made containers found later
///   (created too recently at recovery to tell).
pub struct Fleet {
    manager: Arc<dyn ContainerManager>,
    activity: Arc<dyn ActivityStore>,
    resources: Vec<Arc<dyn ContainerResources>>,
    #[cfg(feature = "staging")]
    stager: Option<Arc<crate::staging::Stager>>,
    config: FleetConfig,
    /// Serializes budget and limit decisions.
    decisions: tokio::sync::Mutex<()>,
    /// Reservations of launches between decision and creation.
    in_flight: Mutex<HashMap<String, InFlight>>,
    /// One lock per name being launched, so same-name launches queue.
    name_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Signalled whenever a launch in flight ends (its reservation becomes
    /// a container that can be evicted, or goes away).
    launch_done: tokio::sync::Notify,
    /// Exact launch times of containers this fleet launched (the engine's
    /// listing keeps creation times to the second only).
    launched_at: Mutex<HashMap<String, SystemTime>>,
    /// Evictions and idle culls lately (see [`Fleet::recent_removals`]).
    removals: crate::removals::RecentRemovals,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Label suffix (after the root label and `-fleet.`) holding the spec hash.
const SPEC_SUFFIX: &str = "spec";
/// Label suffix holding the tool name.
const TOOL_SUFFIX: &str = "tool";

impl Fleet {
    /// A fleet over `manager`, reading activity from `activity`.
    pub fn new(manager: Arc<dyn ContainerManager>, activity: Arc<dyn ActivityStore>, config: FleetConfig) -> Self {
        Fleet {
            manager,
            activity,
            resources: Vec::new(),
            #[cfg(feature = "staging")]
            stager: None,
            config,
            decisions: tokio::sync::Mutex::new(()),
            in_flight: Mutex::default(),
            name_locks: Mutex::default(),
            launch_done: tokio::sync::Notify::new(),
            launched_at: Mutex::default(),
            removals: Default::default(),
        }
    }

    /// Adds resources released with each container (e.g. the staging store).
    pub fn with_resources(mut self, resources: Arc<dyn ContainerResources>) -> Self {
        self.resources.push(resources);
        self
    }

    /// Adds a stager: staged launches ([`Fleet::launch_staged`]) put their
    /// input in it, and it is released with each container.
    #[cfg(feature = "staging")]
    pub fn with_stager(mut self, stager: Arc<crate::staging::Stager>) -> Self {
        self.resources.push(stager.clone());
        self.stager = Some(stager);
        self
    }

    /// The stager, when the fleet has one.
    #[cfg(feature = "staging")]
    pub fn stager(&self) -> Option<&Arc<crate::staging::Stager>> {
        self.stager.as_ref()
    }

    /// Label key holding the staging token of a container launched with
    /// staged input (so the token can be restored after a restart).
    pub fn token_label(&self) -> String {
        format!("{}-fleet.token", self.manager.label_scheme().root())
    }

    /// The manager.
    pub fn manager(&self) -> &Arc<dyn ContainerManager> {
        &self.manager
    }

    /// The settings.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// Label key holding the hash of the spec a container was launched from.
    pub fn spec_label(&self) -> String {
        format!("{}-fleet.{SPEC_SUFFIX}", self.manager.label_scheme().root())
    }

    /// Label key holding the tool a container runs.
    pub fn tool_label(&self) -> String {
        format!("{}-fleet.{TOOL_SUFFIX}", self.manager.label_scheme().root())
    }

    fn name_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.name_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(name.to_owned()).or_default().clone()
    }

    fn release_name_lock_by_key(&self, lock: &Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.name_locks.lock().unwrap_or_else(|p| p.into_inner());
        // Two references: the map's and ours. More means someone waits.
        if Arc::strong_count(lock) <= 2 {
            locks.retain(|_, l| !Arc::ptr_eq(l, lock));
        }
    }

    /// Launches `spec` (as tool `tool`, for per-tool limits), or returns
    /// the existing container of that name when its spec is the same.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] when the name exists with another spec;
    /// [`Error::LimitReached`] for the container limits; [`Error::NoRoom`]
    /// when no node meeting its constraints can hold its reservation even
    /// after eviction; the manager's errors for the launch itself.
    pub async fn launch(&self, spec: ContainerSpec, tool: Option<&str>) -> Result<LaunchOutcome> {
        self.launch_inner(spec, LaunchAs { tool, tool_max_per_user: None }, None).await
    }

    /// As [`Fleet::launch`], counted as `what` (its tool, and that tool's
    /// per-user limit).
    ///
    /// # Errors
    ///
    /// As [`Fleet::launch`]; [`Error::LimitReached`] names the per-user
    /// limits too.
    pub async fn launch_as(&self, spec: ContainerSpec, what: LaunchAs<'_>) -> Result<LaunchOutcome> {
        self.launch_inner(spec, what, None).await
    }

    /// Launches `spec` with its input delivered in mode `url`: each of
    /// `files` is staged and its URL appended to the document's
    /// `file_relationships`, then the document is staged and the container
    /// gets `INPUT_JSON_URL`. Everything staged is released with the
    /// container, and when the launch fails.
    ///
    /// # Errors
    ///
    /// As [`Fleet::launch`], plus [`Error::Staging`] and [`Error::NoStaging`].
    #[cfg(feature = "staging")]
    pub async fn launch_staged(
        &self,
        spec: ContainerSpec,
        document: serde_json::Value,
        files: Vec<crate::staging::StagedFile>,
        tool: Option<&str>,
    ) -> Result<LaunchOutcome> {
        self.launch_inner(spec, LaunchAs { tool, tool_max_per_user: None }, Some((document, files))).await
    }

    /// As [`Fleet::launch_staged`], counted as `what`.
    ///
    /// # Errors
    ///
    /// As [`Fleet::launch_staged`].
    #[cfg(feature = "staging")]
    pub async fn launch_staged_as(
        &self,
        spec: ContainerSpec,
        document: serde_json::Value,
        files: Vec<crate::staging::StagedFile>,
        what: LaunchAs<'_>,
    ) -> Result<LaunchOutcome> {
        self.launch_inner(spec, what, Some((document, files))).await
    }

    async fn launch_inner(
        &self,
        mut spec: ContainerSpec,
        what: LaunchAs<'_>,
        staged: Option<Staged>,
    ) -> Result<LaunchOutcome> {
        let tool = what.tool;
        spec.validate()?;
        let hash = spec_hash(&spec, tool, staged.as_ref());
        spec.labels.insert(self.spec_label(), hash.clone());
        if let Some(tool) = tool {
            spec.labels.insert(self.tool_label(), tool.to_owned());
        }
        let lock = self.name_lock(&spec.name);
        let result = {
            let _same_name = lock.lock().await;
            self.launch_locked(spec, what, &hash, staged).await
        };
        self.release_name_lock_by_key(&lock);
        result
    }

    async fn launch_locked(
        &self,
        mut spec: ContainerSpec,
        what: LaunchAs<'_>,
        hash: &str,
        staged: Option<Staged>,
    ) -> Result<LaunchOutcome> {
        match self.manager.inspect(&spec.name).await {
            // A container of the same spec that has stopped (exited, or
            // lost with its node) is replaced: a launch asks for a live one.
            Ok(existing)
                if matches!(existing.state, ContainerState::Exited | ContainerState::Dead)
                    && existing.labels.get(&self.spec_label()).map(String::as_str) == Some(hash) =>
            {
                tracing::info!(name = %spec.name, state = %existing.state, reason = ?existing.message, "replacing a stopped container");
                match self.kill(&spec.name).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(existing) => return self.existing(existing, hash),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let staged_any = staged.is_some();
        if let Some(staged) = staged
            && let Err(e) = self.stage(&mut spec, staged).await
        {
            self.release_resources(&spec.name).await;
            return Err(e);
        }
        let (mut evicted, node) = match self.decide(&spec, what).await {
            Ok(decided) => decided,
            Err(e) => {
                if staged_any {
                    self.release_resources(&spec.name).await;
                }
                return Err(e);
            }
        };
        // Under per-node budgets the fleet picked the node; the hash label
        // was computed before, so the pin does not change the spec's identity.
        if let Some(node) = &node {
            spec.placement.constraints.push(format!("node.id=={node}"));
        }
        let spec = &spec;
        let mut retries = 0;
        let launched: Result<ContainerInfo> = loop {
            let refusal = match self.manager.launch(spec).await {
                Err(e @ berth_manager::Error::Unschedulable { insufficient_resources: true, .. })
                    if retries < self.config.unschedulable_retries =>
                {
                    e
                }
                other => break other.map_err(Error::from),
            };
            retries += 1;
            match self.make_room(spec, refusal).await {
                Ok(victims) => {
                    tracing::info!(name = %spec.name, ?victims, attempt = retries, "no node had room: evicted where that makes room, retrying");
                    evicted.extend(victims);
                }
                Err(e) => break Err(e),
            }
        };
        let conflict = matches!(&launched, Err(Error::Manager(e)) if e.is_conflict());
        // On a conflict the staged resources under this name are the
        // winner's now: keep them.
        if staged_any && launched.is_err() && !conflict {
            self.release_resources(&spec.name).await;
        }
        if launched.is_ok() {
            self.launched_at.lock().unwrap_or_else(|p| p.into_inner()).insert(spec.name.clone(), SystemTime::now());
        }
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&spec.name);
        self.launch_done.notify_waiters();
        let info = match launched {
            Ok(info) => info,
            // Another process (or a fleet on another berth) won the race.
            Err(_) if conflict => return self.existing(self.manager.inspect(&spec.name).await?, hash),
            Err(e) => return Err(e),
        };
        if let Err(e) = self.activity.mark_launched(&spec.name, SystemTime::now()).await {
            tracing::warn!(name = %spec.name, error = %e, "could not mark the launch in the activity store");
        }
        Ok(LaunchOutcome::Launched { info, evicted })
    }

    /// The answer for a name that already exists: the same container when
    /// it was launched from the same spec, else a conflict.
    fn existing(&self, existing: ContainerInfo, hash: &str) -> Result<LaunchOutcome> {
        if existing.labels.get(&self.spec_label()).map(String::as_str) == Some(hash) {
            Ok(LaunchOutcome::Existing(existing))
        } else {
            Err(Error::Conflict { name: existing.name })
        }
    }

    /// Stages the input of a staged launch and points the spec at it.
    #[cfg(feature = "staging")]
    async fn stage(&self, spec: &mut ContainerSpec, (mut document, files): Staged) -> Result<()> {
        let stager = self.stager.as_ref().ok_or(Error::NoStaging)?;
        for file in files {
            let url = stager.stage_file(&spec.name, file).await?;
            match document.get_mut("file_relationships").and_then(|v| v.as_array_mut()) {
                Some(list) => list.push(url.into()),
                None => {
                    if let Some(obj) = document.as_object_mut() {
                        obj.insert("file_relationships".into(), serde_json::json!([url]));
                    }
                }
            }
        }
        let (url, token) = stager.stage_input(&spec.name, &document).await?;
        spec.labels.insert(self.token_label(), token.as_str().to_owned());
        spec.input = Some(berth_manager::Input { document, mode: berth_manager::InputMode::Url { url } });
        Ok(())
    }

    #[cfg(not(feature = "staging"))]
    async fn stage(&self, _spec: &mut ContainerSpec, _staged: Staged) -> Result<()> {
        Ok(())
    }

    async fn release_resources(&self, name: &str) {
        for r in &self.resources {
            if let Err(e) = r.release(name).await {
                tracing::warn!(%name, error = %e, "could not release container resources");
            }
        }
    }

    /// The serialized part of a launch: limits, budget, eviction, and the
    /// reservation of the new container's memory.
    ///
    /// When the budget can only be met once launches in flight have become
    /// containers (which can then be evicted), the decision waits for them
    /// instead of overshooting.
    async fn decide(&self, spec: &ContainerSpec, what: LaunchAs<'_>) -> Result<(Vec<String>, Option<String>)> {
        let mut evicted = Vec::new();
        loop {
            let decision = self.decisions.lock().await;
            let listed = self.manager.list(&ListFilter::all()).await?;
            let in_flight: Vec<(String, InFlight)> = self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let existing: Vec<ContainerInfo> =
                listed.into_iter().filter(|c| !in_flight.iter().any(|(n, _)| *n == c.name)).collect();
            self.check_limits(spec, what, &existing, &in_flight)?;

            if let Some(budget) = self.config.memory_budget_mb {
                // Saturating: reservations of foreign containers are whatever
                // their engine reports.
                let used_existing =
                    existing.iter().map(|c| c.mem_reservation_mb.unwrap_or(0)).fold(0u64, u64::saturating_add);
                let reserved = in_flight.iter().map(|(_, f)| f.mem_mb).fold(0u64, u64::saturating_add);
                let total = used_existing.saturating_add(reserved).saturating_add(spec.mem_reservation_mb);
                if total > budget {
                    let overshoot = total - budget;
                    if used_existing < overshoot && !in_flight.is_empty() {
                        // Evicting every container would not be enough, but
                        // launches in flight will soon be containers that
                        // can be evicted: wait for one to finish, then decide again.
                        let notified = self.launch_done.notified();
                        tokio::pin!(notified);
                        notified.as_mut().enable();
                        drop(decision);
                        notified.await;
                        continue;
                    }
                    let mut used = used_existing.saturating_add(reserved);
                    let last = self.activity.last_activity_all().await?;
                    let mut candidates: Vec<&ContainerInfo> = existing.iter().collect();
                    candidates.sort_by_key(|c| (self.recency(c, &last), c.name.clone()));
                    for victim in candidates {
                        if used.saturating_add(spec.mem_reservation_mb) <= budget {
                            break;
                        }
                        tracing::info!(
                            victim = %victim.name,
                            for_ = %spec.name,
                            used_mb = used,
                            budget_mb = budget,
                            "evicting the least recently used container to fit the memory budget"
                        );
                        match self.kill(&victim.name).await {
                            Ok(()) => self.evicted(victim, spec),
                            Err(e) if e.is_not_found() => {}
                            Err(e) => return Err(e),
                        }
                        used = used.saturating_sub(victim.mem_reservation_mb.unwrap_or(0));
                        evicted.push(victim.name.clone());
                    }
                    if used.saturating_add(spec.mem_reservation_mb) > budget {
                        tracing::warn!(
                            name = %spec.name,
                            need_mb = spec.mem_reservation_mb,
                            used_mb = used,
                            budget_mb = budget,
                            "memory budget exceeded with nothing left to evict; starting anyway"
                        );
                    }
                }
            }
            let node = if self.per_node_budgets() {
                let remaining: Vec<ContainerInfo> =
                    existing.into_iter().filter(|c| !evicted.contains(&c.name)).collect();
                self.choose_node(spec, &remaining, &in_flight, &mut evicted).await?
            } else {
                None
            };
            self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(
                spec.name.clone(),
                InFlight {
                    mem_mb: spec.mem_reservation_mb,
                    tool: what.tool.map(str::to_owned),
                    owner: spec.labels.get(&self.config.owner_label).cloned(),
                    node: node.clone(),
                },
            );
            return Ok((evicted, node));
        }
    }

    fn per_node_budgets(&self) -> bool {
        self.config.node_memory_budget_mb.is_some() || self.config.node_budget_labels
    }

    /// Label key of a node's own memory budget (MiB).
    pub fn node_budget_label(&self) -> String {
        format!("{}.mem_budget_mb", self.manager.label_scheme().root())
    }

    /// A node's memory budget, `None` for no limit.
    fn node_budget(&self, node: &NodeInfo) -> Option<u64> {
        let labelled = if self.config.node_budget_labels { node.labels.get(&self.node_budget_label()) } else { None };
        labelled.and_then(|v| v.trim().parse().ok()).or(self.config.node_memory_budget_mb)
    }

    /// Per-node budgets: the node a launch goes to (the eligible node with
    /// the most budget left), after evicting the least recently used
    /// containers of the one node where that frees room soonest. `None`
    /// lets the backend place it (no eligible node, or no way to make room:
    /// then it starts anyway, as with the total budget).
    async fn choose_node(
        &self,
        spec: &ContainerSpec,
        existing: &[ContainerInfo],
        in_flight: &[(String, InFlight)],
        evicted: &mut Vec<String>,
    ) -> Result<Option<String>> {
        let nodes = self.manager.nodes().await?;
        let single = nodes.len() == 1;
        let eligible: Vec<&NodeInfo> = nodes.iter().filter(|n| n.accepts(&spec.placement)).collect();
        let need = spec.mem_reservation_mb;
        // Containers with no node run on a single engine's one node.
        let on = |node: &NodeInfo, c: &ContainerInfo| match &c.node {
            Some(n) => *n == node.id,
            None => single,
        };
        let live = |c: &&ContainerInfo| matches!(c.state, ContainerState::Running | ContainerState::Created);
        let used = |node: &NodeInfo| -> u64 {
            let here = existing.iter().filter(live).filter(|c| on(node, c)).map(|c| c.mem_reservation_mb.unwrap_or(0));
            let coming =
                in_flight.iter().filter(|(_, f)| f.node.as_deref() == Some(node.id.as_str())).map(|(_, f)| f.mem_mb);
            here.chain(coming).fold(0u64, u64::saturating_add)
        };
        let free = |node: &NodeInfo| self.node_budget(node).map_or(u64::MAX, |b| b.saturating_sub(used(node)));
        if let Some(best) =
            eligible.iter().filter(|n| free(n) >= need).max_by_key(|n| (free(n), std::cmp::Reverse(n.id.clone())))
        {
            return Ok(Some(best.id.clone()));
        }
        if eligible.is_empty() {
            return Ok(None);
        }
        // No node has room: find, per node, the least recently used
        // containers whose removal makes room there; take the node whose
        // needed victims are the oldest (then the fewest).
        let last = self.activity.last_activity_all().await?;
        let mut best: Option<(SystemTime, usize, &NodeInfo, Vec<&ContainerInfo>)> = None;
        for node in &eligible {
            let Some(budget) = self.node_budget(node) else { continue };
            if need > budget {
                continue;
            }
            let mut candidates: Vec<&ContainerInfo> = existing
                .iter()
                .filter(live)
                .filter(|c| on(node, c) && !in_flight.iter().any(|(n, _)| *n == c.name))
                .collect();
            candidates.sort_by_key(|c| (self.recency(c, &last), c.name.clone()));
            let mut used_now = used(node);
            let mut victims = Vec::new();
            for c in candidates {
                if used_now.saturating_add(need) <= budget {
                    break;
                }
                used_now = used_now.saturating_sub(c.mem_reservation_mb.unwrap_or(0));
                victims.push(c);
            }
            if used_now.saturating_add(need) > budget {
                continue;
            }
            let newest = victims.iter().map(|c| self.recency(c, &last)).max().unwrap_or(SystemTime::UNIX_EPOCH);
            if best.as_ref().is_none_or(|(t, n, _, _)| (newest, victims.len()) < (*t, *n)) {
                best = Some((newest, victims.len(), node, victims));
            }
        }
        let Some((_, _, node, victims)) = best else {
            tracing::warn!(
                name = %spec.name,
                need_mb = need,
                nodes = eligible.len(),
                "per-node memory budget exceeded on every eligible node with nothing left to evict; starting anyway"
            );
            return Ok(None);
        };
        for victim in victims {
            tracing::info!(
                victim = %victim.name,
                for_ = %spec.name,
                node = %node.hostname,
                "evicting the least recently used container on the node to fit its memory budget"
            );
            match self.kill(&victim.name).await {
                Ok(()) => self.evicted(victim, spec),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            evicted.push(victim.name.clone());
        }
        Ok(Some(node.id.clone()))
    }

    /// After the backend refused `spec` for lack of resources (`refusal`):
    /// evicts the least recently used containers of the one node meeting
    /// its constraints where that makes room for its reservation, and
    /// returns them (none when, by the fleet's count, a node already has
    /// room: the backend has not yet seen a removal, so retrying is enough).
    ///
    /// The room on a node is its memory less the reservations of the
    /// containers this fleet sees there (running or starting, and launches
    /// in flight to it); a node of unknown memory may always make room by
    /// losing its least recently used container. Of the nodes where
    /// eviction makes room, the one whose needed victims are the oldest
    /// (then the fewest) gives way.
    ///
    /// # Errors
    ///
    /// [`Error::NoRoom`], with nothing evicted, when eviction cannot make
    /// room: the reservation is more than every eligible node has, or
    /// what cannot be evicted leaves too little on each; the refusal
    /// itself when there is no eligible node or nothing to evict; listing
    /// and removal failures.
    async fn make_room(&self, spec: &ContainerSpec, refusal: berth_manager::Error) -> Result<Vec<String>> {
        let _decision = self.decisions.lock().await;
        let nodes = self.manager.nodes().await?;
        let single = nodes.len() == 1;
        let eligible: Vec<&NodeInfo> = nodes.iter().filter(|n| n.accepts(&spec.placement)).collect();
        let need = spec.mem_reservation_mb;
        let no_room = |reason: String, source| Error::NoRoom { name: spec.name.clone(), reason, source };
        if eligible.is_empty() {
            return Err(refusal.into());
        }
        // Eviction cannot make a node larger.
        let largest = eligible.iter().map(|n| n.memory_mb).max().unwrap_or(0);
        if eligible.iter().all(|n| n.memory_mb > 0) && need > largest {
            return Err(no_room(
                format!(
                    "it reserves {need} MiB and the largest of the {} node{} meeting its constraints has {largest} MiB, \
                 so evicting containers cannot help",
                    eligible.len(),
                    if eligible.len() == 1 { "" } else { "s" }
                ),
                refusal,
            ));
        }
        let in_flight: Vec<(String, InFlight)> = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(n, _)| **n != spec.name)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let listed = self.manager.list(&ListFilter::all()).await?;
        let last = self.activity.last_activity_all().await?;
        // Containers with no node run on a single engine's one node.
        let on = |node: &NodeInfo, c: &ContainerInfo| match &c.node {
            Some(n) => *n == node.id,
            None => single,
        };
        let mut best: Option<(SystemTime, usize, &NodeInfo, Vec<&ContainerInfo>)> = None;
        let mut kept_back = Vec::new();
        for node in &eligible {
            let here: Vec<&ContainerInfo> = listed
                .iter()
                .filter(|c| matches!(c.state, ContainerState::Running | ContainerState::Created))
                .filter(|c| c.name != spec.name && on(node, c))
                .collect();
            let (flying, mut candidates): (Vec<&ContainerInfo>, Vec<&ContainerInfo>) =
                here.into_iter().partition(|c| in_flight.iter().any(|(n, _)| *n == c.name));
            candidates.sort_by_key(|c| (self.recency(c, &last), c.name.clone()));
            let victims: Vec<&ContainerInfo> = if node.memory_mb == 0 {
                // Unknown memory: the least recently used container may be
                // enough; the retry tells.
                candidates.into_iter().take(1).collect()
            } else {
                // Launches in flight to this node that are not containers
                // yet hold their reservation too.
                let coming = in_flight
                    .iter()
                    .filter(|(n, f)| {
                        f.node.as_deref() == Some(node.id.as_str()) && !flying.iter().any(|c| c.name == *n)
                    })
                    .map(|(_, f)| f.mem_mb);
                let reserved = |c: &&ContainerInfo| c.mem_reservation_mb.unwrap_or(0);
                let fixed = flying.iter().map(reserved).chain(coming).fold(0u64, u64::saturating_add);
                let mut used = candidates.iter().map(reserved).fold(fixed, u64::saturating_add);
                let mut victims = Vec::new();
                for c in candidates {
                    if used.saturating_add(need) <= node.memory_mb {
                        break;
                    }
                    used = used.saturating_sub(reserved(&c));
                    victims.push(c);
                }
                if used.saturating_add(need) > node.memory_mb {
                    let held = if fixed > 0 {
                        format!(", {fixed} MiB of it held by launches in flight")
                    } else {
                        String::new()
                    };
                    kept_back.push(format!("{} has {} MiB{held}", node.hostname, node.memory_mb));
                    continue;
                }
                if victims.is_empty() {
                    // By the fleet's count this node has room already.
                    return Ok(Vec::new());
                }
                victims
            };
            if victims.is_empty() {
                continue;
            }
            let newest = victims.iter().map(|c| self.recency(c, &last)).max().unwrap_or(SystemTime::UNIX_EPOCH);
            if best.as_ref().is_none_or(|(t, n, _, _)| (newest, victims.len()) < (*t, *n)) {
                best = Some((newest, victims.len(), node, victims));
            }
        }
        let Some((_, _, node, victims)) = best else {
            if kept_back.is_empty() {
                // Nothing of this fleet's runs where it could go.
                return Err(refusal.into());
            }
            return Err(no_room(
                format!(
                    "it reserves {need} MiB and even with every other container evicted no node meeting its \
                     constraints has room ({})",
                    kept_back.join("; ")
                ),
                refusal,
            ));
        };
        let mut evicted = Vec::new();
        for victim in victims {
            tracing::info!(
                victim = %victim.name,
                for_ = %spec.name,
                node = %node.hostname,
                "evicting the least recently used container on the node to make room the backend lacked"
            );
            match self.kill(&victim.name).await {
                Ok(()) => self.evicted(victim, spec),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            evicted.push(victim.name.clone());
        }
        Ok(evicted)
    }

    fn check_limits(
        &self,
        spec: &ContainerSpec,
        what: LaunchAs<'_>,
        existing: &[ContainerInfo],
        in_flight: &[(String, InFlight)],
    ) -> Result<()> {
        let tool = what.tool;
        if let Some(limit) = self.config.max_containers
            && existing.len() + in_flight.len() >= limit
        {
            return Err(Error::LimitReached { name: spec.name.clone(), what: "containers in total".into(), limit });
        }
        if let (Some(limit), Some(tool)) = (self.config.max_per_tool, tool) {
            let tool_label = self.tool_label();
            let same_tool =
                existing.iter().filter(|c| c.labels.get(&tool_label).map(String::as_str) == Some(tool)).count()
                    + in_flight.iter().filter(|(_, f)| f.tool.as_deref() == Some(tool)).count();
            if same_tool >= limit {
                return Err(Error::LimitReached {
                    name: spec.name.clone(),
                    what: format!("containers of tool {tool:?}"),
                    limit,
                });
            }
        }
        let owner_label = &self.config.owner_label;
        let Some(owner) = spec.labels.get(owner_label) else { return Ok(()) };
        let owned = |c: &ContainerInfo| c.labels.get(owner_label) == Some(owner);
        let tool_label = self.tool_label();
        if let Some(limit) = self.config.max_per_user {
            let count = existing.iter().filter(|c| owned(c)).count()
                + in_flight.iter().filter(|(_, f)| f.owner.as_ref() == Some(owner)).count();
            if count >= limit {
                return Err(Error::LimitReached {
                    name: spec.name.clone(),
                    what: format!("containers per user (max_per_user; {owner} has {count})"),
                    limit,
                });
            }
        }
        if let (Some(limit), Some(tool)) = (what.tool_max_per_user, tool) {
            let count = existing
                .iter()
                .filter(|c| owned(c) && c.labels.get(&tool_label).map(String::as_str) == Some(tool))
                .count()
                + in_flight
                    .iter()
                    .filter(|(_, f)| f.owner.as_ref() == Some(owner) && f.tool.as_deref() == Some(tool))
                    .count();
            if count >= limit {
                return Err(Error::LimitReached {
                    name: spec.name.clone(),
                    what: format!(
                        "containers of tool {tool:?} per user (the tool's max_per_user; {owner} has {count})"
                    ),
                    limit,
                });
            }
        }
        Ok(())
    }

    /// When a container was last used: its last proxied activity, else
    /// its launch by this fleet, else its start, else its creation.
    fn recency(&self, c: &ContainerInfo, last: &HashMap<String, SystemTime>) -> SystemTime {
        let launched = self.launched_at.lock().unwrap_or_else(|p| p.into_inner()).get(&c.name).copied();
        let base = launched.into_iter().chain(c.started).fold(c.created, SystemTime::max);
        match last.get(&c.name) {
            Some(t) => (*t).max(base),
            None => base,
        }
    }

    /// The containers this fleet removed on its own lately (evictions and
    /// idle culls, at most [`RECENT_REMOVALS`](crate::RECENT_REMOVALS)),
    /// newest first. Kept in memory: a restart forgets them.
    pub fn recent_removals(&self) -> Vec<crate::removals::Removal> {
        self.removals.newest_first()
    }

    /// Remembers that `victim` was evicted for the launch of `spec`.
    fn evicted(&self, victim: &ContainerInfo, spec: &ContainerSpec) {
        let reason = crate::removals::RemovalReason::Evicted { for_container: spec.name.clone() };
        self.removals.record(&victim.name, &victim.labels, &self.config.owner_label, reason);
    }

    /// Removes the container, its volumes and resources, and marks its
    /// history.
    ///
    /// # Errors
    ///
    /// The manager's errors (`NotFound` when there is no such container).
    pub async fn kill(&self, name: &str) -> Result<()> {
        let removed = self.manager.remove(name).await;
        // Resources go even when the container was already gone: a crash
        // may have left them behind.
        self.release_resources(name).await;
        removed?;
        self.launched_at.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        if let Err(e) = self.activity.mark_removed(name, SystemTime::now()).await {
            tracing::warn!(%name, error = %e, "could not mark the removal in the activity store");
        }
        Ok(())
    }

    /// Removes containers with no proxied activity for `idle` (never one
    /// younger than `idle`); returns their names.
    ///
    /// # Errors
    ///
    /// Listing or activity-store failures; a container that cannot be
    /// removed is logged and skipped.
    pub async fn purge_inactive(&self, idle: Duration) -> Result<Vec<String>> {
        let now = SystemTime::now();
        let last = self.activity.last_activity_all().await?;
        let mut removed = Vec::new();
        for c in self.manager.list(&ListFilter::all()).await? {
            if self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&c.name) {
                continue;
            }
            let since = self.recency(&c, &last);
            let age = now.duration_since(c.created).unwrap_or_default();
            let quiet = now.duration_since(since).unwrap_or_default();
            if age >= idle && quiet >= idle {
                match self.kill(&c.name).await {
                    Ok(()) => {
                        tracing::info!(name = %c.name, idle_secs = quiet.as_secs(), "culled idle container");
                        let reason = crate::removals::RemovalReason::Idle { idle: quiet };
                        self.removals.record(&c.name, &c.labels, &self.config.owner_label, reason);
                        removed.push(c.name);
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => tracing::warn!(name = %c.name, error = %e, "could not cull container"),
                }
            }
        }
        Ok(removed)
    }

    /// Removes every container carrying label `key` (equal to `value`
    /// when given); returns their names.
    ///
    /// # Errors
    ///
    /// Listing failures; a container that cannot be removed is logged and skipped.
    pub async fn purge_by_label(&self, key: &str, value: Option<&str>) -> Result<Vec<String>> {
        let filter = match value {
            Some(v) => ListFilter::all().label(key, v),
            None => ListFilter::all().has_label(key),
        };
        let mut removed = Vec::new();
        for c in self.manager.list(&filter).await? {
            match self.kill(&c.name).await {
                Ok(()) => removed.push(c.name),
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!(name = %c.name, error = %e, "could not purge container"),
            }
        }
        Ok(removed)
    }

    /// Starts the idle culler (when `idle_timeout` is set); it stops when
    /// the fleet is dropped.
    pub fn spawn_culler(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let idle = self.config.idle_timeout?;
        let interval = self.config.cull_interval;
        let fleet = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(fleet) = fleet.upgrade() else { return };
                if let Err(e) = fleet.purge_inactive(idle).await {
                    tracing::warn!(error = %e, "idle culling failed");
                }
            }
        }))
    }

    /// Brings the fleet back after a restart: adopts the managed containers
    /// found, removes half-made ones (created and never started, older than
    /// `orphan_grace`: a process died mid-launch), volumes whose container
    /// is gone, and resources of containers that no longer exist.
    ///
    /// # Errors
    ///
    /// Listing failures.
    pub async fn recover(&self) -> Result<RecoveryReport> {
        let now = SystemTime::now();
        let mut report = RecoveryReport::default();
        let mut live = HashSet::new();
        for c in self.manager.list(&ListFilter::all()).await? {
            let age = now.duration_since(c.created).unwrap_or_default();
            if c.state == ContainerState::Created && age >= self.config.orphan_grace {
                tracing::warn!(name = %c.name, "removing a half-made container left by a crash");
                match self.manager.remove_if_exists(&c.name).await {
                    Ok(_) => report.removed_half_made.push(c.name),
                    Err(e) => tracing::warn!(name = %c.name, error = %e, "could not remove half-made container"),
                }
                continue;
            }
            if c.state == ContainerState::Created {
                tracing::info!(
                    name = %c.name,
                    age_secs = age.as_secs_f64(),
                    "a container was created but not started yet; it is removed if it is still not started once \
                     orphan_grace has passed"
                );
                report.young_created.push(c.name.clone());
            }
            #[cfg(feature = "staging")]
            if let (Some(stager), Some(token)) = (&self.stager, c.labels.get(&self.token_label())) {
                match token.parse() {
                    Ok(token) => {
                        if let Err(e) = stager.restore(&c.name, token) {
                            tracing::warn!(name = %c.name, error = %e, "could not restore staging token");
                        }
                    }
                    Err(_) => tracing::warn!(name = %c.name, "container carries a malformed staging token"),
                }
            }
            live.insert(c.name.clone());
            report.adopted.push(c.name);
        }
        let in_flight: HashSet<String> =
            self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        report.removed_orphan_volumes = self.manager.prune_volumes().await?.len();
        let mut keep = live.clone();
        keep.extend(in_flight);
        for r in &self.resources {
            if let Err(e) = r.retain_only(&keep).await {
                tracing::warn!(error = %e, "could not release resources of vanished containers");
            }
        }
        report.adopted.sort();
        tracing::info!(
            adopted = report.adopted.len(),
            half_made = report.removed_half_made.len(),
            orphan_volumes = report.removed_orphan_volumes,
            "fleet recovered"
        );
        Ok(report)
    }

    /// Removes half-made containers: still `created` (never started), older
    /// than `orphan_grace`, and not being launched by this fleet. These are
    /// launches of a process that died between creating and starting them,
    /// which [`recover`](Self::recover) saw too young to judge. Each is
    /// inspected again right before removal, so one that started since the
    /// list is kept. Returns the names removed.
    ///
    /// # Errors
    ///
    /// Listing failures; a container that cannot be removed is logged.
    pub async fn reap_half_made(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let launching = |name: &str| self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).contains_key(name);
        for c in self.manager.list(&ListFilter::all()).await? {
            if c.state != ContainerState::Created || launching(&c.name) {
                continue;
            }
            // The list may be stale: look again before judging.
            let Ok(now) = self.manager.inspect(&c.name).await else { continue };
            let age = SystemTime::now().duration_since(now.created).unwrap_or_default();
            if now.state != ContainerState::Created || age < self.config.orphan_grace || launching(&c.name) {
                continue;
            }
            tracing::warn!(name = %c.name, age_secs = age.as_secs(), "removing a half-made container (never started)");
            match self.kill(&c.name).await {
                Ok(()) => removed.push(c.name),
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!(name = %c.name, error = %e, "could not remove a half-made container"),
            }
        }
        Ok(removed)
    }

    /// Runs [`reap_half_made`](Self::reap_half_made) every `orphan_grace`
    /// (at least every second) until the fleet is dropped.
    pub fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let every = self.config.orphan_grace.max(Duration::from_secs(1));
        let fleet = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(fleet) = fleet.upgrade() else { return };
                if let Err(e) = fleet.reap_half_made().await {
                    tracing::warn!(error = %e, "looking for half-made containers failed");
                }
            }
        })
    }

    /// Managed containers ordered least recently used first, with the time
    /// that ordering used (last activity, else creation).
    ///
    /// # Errors
    ///
    /// Listing or activity-store failures.
    pub async fn lru_order(&self) -> Result<Vec<(String, SystemTime)>> {
        let last = self.activity.last_activity_all().await?;
        let mut out: Vec<(String, SystemTime)> = self
            .manager
            .list(&ListFilter::all())
            .await?
            .iter()
            .map(|c| (c.name.clone(), self.recency(c, &last)))
            .collect();
        out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        Ok(out)
    }
}

/// The input of a staged launch: the document and the data files.
#[cfg(feature = "staging")]
type Staged = (serde_json::Value, Vec<crate::staging::StagedFile>);
/// Without staging there is no staged input.
#[cfg(not(feature = "staging"))]
type Staged = (serde_json::Value, Vec<std::convert::Infallible>);

/// A stable hash of what a launch asks for (spec, tool, staged document and
/// file names), so a repeated launch can be told from a different one with
/// the same name. Staging URLs (which carry fresh tokens) are not part of it.
fn spec_hash(spec: &ContainerSpec, tool: Option<&str>, staged: Option<&Staged>) -> String {
    let staged = staged.map(|(document, files)| {
        #[cfg(feature = "staging")]
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        #[cfg(not(feature = "staging"))]
        let names: Vec<&str> = files.iter().map(|f| match *f {}).collect();
        serde_json::json!({ "document": document, "files": names })
    });
    let canonical = serde_json::json!({ "spec": spec, "tool": tool, "staged": staged });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_hash_tells_specs_apart() {
        let a = ContainerSpec::new("tool", "x", 10);
        assert_eq!(spec_hash(&a, None, None), spec_hash(&a.clone(), None, None));
        assert_ne!(spec_hash(&a, None, None), spec_hash(&a.clone().env("K", "V"), None, None));
        assert_ne!(spec_hash(&a, None, None), spec_hash(&a, Some("csv"), None));
        // Labels and env are maps with sorted keys, so order of insertion does not matter.
        let b1 = a.clone().env("A", "1").env("B", "2");
        let b2 = a.clone().env("B", "2").env("A", "1");
        assert_eq!(spec_hash(&b1, None, None), spec_hash(&b2, None, None));
    }
}
