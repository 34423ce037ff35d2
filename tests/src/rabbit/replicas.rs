//! Where a queue's replicas are, as RabbitMQ's CLI lists them.

use serde::Deserialize;

/// Where one queue's replicas are, as `rabbitmqctl list_queues name type leader members
/// online` reports it (node names such as `xbtest-123-0@localhost`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QueueReplicas {
    pub name: String,
    /// `quorum`, `stream` or `classic`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Empty while no leader is known (an election, or a majority down).
    #[serde(default, deserialize_with = "node_or_none")]
    pub leader: Option<String>,
    /// Every node that holds a replica, running or not.
    #[serde(default, deserialize_with = "node_list")]
    pub members: Vec<String>,
    /// The members whose replica runs right now.
    #[serde(default, deserialize_with = "node_list")]
    pub online: Vec<String>,
}

impl QueueReplicas {
    /// A leader, and every member's replica running.
    pub fn fully_online(&self) -> bool {
        self.leader.is_some() && self.members.iter().all(|m| self.online.contains(m))
    }
}

/// The CLI prints `""` (or nothing) for a queue type without a leader or members.
fn node_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(v.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
}

fn node_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}
