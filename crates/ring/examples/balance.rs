//! Balance and movement figures of the placement, over cluster sizes.
//!
//! `cargo run --release -p ringkv-ring --example balance`
//!
//! For each node count `N` and shard count `S` (R = 3, or N when smaller):
//! the most replicas on one node over the mean, the same for preferred
//! leaders, and the replicas created when one node joins or leaves, over the
//! ideal `R·S/N` (for a join: the share the new node ends up with; for a
//! leave: the share the node had). Rings use nodes `1..=N` of weight 1, with
//! no zones or in 3 zones (node `i` in zone `i mod 3`).
#![allow(clippy::print_stdout, reason = "an example that prints a report")]

use ringkv_ring::{MovementPlan, NodeId, NodeSpec, Placement, PlacementConfig, Ring, Step};

const NODE_COUNTS: [u64; 8] = [3, 5, 10, 20, 30, 50, 75, 100];
const SHARD_COUNTS: [u32; 4] = [64, 256, 1024, 4096];
const REPLICAS: u32 = 3;
const EPSILON_PERCENT: u32 = 25;

fn ring(nodes: u64, zones: u64) -> Ring {
    Ring::new((1..=nodes).map(|i| {
        let node = NodeSpec::new(NodeId(i));
        if zones == 0 { node } else { node.with_zone(format!("zone-{}", i % zones)) }
    }))
    .expect("valid node set")
}

fn max_over_mean(counts: impl Iterator<Item = u32>, nodes: u64, total: f64) -> f64 {
    let max = counts.max().unwrap_or(0);
    f64::from(max) / (total / nodes as f64)
}

/// Replicas created by the plan, and how many of them did not involve `node`.
fn moves(old: &Placement, new: &Placement, node: NodeId) -> (usize, usize) {
    let plan = MovementPlan::between(old, new).expect("same shard count");
    let foreign = plan
        .steps()
        .iter()
        .filter(|step| matches!(step, Step::Move { from, to, .. } if *from != node && *to != node))
        .count();
    (plan.replicas_created(), foreign)
}

fn main() {
    for (zones, label) in [(0, "no zones"), (3, "3 zones")] {
        for bounded in [false, true] {
            let mode = if bounded { "load bound ε = 25%" } else { "unbounded" };
            println!("\n## {label}, {mode}\n");
            println!(
                "|   N |    S | max/mean replicas | max/mean leaders | join: created/ideal \
                 (not via new node) | leave: created/ideal (not via old node) |"
            );
            println!("| --: | ---: | --: | --: | --: | --: |");
            for nodes in NODE_COUNTS {
                for shards in SHARD_COUNTS {
                    let replicas = REPLICAS.min(nodes as u32);
                    let mut config = PlacementConfig::new(shards, replicas);
                    if bounded {
                        config = config.with_load_bound(EPSILON_PERCENT);
                    }
                    let before = ring(nodes, zones);
                    let placement = before.place(&config).expect("valid config");
                    let total = f64::from(replicas * shards);
                    let replica_ratio =
                        max_over_mean(placement.loads().into_values(), nodes, total);
                    let leader_ratio = max_over_mean(
                        placement.leader_counts().into_values(),
                        nodes,
                        f64::from(shards),
                    );

                    let joiner = NodeId(nodes + 1);
                    let zone = joiner.0 % zones.max(1);
                    let mut spec = NodeSpec::new(joiner);
                    if zones > 0 {
                        spec = spec.with_zone(format!("zone-{zone}"));
                    }
                    let joined = before.with_node(spec).expect("new id").place(&config);
                    let (join, join_foreign) =
                        moves(&placement, &joined.expect("valid config"), joiner);
                    let join_ideal = total / (nodes + 1) as f64;

                    let leaver = NodeId(1);
                    let left_ring = before.without_node(leaver).expect("present");
                    let leave = match left_ring.place(&config) {
                        Ok(left) => {
                            let (leave, foreign) = moves(&placement, &left, leaver);
                            format!("{:.2} ({foreign})", leave as f64 / (total / nodes as f64))
                        }
                        // Fewer nodes than replicas: no placement to leave to.
                        Err(_) => "n/a".to_string(),
                    };
                    println!(
                        "| {nodes:>3} | {shards:>4} | {replica_ratio:.2} | {leader_ratio:.2} | \
                         {:.2} ({join_foreign}) | {leave} |",
                        join as f64 / join_ideal,
                    );
                }
            }
        }
    }
}
