//! The key layout in etcd and the records stored there, kept apart from the
//! I/O so that both can be tested without a server.
//!
//! ```text
//! PREFIX/targets/NAME/owner            {"node":"deploy-1","lease":7587869623190218760}  (on the owner's lease)
//! PREFIX/targets/NAME/state            the target's TargetState, compact JSON
//! PREFIX/targets/NAME/commands/ID      {"id":ID,"from":NODE,"posted_at":RFC3339,"command":{...}}
//! PREFIX/incidents/ID                  the incident, compact JSON
//! ```

use serde::{Deserialize, Serialize};

/// The keys of one cluster (one `prefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Always ends in `/`.
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (a `/` is added when it has none at the end).
    pub fn new(prefix: &str) -> Keys {
        let prefix = if prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        Keys { prefix }
    }

    /// `PREFIX/targets/NAME/owner`: who may act on the target.
    pub fn owner(&self, target: &str) -> String {
        format!("{}targets/{target}/owner", self.prefix)
    }

    /// `PREFIX/targets/NAME/state`: the target's state (guard history).
    pub fn state(&self, target: &str) -> String {
        format!("{}targets/{target}/state", self.prefix)
    }

    /// `PREFIX/targets/NAME/commands/`: commands waiting for the owner.
    pub fn commands(&self, target: &str) -> String {
        format!("{}targets/{target}/commands/", self.prefix)
    }

    /// `PREFIX/targets/NAME/commands/ID`.
    pub fn command(&self, target: &str, id: &str) -> String {
        format!("{}{id}", self.commands(target))
    }

    /// `PREFIX/incidents/ID`.
    pub fn incident(&self, id: &str) -> String {
        format!("{}incidents/{id}", self.prefix)
    }
}

/// The value of an owner key: which node holds the target, under which
/// lease. The lease is in the value too so that a node's second process
/// (after a restart, with a new lease) does not take the first one's lock
/// for its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// `cluster.node` of the holder.
    pub node: String,
    /// The holder's lease (etcd lease ID).
    pub lease: i64,
}

impl Owner {
    /// The exact bytes stored, which owner-checked transactions compare.
    pub fn encode(&self) -> String {
        // A struct of a string and an integer always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parse a stored owner value.
    pub fn decode(value: &[u8]) -> Option<Owner> {
        serde_json::from_slice(value).ok()
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (lease {:x})", self.node, self.lease)
    }
}

/// A command as stored under `commands/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCommand {
    /// The command's ID (the last key segment).
    pub id: String,
    /// The node it was posted on.
    pub from: String,
    /// When it was posted (wall clock of `from`), RFC 3339.
    pub posted_at: String,
    /// What the daemon asked for (approve, reject, pause, ...): opaque here.
    pub command: serde_json::Value,
}

/// A command ID that sorts by posting time and is unique across nodes:
/// nanoseconds since the epoch, the node, and a per-process sequence.
pub fn command_id(unix_nanos: i128, node: &str, seq: u64) -> String {
    format!("{unix_nanos:020}-{node}-{seq}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        for prefix in ["/rollbackd/", "/rollbackd"] {
            let k = Keys::new(prefix);
            assert_eq!(k.owner("web"), "/rollbackd/targets/web/owner");
            assert_eq!(k.state("web"), "/rollbackd/targets/web/state");
            assert_eq!(k.commands("web"), "/rollbackd/targets/web/commands/");
            assert_eq!(
                k.command("web", "1-a-0"),
                "/rollbackd/targets/web/commands/1-a-0"
            );
            assert_eq!(k.incident("web-3"), "/rollbackd/incidents/web-3");
        }
    }

    #[test]
    fn owner_round_trips_and_prints_the_lease_in_hex() {
        let o = Owner {
            node: "deploy-1".into(),
            lease: 255,
        };
        assert_eq!(o.encode(), r#"{"node":"deploy-1","lease":255}"#);
        assert_eq!(Owner::decode(o.encode().as_bytes()), Some(o.clone()));
        assert_eq!(Owner::decode(b"garbage"), None);
        assert_eq!(o.to_string(), "deploy-1 (lease ff)");
    }

    #[test]
    fn command_ids_sort_by_time() {
        let a = command_id(1_700_000_000_000_000_000, "b", 9);
        let b = command_id(1_700_000_000_000_000_001, "a", 0);
        assert!(a < b, "{a} {b}");
        assert_eq!(a, "01700000000000000000-b-9");
    }
}
