//! How many nodes of a cluster hold each queue: every quorum queue and the order-event stream
//! ask for [`REPLICAS`] members when they are first declared, and a queue that an older
//! version declared without that argument is redeclared as it is.

use std::{
    collections::BTreeSet,
    sync::{Mutex, PoisonError},
};

use lapin::types::AMQPValue;

/// Members of every quorum queue (`x-quorum-initial-group-size`) and of the order-event
/// stream (`x-initial-cluster-size`): with three, losing any one node leaves a majority, so
/// nothing confirmed is lost and nothing stops for longer than a leader election.
///
/// RabbitMQ places the members when the queue is first declared, on as many nodes as the
/// cluster has when it has fewer (a single node holds the only one, and keeps working),
/// and never moves them by itself afterwards: a node that joins later, or replaces a lost
/// one, holds no member of an existing quorum queue until an operator runs
/// `rabbitmq-queues grow <node> all`. Fixed rather than configurable because every process
/// must declare the same value, or the later one is refused (`PRECONDITION_FAILED`).
/// <https://www.rabbitmq.com/docs/quorum-queues#replication-factor>,
/// <https://www.rabbitmq.com/docs/streams#replication-factor>
pub const REPLICAS: i64 = 3;

/// The argument that sets a quorum queue's member count.
pub const QUORUM_SIZE_ARG: &str = "x-quorum-initial-group-size";
/// The argument that sets a stream's member count.
pub const STREAM_SIZE_ARG: &str = "x-initial-cluster-size";

/// Queues whose broker copy has no member-count argument: declared by a version from before
/// it (RabbitMQ compares the argument on every redeclaration and refuses a queue that has
/// none). Process-wide for the reason given at `UNROUTED_WITHOUT_TTL`.
static PREDATING: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// `key` = [`REPLICAS`] for `queue`, unless its broker copy predates the argument.
pub(super) fn size_arg(queue: &str, key: &'static str) -> Option<(&'static str, AMQPValue)> {
    let predating = PREDATING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(queue);
    (!predating).then_some((key, AMQPValue::LongLongInt(REPLICAS)))
}

/// Looks at a refused declaration of `queue` that carried `key`; when the broker's copy of
/// the queue has no such argument, remembers the queue (later declarations leave the
/// argument out), logs what an operator can do and returns true.
pub(super) fn note_refusal(queue: &str, key: &str, refusal: &str) -> bool {
    if !predates(refusal, key) {
        return false;
    }
    let new = PREDATING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(queue.to_owned());
    if new {
        let grow = if key == STREAM_SIZE_ARG {
            format!("rabbitmq-streams add_replica {queue} <node>")
        } else {
            "rabbitmq-queues grow <node> all".to_owned()
        };
        tracing::warn!(
            queue,
            "{queue} was declared by an older version without {key}: it is kept as it is, on \
             the nodes it was given then (`rabbitmqctl list_queues name members` shows them; \
             `{grow}` adds a node)"
        );
    }
    new
}

/// RabbitMQ's words for an argument the existing queue does not have: `inequivalent arg
/// '<key>' for queue '…' in vhost '…': received the value '3' of type 'long' but current is
/// none`.
fn predates(refusal: &str, key: &str) -> bool {
    refusal.contains(&format!("inequivalent arg '{key}'"))
        && refusal.contains("but current is none")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_a_queue_declared_without_the_member_count() {
        let refusal = "PRECONDITION_FAILED - inequivalent arg 'x-quorum-initial-group-size' for \
            queue 'xsolla.fulfillment' in vhost '/': received the value '3' of type 'long' but \
            current is none";
        assert!(predates(refusal, QUORUM_SIZE_ARG));
        assert!(!predates(refusal, STREAM_SIZE_ARG));
        // Another value than ours is a configuration fault, not an older queue.
        let other = "PRECONDITION_FAILED - inequivalent arg 'x-quorum-initial-group-size' for \
            queue 'xsolla.fulfillment' in vhost '/': received the value '3' of type 'long' but \
            current is the value '5' of type 'long'";
        assert!(!predates(other, QUORUM_SIZE_ARG));
    }

    #[test]
    fn a_predating_queue_is_declared_without_the_argument_from_then_on() {
        let queue = "replicas-unit-test-queue";
        assert!(size_arg(queue, QUORUM_SIZE_ARG).is_some());
        let refusal = format!(
            "PRECONDITION_FAILED - inequivalent arg '{QUORUM_SIZE_ARG}' for queue '{queue}' in \
             vhost '/': received the value '3' of type 'long' but current is none"
        );
        assert!(note_refusal(queue, QUORUM_SIZE_ARG, &refusal));
        assert!(size_arg(queue, QUORUM_SIZE_ARG).is_none());
        assert!(
            !note_refusal(queue, QUORUM_SIZE_ARG, &refusal),
            "noted once"
        );
    }
}
