//! What the fleet removed on its own lately: evictions and idle culls, in
//! a bounded ring ([`Fleet::recent_removals`](crate::Fleet::recent_removals)),
//! for pages and operators who ask "where did my container go?".

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How many removals [`Fleet::recent_removals`](crate::Fleet::recent_removals)
/// remembers; older ones are forgotten first.
pub const RECENT_REMOVALS: usize = 100;

/// Why the fleet removed a container without being asked to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemovalReason {
    /// Evicted (least recently used) to make room for the launch of
    /// container `for_container`: for the memory budget, a node's budget,
    /// or a launch the backend could not place.
    Evicted {
        /// The container whose launch needed the room.
        for_container: String,
    },
    /// Culled after no proxied activity for `idle` (at least the fleet's
    /// `idle_timeout`).
    Idle {
        /// How long it had been quiet.
        idle: Duration,
    },
}

/// One container the fleet removed on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// When it was removed.
    pub time: SystemTime,
    /// The container's name.
    pub name: String,
    /// Its owner (the fleet's `owner_label`), when it had one, so that a
    /// caller can show people their own removals only.
    pub owner: Option<String>,
    /// Why.
    pub reason: RemovalReason,
}

/// The bounded ring behind [`Fleet::recent_removals`](crate::Fleet::recent_removals).
#[derive(Debug, Default)]
pub(crate) struct RecentRemovals(Mutex<VecDeque<Removal>>);

impl RecentRemovals {
    /// Remembers that `name` (with `labels`, whose `owner_label` names its
    /// owner) was removed now for `reason`.
    pub(crate) fn record(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        owner_label: &str,
        reason: RemovalReason,
    ) {
        let removal =
            Removal { time: SystemTime::now(), name: name.to_owned(), owner: labels.get(owner_label).cloned(), reason };
        let mut ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == RECENT_REMOVALS {
            ring.pop_front();
        }
        ring.push_back(removal);
    }

    /// The removals remembered, newest first.
    pub(crate) fn newest_first(&self) -> Vec<Removal> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest() {
        let ring = RecentRemovals::default();
        let labels = BTreeMap::from([("owner".to_owned(), "ann".to_owned())]);
        for i in 0..RECENT_REMOVALS + 5 {
            ring.record(&format!("c{i}"), &labels, "owner", RemovalReason::Idle { idle: Duration::from_secs(1) });
        }
        let all = ring.newest_first();
        assert_eq!(all.len(), RECENT_REMOVALS);
        assert_eq!(all[0].name, format!("c{}", RECENT_REMOVALS + 4));
        assert_eq!(all[RECENT_REMOVALS - 1].name, "c5");
        assert_eq!(all[0].owner.as_deref(), Some("ann"));
    }
}
