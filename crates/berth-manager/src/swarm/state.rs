//! What a swarm task's state means for berth: pure functions over the
//! engine's task and node objects, table-tested.

use std::time::SystemTime;

use bollard::models::{Node, NodeState, Task, TaskState};

use crate::time::EngineTime;
use crate::types::ContainerState;

/// A task (or its absence) read as a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskView {
    pub(crate) state: ContainerState,
    pub(crate) exit_code: Option<i64>,
    pub(crate) message: Option<String>,
    /// When it started running (only known while it runs).
    pub(crate) started: Option<SystemTime>,
    /// The host name of its node, when that node is down.
    pub(crate) node_down: Option<String>,
    /// Whether its process ran (so a stream of events owes a start).
    pub(crate) ran: bool,
}

/// Whether a node counts as down: it stopped answering the managers.
pub(crate) fn node_is_down(node: &Node) -> bool {
    matches!(
        node.status.as_ref().and_then(|s| s.state),
        Some(NodeState::DOWN | NodeState::DISCONNECTED | NodeState::UNKNOWN)
    )
}

/// The node's host name, else its id.
pub(crate) fn node_name(node: &Node) -> String {
    node.description
        .as_ref()
        .and_then(|d| d.hostname.clone())
        .or_else(|| node.id.clone())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The text of a `pending` task that no node can take (the scheduler's
/// "no suitable node (...)").
pub(crate) fn unschedulable_reason(task: &Task) -> Option<String> {
    let status = task.status.as_ref()?;
    if status.state != Some(TaskState::PENDING) {
        return None;
    }
    let err = status.err.as_deref()?;
    err.contains("no suitable node").then(|| err.to_owned())
}

/// Whether a failed task's process ran and exited (rather than failing to
/// start): the engine words this "task: non-zero exit (N)".
pub(crate) fn exited_after_running(task: &Task) -> bool {
    task.status.as_ref().and_then(|s| s.err.as_deref()).is_some_and(|e| e.contains("non-zero exit"))
}

/// The newest task of a service (one replica, never restarted: normally
/// the only one).
pub(crate) fn latest<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> Option<&'a Task> {
    tasks.into_iter().max_by_key(|t| (t.version.as_ref().and_then(|v| v.index).unwrap_or(0), t.id.clone()))
}

/// Reads `task` (on `node`) as a container state.
pub(crate) fn task_view(task: Option<&Task>, node: Option<&Node>) -> TaskView {
    let Some(task) = task else {
        return TaskView {
            state: ContainerState::Created,
            exit_code: None,
            message: Some("waiting for the swarm to create a task".to_owned()),
            started: None,
            node_down: None,
            ran: false,
        };
    };
    let status = task.status.clone().unwrap_or_default();
    let observed = status.state.unwrap_or(TaskState::NEW);
    let err = status.err.clone().filter(|e| !e.is_empty());
    let exit_code = status.container_status.as_ref().and_then(|c| c.exit_code);
    let has_container =
        status.container_status.as_ref().and_then(|c| c.container_id.as_deref()).is_some_and(|id| !id.is_empty());
    let timestamp = status.timestamp.as_ref().and_then(EngineTime::system_time);
    let mut view = TaskView {
        state: ContainerState::Created,
        exit_code: None,
        message: err.clone().or_else(|| status.message.clone().filter(|m| !m.is_empty())),
        started: None,
        node_down: None,
        ran: false,
    };
    let live = !matches!(
        observed,
        TaskState::COMPLETE
            | TaskState::FAILED
            | TaskState::SHUTDOWN
            | TaskState::REJECTED
            | TaskState::ORPHANED
            | TaskState::REMOVE
    );
    if let Some(node) = node.filter(|n| node_is_down(n))
        && live
        && task.node_id.is_some()
    {
        // The managers still hold the last state the node reported
        // (often `running`), but nothing runs there any more.
        let name = node_name(node);
        view.state = ContainerState::Dead;
        view.message = Some(format!("node {name} is down"));
        view.node_down = Some(name);
        view.ran = observed == TaskState::RUNNING;
        return view;
    }
    match observed {
        TaskState::NEW
        | TaskState::ALLOCATED
        | TaskState::PENDING
        | TaskState::ASSIGNED
        | TaskState::ACCEPTED
        | TaskState::PREPARING
        | TaskState::READY
        | TaskState::STARTING => view.state = ContainerState::Created,
        TaskState::RUNNING => {
            view.state = ContainerState::Running;
            view.started = timestamp;
            view.ran = true;
            view.message = None;
        }
        TaskState::COMPLETE => {
            view.state = ContainerState::Exited;
            view.exit_code = Some(exit_code.unwrap_or(0));
            view.ran = true;
        }
        TaskState::FAILED if exited_after_running(task) || (has_container && exit_code.is_some_and(|c| c != 0)) => {
            view.state = ContainerState::Exited;
            view.exit_code = exit_code;
            view.ran = true;
        }
        TaskState::SHUTDOWN if has_container && exit_code.is_some() => {
            view.state = ContainerState::Exited;
            view.exit_code = exit_code;
            view.ran = true;
        }
        TaskState::REMOVE => view.state = ContainerState::Removing,
        TaskState::ORPHANED => {
            view.state = ContainerState::Dead;
            view.message = Some(err.unwrap_or_else(|| "its node was lost (task orphaned)".to_owned()));
            view.ran = has_container;
        }
        TaskState::FAILED | TaskState::SHUTDOWN | TaskState::REJECTED => {
            view.state = ContainerState::Dead;
            view.ran = has_container && observed != TaskState::REJECTED;
        }
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerStatus, NodeDescription, NodeStatus, ObjectVersion, TaskStatus};

    fn task(state: TaskState, err: Option<&str>, exit: Option<i64>) -> Task {
        // The timestamp through the engine's JSON: its Rust type depends on
        // bollard's `time` feature (see `EngineTime`).
        let status: TaskStatus = serde_json::from_value(serde_json::json!({ "Timestamp": "2026-11-24T07:24:49.5Z" }))
            .expect("a task status");
        Task {
            id: Some("t1".into()),
            version: Some(ObjectVersion { index: Some(3) }),
            node_id: Some("n1".into()),
            status: Some(TaskStatus {
                state: Some(state),
                err: err.map(Into::into),
                container_status: exit.map(|c| ContainerStatus {
                    container_id: Some("c1".into()),
                    exit_code: Some(c),
                    pid: None,
                }),
                ..status
            }),
            ..Default::default()
        }
    }

    fn node(state: NodeState) -> Node {
        Node {
            id: Some("n1".into()),
            status: Some(NodeStatus { state: Some(state), ..Default::default() }),
            description: Some(NodeDescription { hostname: Some("worker-2".into()), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn states_read_like_containers() {
        let up = node(NodeState::READY);
        let cases: Vec<(Task, ContainerState, Option<i64>)> = vec![
            (task(TaskState::PENDING, None, None), ContainerState::Created, None),
            (task(TaskState::PREPARING, None, None), ContainerState::Created, None),
            (task(TaskState::RUNNING, None, Some(0)), ContainerState::Running, None),
            (task(TaskState::COMPLETE, None, Some(0)), ContainerState::Exited, Some(0)),
            (task(TaskState::FAILED, Some("task: non-zero exit (7)"), Some(7)), ContainerState::Exited, Some(7)),
            (
                task(TaskState::FAILED, Some("starting container failed: exec: no such file"), None),
                ContainerState::Dead,
                None,
            ),
            (task(TaskState::REJECTED, Some("No such image: sha256:ab"), None), ContainerState::Dead, None),
            (task(TaskState::SHUTDOWN, None, Some(137)), ContainerState::Exited, Some(137)),
            (task(TaskState::SHUTDOWN, None, None), ContainerState::Dead, None),
            (task(TaskState::ORPHANED, None, None), ContainerState::Dead, None),
        ];
        for (t, state, code) in cases {
            let v = task_view(Some(&t), Some(&up));
            assert_eq!((v.state, v.exit_code), (state, code), "{:?} {:?}", t.status.as_ref().and_then(|s| s.state), v);
        }
        let v = task_view(Some(&task(TaskState::REJECTED, Some("No such image: x"), None)), Some(&up));
        assert_eq!(v.message.as_deref(), Some("No such image: x"));
        assert!(!v.ran);
        assert_eq!(task_view(None, None).state, ContainerState::Created);
    }

    #[test]
    fn a_down_node_loses_its_running_tasks() {
        let down = node(NodeState::DOWN);
        let v = task_view(Some(&task(TaskState::RUNNING, None, Some(0))), Some(&down));
        assert_eq!(v.state, ContainerState::Dead);
        assert_eq!(v.message.as_deref(), Some("node worker-2 is down"));
        assert_eq!(v.node_down.as_deref(), Some("worker-2"));
        assert!(v.ran);
        // A task that had ended before keeps its ending.
        let v = task_view(Some(&task(TaskState::COMPLETE, None, Some(0))), Some(&down));
        assert_eq!((v.state, v.node_down), (ContainerState::Exited, None));
    }

    #[test]
    fn pending_without_a_node_is_unschedulable() {
        let t = task(TaskState::PENDING, Some("no suitable node (insufficient resources on 2 nodes)"), None);
        assert!(unschedulable_reason(&t).is_some_and(|r| r.contains("insufficient resources")));
        assert!(unschedulable_reason(&task(TaskState::PENDING, None, None)).is_none());
        assert!(unschedulable_reason(&task(TaskState::RUNNING, Some("no suitable node"), None)).is_none());
    }

    #[test]
    fn latest_is_the_newest_version() {
        let mut a = task(TaskState::FAILED, None, Some(1));
        a.version = Some(ObjectVersion { index: Some(9) });
        let b = task(TaskState::RUNNING, None, Some(0));
        assert_eq!(latest([&b, &a]).and_then(|t| t.version.as_ref()?.index), Some(9));
    }
}
