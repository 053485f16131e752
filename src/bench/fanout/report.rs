//! What a fan-out run reports: its figures, and the issue's targets checked against them.

use serde::Serialize;

use super::FanoutOptions;
use crate::bench::{Bound, Machine, TargetCheck};

/// The issue's latency target: p99 publish → applied ack, ms.
pub const P99_TARGET_MS: f64 = 250.0;
/// The cluster issue's latency target: p99 publish on one node → applied ack from a subscriber
/// on another, ms.
pub const P99_CROSS_NODE_TARGET_MS: f64 = 300.0;
/// The issue's memory target: distributor RSS per idle subscriber, KiB.
pub const MEMORY_TARGET_KIB: f64 = 32.0;

/// A figure the issue sets a target for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FanoutTarget {
    /// Subscribers that completed hello/hello_ack (threshold: all of them).
    AllConnected,
    /// 99th percentile publish → applied-ack latency, ms (one node).
    AckLatencyP99,
    /// 99th percentile publish → applied-ack latency of subscribers on another node than the
    /// publisher's, ms (a cluster).
    CrossNodeAckLatencyP99,
    /// Distributor RSS per idle subscriber, KiB.
    MemoryPerSubscriber,
}

/// Connecting the subscribers.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectFigures {
    /// Subscribers started.
    pub attempted: usize,
    /// Subscribers that received `hello_ack`.
    pub connected: usize,
    /// Subscribers that did not.
    pub failed: usize,
    /// From the first connect until the last handshake ended.
    pub seconds: f64,
    /// `connected / seconds`.
    pub per_sec: f64,
    /// What the first failure said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

/// The distributor's resident memory (`VmRSS`).
#[derive(Debug, Clone, Serialize)]
pub struct MemoryFigures {
    /// Started and answering, no subscriber yet.
    pub baseline_kib: u64,
    /// Every subscriber connected and idle.
    pub connected_kib: u64,
    /// After the last publish.
    pub after_publishes_kib: u64,
    /// `(connected_kib - baseline_kib) / connected subscribers`.
    pub per_subscriber_kib: f64,
}

/// One publish, timed from just before `POST /publish`.
#[derive(Debug, Clone, Serialize)]
pub struct PublishFigures {
    /// The update's seq.
    pub seq: u64,
    /// `POST /publish` round trip (the update is committed before it is announced).
    pub publish_ms: f64,
    /// Subscribers that acked it.
    pub acks: usize,
    /// Until the last subscriber had sent its ack.
    pub last_ack_ms: f64,
    /// Until `GET /updates/{id}` counted every ack as applied (null if it never did).
    pub recorded_ms: f64,
}

/// CPU time spent while publishing, per publish: on 2 cores the two processes share, these
/// bound how fast a fan-out can be.
#[derive(Debug, Clone, Serialize)]
pub struct CpuFigures {
    /// The distributor (child process), ms per publish.
    pub distributor_ms_per_publish: f64,
    /// The load generator (this process: subscribers and publisher), ms per publish.
    pub generator_ms_per_publish: f64,
}

/// Publish → applied-ack latency over every subscriber and publish.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyFigures {
    /// Acks timed.
    pub acks: usize,
    /// Acks expected (connected subscribers × publishes).
    pub expected: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Median over publishes of `last_ack_ms`.
    pub last_ack_median_ms: f64,
    /// Median over publishes of `recorded_ms`.
    pub recorded_median_ms: f64,
    /// Median `POST /publish` round trip.
    pub publish_median_ms: f64,
}

/// Publish → applied-ack latency of the subscribers on other nodes than the publisher's.
#[derive(Debug, Clone, Serialize)]
pub struct CrossNodeFigures {
    /// Acks timed.
    pub acks: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// The distributor cluster a multi-node run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterFigures {
    /// The PostgreSQL server (password masked).
    pub postgres: String,
    /// Scratch database holding the shared update log, dropped at the end.
    pub scratch_database: String,
    /// The NATS server of the doorbell (`null`: the nodes polled the log).
    pub nats: Option<String>,
    /// The doorbell's subject prefix.
    pub subject_prefix: String,
    /// The node every update was published on.
    pub publish_node: usize,
    /// The node asked whether every ack was recorded.
    pub status_node: usize,
    /// Subscribers started on each node.
    pub subscribers_per_node: Vec<usize>,
}

