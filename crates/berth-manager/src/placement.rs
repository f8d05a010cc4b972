//! Where a container may run: [`Placement`] (constraints and spread
//! preferences) and the [`NodeInfo`] they are matched against.
//!
//! The constraint language is Docker Swarm's (`node.labels.gpu==yes`,
//! `node.hostname!=n3`, `node.role==worker`, `engine.labels.zone==a`), so
//! a swarm deployment's existing constraints work unchanged; single-engine
//! backends match them against their one node. A constraint no node
//! satisfies is [`Error::Unschedulable`](crate::Error::Unschedulable), on
//! every backend.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Scheduling constraints and spread preferences of one container.
///
/// ```
/// use berth_manager::{NodeInfo, Placement};
///
/// let placement = Placement::default().constraint("node.labels.gpu==yes").spread("node.labels.zone");
/// let mut node = NodeInfo::new("n1", "gpu-host");
/// assert!(!placement.matches(&node));
/// node.labels.insert("gpu".into(), "YES".into()); // values compare case-insensitively, as in Swarm
/// assert!(placement.matches(&node));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Conditions a node must meet, all of them (`<key>==<value>` or
    /// `<key>!=<value>`; keys `node.id`, `node.hostname`, `node.role`,
    /// `node.platform.os`, `node.platform.arch`, `node.labels.<label>`,
    /// `engine.labels.<label>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// Spread descriptors (`node.labels.<label>` or `engine.labels.<label>`,
    /// optionally written `spread=<descriptor>`): a new container goes to
    /// the value of that label with the fewest of the manager's live
    /// containers (each in turn, narrowing). Cluster backends only; a
    /// single engine has nothing to spread over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<String>,
}

impl Placement {
    /// True when nothing is constrained or preferred.
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty() && self.preferences.is_empty()
    }

    /// Adds a constraint.
    pub fn constraint(mut self, constraint: impl Into<String>) -> Self {
        self.constraints.push(constraint.into());
        self
    }

    /// Adds a spread preference.
    pub fn spread(mut self, descriptor: impl Into<String>) -> Self {
        self.preferences.push(descriptor.into());
        self
    }

    /// The constraints parsed, or a message naming the first bad one.
    ///
    /// # Errors
    ///
    /// A message saying which constraint does not parse and why.
    pub fn parsed(&self) -> std::result::Result<Vec<Constraint>, String> {
        self.constraints.iter().map(|c| c.parse()).collect()
    }

    /// The spread descriptors without their optional `spread=` prefix.
    ///
    /// # Errors
    ///
    /// A message saying which preference is not a label descriptor.
    pub fn spread_descriptors(&self) -> std::result::Result<Vec<&str>, String> {
        self.preferences
            .iter()
            .map(|p| {
                let d = p.trim();
                let d = d.strip_prefix("spread=").unwrap_or(d).trim();
                let label = d.strip_prefix("node.labels.").or_else(|| d.strip_prefix("engine.labels."));
                match label {
                    Some(l) if valid_label_key(l) => Ok(d),
                    _ => Err(format!(
                        "preference {p:?} is not a spread descriptor (node.labels.<label> or engine.labels.<label>)"
                    )),
                }
            })
            .collect()
    }

    /// Checks every constraint and preference parses.
    ///
    /// # Errors
    ///
    /// A message naming the first bad one.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.parsed()?;
        self.spread_descriptors()?;
        Ok(())
    }

    /// Whether `node` meets every constraint (constraints that do not
    /// parse match nothing).
    pub fn matches(&self, node: &NodeInfo) -> bool {
        self.parsed().is_ok_and(|cs| cs.iter().all(|c| c.matches(node)))
    }

    /// This placement with `other`'s constraints and preferences added
    /// (duplicates dropped).
    pub fn merged(&self, other: &Placement) -> Placement {
        let mut out = self.clone();
        for c in &other.constraints {
            if !out.constraints.contains(c) {
                out.constraints.push(c.clone());
            }
        }
        for p in &other.preferences {
            if !out.preferences.contains(p) {
                out.preferences.push(p.clone());
            }
        }
        out
    }
}

/// One parsed placement constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    key: ConstraintKey,
    equal: bool,
    value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ConstraintKey {
    Id,
    Hostname,
    Role,
    Os,
    Arch,
    NodeLabel(String),
    EngineLabel(String),
}

fn valid_label_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

impl std::str::FromStr for Constraint {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (key, value, equal) = if let Some((k, v)) = s.split_once("==") {
            (k, v, true)
        } else if let Some((k, v)) = s.split_once("!=") {
            (k, v, false)
        } else {
            return Err(format!("constraint {s:?} has no == or != operator"));
        };
        let (key, value) = (key.trim(), value.trim());
        if value.is_empty() || value.contains("==") || value.contains("!=") {
            return Err(format!("constraint {s:?} has no single value"));
        }
        if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("constraint {s:?}: the value contains spaces or control characters"));
        }
        let lower = key.to_ascii_lowercase();
        let key = match lower.as_str() {
            "node.id" => ConstraintKey::Id,
            "node.hostname" => ConstraintKey::Hostname,
            "node.role" => ConstraintKey::Role,
            "node.platform.os" => ConstraintKey::Os,
            "node.platform.arch" => ConstraintKey::Arch,
            _ => match (key.strip_prefix("node.labels."), key.strip_prefix("engine.labels.")) {
                (Some(l), _) if valid_label_key(l) => ConstraintKey::NodeLabel(l.to_owned()),
                (_, Some(l)) if valid_label_key(l) => ConstraintKey::EngineLabel(l.to_owned()),
                _ => {
                    return Err(format!(
                        "constraint {s:?}: unknown key {key:?} (node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.<label>, engine.labels.<label>)"
                    ));
                }
            },
        };
        Ok(Constraint { key, equal, value: value.to_owned() })
    }
}

