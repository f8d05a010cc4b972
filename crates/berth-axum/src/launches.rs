//! [`Launches`]: the launches under way and those that failed recently, by
//! container name. It is what the launch-progress stream reports before
//! (or instead of) a container, and how a page that answered before its
//! launch finished learns the outcome.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::auth::Identity;

/// How long [`Launches`] remembers a launch that failed.
pub const FAILED_LAUNCH_MEMORY: Duration = Duration::from_secs(300);

/// Most records [`Launches`] keeps; beyond it the oldest failures go first.
pub const MAX_LAUNCH_RECORDS: usize = 10_000;

/// Launches under way and those that failed in the last
/// [`FAILED_LAUNCH_MEMORY`], by container name (the newest launch of a name
/// wins). Cheap to clone; clones share the record.
#[derive(Debug, Clone)]
pub struct Launches {
    inner: Arc<Mutex<HashMap<String, LaunchRecord>>>,
    next: Arc<AtomicU64>,
    /// Permits for launch-progress streams open at once.
    streams: Arc<tokio::sync::Semaphore>,
}

/// Most launch-progress streams open at once (each polls every 250 ms).
pub const MAX_EVENT_STREAMS: usize = 1024;

impl Default for Launches {
    fn default() -> Self {
        Launches {
            inner: Arc::default(),
            next: Arc::default(),
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_EVENT_STREAMS)),
        }
    }
}

/// Which launch a record belongs to: given by [`Launches::start`], so that
/// a launch only ever finishes its own record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LaunchTicket(u64);

impl LaunchTicket {
    /// The ticket as a number (for URLs).
    pub fn id(self) -> u64 {
        self.0
    }

    /// The ticket `id` names.
    pub fn from_id(id: u64) -> Self {
        LaunchTicket(id)
    }
}

/// One launch in [`Launches`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRecord {
    /// Which launch.
    pub ticket: LaunchTicket,
    /// Whose launch it is, when known.
    pub owner: Option<String>,
    /// Where it stands.
    pub state: LaunchState,
}

/// Where a recorded launch stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchState {
    /// Not finished yet.
    InFlight,
    /// Finished with this error.
    Failed {
        /// The HTTP status the error maps to.
        status: u16,
        /// The error.
        message: String,
        /// When it failed.
        at: Instant,
    },
}

impl Launches {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, LaunchRecord>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What is recorded for `name`, if `viewer` may see it (as for
    /// containers: no viewer or an admin sees all, others their own).
    pub fn get(&self, name: &str, viewer: Option<&Identity>) -> Option<LaunchRecord> {
        let record = self.lock().get(name).cloned()?;
        match viewer {
            Some(v) if !v.may_see(name, record.owner.as_deref()) => None,
            _ => Some(record),
        }
    }

    /// Records a launch of `name` as under way and returns its ticket; it
    /// replaces whatever was recorded for the name. Finish it with
    /// [`Launches::finish`] or, for every way out including a dropped
    /// future, hold a [`Launches::guard`].
    pub fn start(&self, name: &str, owner: Option<&str>) -> LaunchTicket {
        let ticket = LaunchTicket(self.next.fetch_add(1, Ordering::Relaxed));
        let mut map = self.lock();
        map.retain(|_, r| !matches!(r.state, LaunchState::Failed { at, .. } if at.elapsed() > FAILED_LAUNCH_MEMORY));
        if map.len() >= MAX_LAUNCH_RECORDS {
            // Full of launches that failed recently (or are under way):
            // forget the oldest failure.
            let oldest = map
                .iter()
                .filter_map(|(n, r)| match r.state {
                    LaunchState::Failed { at, .. } => Some((at, n.clone())),
                    LaunchState::InFlight => None,
                })
                .min();
            if let Some((_, n)) = oldest {
                map.remove(&n);
            }
        }
        map.insert(
            name.to_owned(),
            LaunchRecord { ticket, owner: owner.map(str::to_owned), state: LaunchState::InFlight },
        );
        ticket
    }

    /// Ends launch `ticket` of `name`: forgotten on success, remembered as
    /// failed with `error` (status and message). A no-op when a newer
    /// launch of the name has replaced the record.
    pub fn finish(&self, name: &str, ticket: LaunchTicket, error: Option<(u16, String)>) {
        let mut map = self.lock();
        let Some(record) = map.get_mut(name).filter(|r| r.ticket == ticket) else { return };
        match error {
            None => {
                map.remove(name);
            }
            Some((status, message)) => record.state = LaunchState::Failed { status, message, at: Instant::now() },
        }
    }

    /// A permit for one more launch-progress stream, or `None` when
    /// [`MAX_EVENT_STREAMS`] are open; the stream holds it while it runs.
    pub fn stream_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    /// A guard that forgets launch `ticket` of `name` when dropped, unless
    /// it was finished: a launch whose future is dropped (a client that
    /// went away) or panics must not stay "under way" forever.
    pub fn guard(&self, name: &str, ticket: LaunchTicket) -> LaunchGuard {
        LaunchGuard { launches: self.clone(), name: name.to_owned(), ticket, done: false }
    }
}

/// See [`Launches::guard`].
#[derive(Debug)]
pub struct LaunchGuard {
    launches: Launches,
    name: String,
    ticket: LaunchTicket,
    done: bool,
}

impl LaunchGuard {
    /// Finishes the launch (see [`Launches::finish`]).
    pub fn finish(mut self, error: Option<(u16, String)>) {
        self.done = true;
        self.launches.finish(&self.name, self.ticket, error);
    }
}

impl Drop for LaunchGuard {
    fn drop(&mut self) {
        if !self.done {
            self.launches.finish(&self.name, self.ticket, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_owners_guards() {
        let launches = Launches::default();
        let first = launches.start("v", Some("alice"));
        let second = launches.start("v", Some("alice"));
        // The older launch cannot finish the newer one's record.
        launches.finish("v", first, Some((409, "conflict".into())));
        assert_eq!(launches.get("v", None).map(|r| (r.ticket, r.state)), Some((second, LaunchState::InFlight)));
        launches.finish("v", second, Some((429, "limit".into())));
        let record = launches.get("v", None).unwrap();
        assert!(matches!(record.state, LaunchState::Failed { status: 429, .. }));
        let bob = Identity::new("bob");
        let alice = Identity::new("alice");
        assert_eq!(launches.get("v", Some(&bob)), None);
        assert!(launches.get("v", Some(&alice)).is_some());
        // A dropped guard forgets an unfinished launch.
        let third = launches.start("w", None);
        drop(launches.guard("w", third));
        assert_eq!(launches.get("w", None), None);
        let fourth = launches.start("w", None);
        launches.guard("w", fourth).finish(Some((500, "boom".into())));
        assert!(launches.get("w", None).is_some());
    }

    #[test]
    fn stream_permits_are_bounded() {
        let launches = Launches::default();
        let held: Vec<_> = (0..MAX_EVENT_STREAMS).map(|_| launches.stream_permit().unwrap()).collect();
        assert!(launches.stream_permit().is_none());
        drop(held);
        assert!(launches.stream_permit().is_some());
    }

    #[test]
    fn bounded() {
        let launches = Launches::default();
        for i in 0..MAX_LAUNCH_RECORDS + 5 {
            let name = format!("n{i}");
            let t = launches.start(&name, None);
            launches.finish(&name, t, Some((400, "bad".into())));
        }
        assert_eq!(launches.lock().len(), MAX_LAUNCH_RECORDS);
        assert!(launches.get("n0", None).is_none() && launches.get(&format!("n{MAX_LAUNCH_RECORDS}"), None).is_some());
    }
}