/// Everything one fan-out run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub options: FanoutOptions,
    /// The cluster, for a run on a shared update log (`null`: one node on SQLite).
    pub cluster: Option<ClusterFigures>,
    /// Connecting.
    pub connect: ConnectFigures,
    /// The distributor's memory.
    pub memory: MemoryFigures,
    /// Publish → applied-ack latency.
    pub latency: LatencyFigures,
    /// The same, for subscribers on other nodes than the publisher's (`null`: one node).
    pub cross_node: Option<CrossNodeFigures>,
    /// CPU time per publish (null where `/proc` is not available).
    pub cpu: CpuFigures,
    /// Each publish.
    pub publishes: Vec<PublishFigures>,
    /// Targets, checked.
    pub targets: Vec<TargetCheck<FanoutTarget>>,
    /// Lost connections, missing or stray acks: a run with any is not trustworthy.
    pub failures: Vec<String>,
}

/// Checks the issues' targets: one node's p99, or in a cluster the cross-node p99.
pub fn evaluate_targets(
    opts: &FanoutOptions,
    connect: &ConnectFigures,
    latency: &LatencyFigures,
    cross_node: Option<&CrossNodeFigures>,
    memory: &MemoryFigures,
) -> Vec<TargetCheck<FanoutTarget>> {
    let p99 = match cross_node {
        None => TargetCheck::new(
            FanoutTarget::AckLatencyP99,
            latency.p99_ms,
            Bound::Below,
            P99_TARGET_MS,
        ),
        Some(cross) => TargetCheck::new(
            FanoutTarget::CrossNodeAckLatencyP99,
            cross.p99_ms,
            Bound::Below,
            P99_CROSS_NODE_TARGET_MS,
        ),
    };
    vec![
        TargetCheck::new(
            FanoutTarget::AllConnected,
            connect.connected as f64,
            Bound::AtLeast,
            opts.subscribers as f64,
        ),
        p99,
        TargetCheck::new(
            FanoutTarget::MemoryPerSubscriber,
            memory.per_subscriber_kib,
            Bound::AtMost,
            MEMORY_TARGET_KIB,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(connected: usize, p99_ms: f64, per_subscriber_kib: f64) -> Vec<bool> {
        let opts = FanoutOptions::default();
        let connect = ConnectFigures {
            attempted: opts.subscribers,
            connected,
            failed: opts.subscribers - connected,
            seconds: 1.0,
            per_sec: connected as f64,
            first_failure: None,
        };
        let latency = LatencyFigures {
            acks: 1,
            expected: 1,
            p50_ms: 1.0,
            p99_ms,
            max_ms: p99_ms,
            last_ack_median_ms: p99_ms,
            recorded_median_ms: p99_ms,
            publish_median_ms: 1.0,
        };
        let memory = MemoryFigures {
            baseline_kib: 0,
            connected_kib: 0,
            after_publishes_kib: 0,
            per_subscriber_kib,
        };
        evaluate_targets(&opts, &connect, &latency, None, &memory)
            .iter()
            .map(|c| c.pass)
            .collect()
    }

    #[test]
    fn targets_are_the_issues() {
        assert_eq!(figures(10_000, 249.9, 32.0), [true, true, true]);
        // One subscriber short, p99 exactly at the bound, memory just over.
        assert_eq!(figures(9_999, 250.0, 32.01), [false, false, false]);
        // No acks at all: no figure, no pass.
        assert_eq!(figures(10_000, f64::NAN, f64::NAN), [true, false, false]);
    }

    #[test]
    fn a_cluster_is_held_to_the_cross_node_p99() {
        let opts = FanoutOptions::default();
        let connect = ConnectFigures {
            attempted: 2,
            connected: 2,
            failed: 0,
            seconds: 1.0,
            per_sec: 2.0,
            first_failure: None,
        };
        let latency = LatencyFigures {
            acks: 2,
            expected: 2,
            p50_ms: 1.0,
            p99_ms: 1.0,
            max_ms: 1.0,
            last_ack_median_ms: 1.0,
            recorded_median_ms: 1.0,
            publish_median_ms: 1.0,
        };
        let memory = MemoryFigures {
            baseline_kib: 0,
            connected_kib: 0,
            after_publishes_kib: 0,
            per_subscriber_kib: 1.0,
        };
        let cross = |p99_ms| CrossNodeFigures {
            acks: 1,
            p50_ms: 1.0,
            p99_ms,
            max_ms: p99_ms,
        };
        let checks = evaluate_targets(&opts, &connect, &latency, Some(&cross(299.9)), &memory);
        let p99 = &checks[1];
        assert_eq!(p99.target, FanoutTarget::CrossNodeAckLatencyP99);
        assert!(p99.pass);
        let checks = evaluate_targets(&opts, &connect, &latency, Some(&cross(300.0)), &memory);
        assert!(!checks[1].pass);
    }
}