impl Constraint {
    /// Whether `node` meets this constraint. Values compare
    /// case-insensitively and a missing label equals nothing, as in Swarm.
    pub fn matches(&self, node: &NodeInfo) -> bool {
        let have: Option<&str> = match &self.key {
            ConstraintKey::Id => Some(&node.id),
            ConstraintKey::Hostname => Some(&node.hostname),
            ConstraintKey::Role => Some(&node.role),
            ConstraintKey::Os => Some(&node.os),
            ConstraintKey::Arch => Some(&node.arch),
            ConstraintKey::NodeLabel(l) => node.labels.get(l).map(String::as_str),
            ConstraintKey::EngineLabel(l) => node.engine_labels.get(l).map(String::as_str),
        };
        let equal = have.is_some_and(|h| h.eq_ignore_ascii_case(&self.value));
        equal == self.equal
    }
}

/// One machine containers can run on: the engine itself for a single
/// engine, a swarm node for a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The engine's id for the node.
    pub id: String,
    /// Its host name.
    pub hostname: String,
    /// `manager` or `worker` in a swarm; `engine` for a single engine.
    pub role: String,
    /// Operating system (`linux`).
    pub os: String,
    /// Architecture (`x86_64`).
    pub arch: String,
    /// Where its published ports are reached, when known.
    pub addr: Option<IpAddr>,
    /// Labels the cluster's operator set on the node (`node.labels.*`).
    pub labels: BTreeMap<String, String>,
    /// Labels of the node's engine (`engine.labels.*`).
    pub engine_labels: BTreeMap<String, String>,
    /// Memory the node has, in MiB (0 when unknown).
    pub memory_mb: u64,
    /// CPUs the node has (0 when unknown).
    pub cpus: f64,
    /// Whether the node is up and reachable.
    pub ready: bool,
    /// Whether it accepts new containers (not drained or paused).
    pub schedulable: bool,
}

impl NodeInfo {
    /// A ready, schedulable Linux node with no labels or resources known.
    pub fn new(id: impl Into<String>, hostname: impl Into<String>) -> Self {
        NodeInfo {
            id: id.into(),
            hostname: hostname.into(),
            role: "engine".to_owned(),
            os: "linux".to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            addr: None,
            labels: BTreeMap::new(),
            engine_labels: BTreeMap::new(),
            memory_mb: 0,
            cpus: 0.0,
            ready: true,
            schedulable: true,
        }
    }

    /// Whether a new container with `placement` may land here: ready,
    /// schedulable and meeting every constraint.
    pub fn accepts(&self, placement: &Placement) -> bool {
        self.ready && self.schedulable && placement.matches(self)
    }
}

/// Engine labels in the engine's `key=value` list form, as a map.
pub(crate) fn labels_from_list(list: &[String]) -> BTreeMap<String, String> {
    list.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeInfo {
        let mut n = NodeInfo::new("abc123", "worker-1");
        n.role = "worker".into();
        n.labels.insert("zone".into(), "eu-1".into());
        n.engine_labels.insert("disk".into(), "ssd".into());
        n
    }

    #[test]
    fn constraints_match_like_swarm() {
        let n = node();
        let cases = [
            ("node.id==abc123", true),
            ("node.id!=abc123", false),
            ("node.hostname==WORKER-1", true),
            ("node.role==manager", false),
            ("node.role != manager", true),
            ("node.platform.os==linux", true),
            ("node.labels.zone==eu-1", true),
            ("node.labels.zone==eu-2", false),
            ("node.labels.missing==x", false),
            ("node.labels.missing!=x", true),
            ("engine.labels.disk==ssd", true),
        ];
        for (c, want) in cases {
            let parsed: Constraint = c.parse().unwrap();
            assert_eq!(parsed.matches(&n), want, "{c}");
        }
    }

    #[test]
    fn bad_constraints_are_refused() {
        for bad in ["node.labels.zone", "node.color==red", "node.labels.==x", "node.id==", "a==b==c", "node.id==a b"] {
            assert!(bad.parse::<Constraint>().is_err(), "{bad}");
        }
        let p = Placement::default().spread("zone");
        assert!(p.validate().is_err());
        let p = Placement::default().spread("spread=node.labels.zone").spread("engine.labels.rack");
        assert_eq!(p.spread_descriptors().unwrap(), ["node.labels.zone", "engine.labels.rack"]);
    }

    #[test]
    fn nodes_accept_only_when_up() {
        let mut n = node();
        let p = Placement::default().constraint("node.labels.zone==eu-1");
        assert!(n.accepts(&p));
        n.schedulable = false;
        assert!(!n.accepts(&p));
        n.schedulable = true;
        n.ready = false;
        assert!(!n.accepts(&Placement::default()));
    }

    #[test]
    fn merging_keeps_order_and_drops_duplicates() {
        let a = Placement::default().constraint("node.role==worker");
        let b = Placement::default().constraint("node.role==worker").constraint("node.labels.x==1");
        assert_eq!(a.merged(&b).constraints, ["node.role==worker", "node.labels.x==1"]);
    }

    #[test]
    fn engine_label_lists() {
        let m = labels_from_list(&["a=1".into(), "b".into(), "c=x=y".into()]);
        assert_eq!(m["a"], "1");
        assert_eq!(m["b"], "");
        assert_eq!(m["c"], "x=y");
    }
}
