//! Reading Ray's `ClusterResourceState` (GCS `GetClusterResourceState`) into the planner's nodes
//! and demands. Pure.

use crate::proto::ray::autoscaler::{
    ClusterResourceState, GangResourceRequest, NodeState, NodeStatus as GcsStatus, ResourceRequest,
};
use crate::ray::gcs::node_id_hex;

use super::planner::{Demand, NodeStatus, ObservedNode, Resources, Strategy};

/// The resource Ray gives only the head node.
const HEAD_RESOURCE: &str = "node:__internal_head__";

/// Turns the GCS's view into nodes and demands, in Ray's order: tasks and actors, then
/// placement groups, then `request_resources` constraints.
///
/// - A node with Ray's head resource is of type `"head"`; others keep `ray_node_type_name`
///   (empty for nodes started without one). `UNSPECIFIED` (or an unknown status) reads as
///   running.
/// - Requests with a count of 0 or less are dropped.
/// - A placement group's bundles are those of its first bundle selector, else the legacy list
///   (as Ray's own autoscaler reads them); groups without bundles are dropped (Ray 2.60 also
///   lists placement groups that are not pending, empty).
/// - The strategy: an anti-affinity placement constraint means `STRICT_SPREAD`, an affinity one
///   `STRICT_PACK` (how the GCS marks them); otherwise the strategy named in `details`
///   (`<pg id>:<STRATEGY>|<STATE>`), else the bundle selector's locality strategy, else `PACK`.
/// - Label selectors and other placement constraints are not modelled.
pub fn observe_gcs(state: &ClusterResourceState) -> (Vec<ObservedNode>, Vec<Demand>) {
    let nodes = state.node_states.iter().map(node).collect();
    let mut demands: Vec<Demand> = state
        .pending_resource_requests
        .iter()
        .filter(|r| r.count > 0)
        .map(|r| Demand::Tasks {
            bundle: r.request.as_ref().map(bundle).unwrap_or_default(),
            count: r.count as u64,
        })
        .collect();
    demands.extend(state.pending_gang_resource_requests.iter().filter_map(gang));
    demands.extend(
        state
            .cluster_resource_constraints
            .iter()
            .flat_map(|c| c.resource_requests.iter())
            .filter(|r| r.count > 0)
            .map(|r| Demand::Constraint {
                bundle: r.request.as_ref().map(bundle).unwrap_or_default(),
                count: r.count as u64,
            }),
    );
    (nodes, demands)
}

fn resources(map: &std::collections::HashMap<String, f64>) -> Resources {
    map.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

fn bundle(r: &ResourceRequest) -> Resources {
    resources(&r.resources_bundle)
}

fn node(n: &NodeState) -> ObservedNode {
    let status = match n.status() {
        GcsStatus::Idle => NodeStatus::Idle,
        GcsStatus::Draining => NodeStatus::Draining,
        GcsStatus::Dead => NodeStatus::Dead,
        GcsStatus::Running | GcsStatus::Unspecified => NodeStatus::Running,
    };
    let node_type = if n.total_resources.contains_key(HEAD_RESOURCE) {
        crate::config::HEAD_NODE_TYPE_NAME.to_string()
    } else {
        n.ray_node_type_name.clone()
    };
    ObservedNode {
        node_id: node_id_hex(&n.node_id),
        instance_id: n.instance_id.clone(),
        node_type,
        total: resources(&n.total_resources),
        available: resources(&n.available_resources),
        status,
        idle_ms: n.idle_duration_ms.max(0) as u64,
    }
}

fn gang(g: &GangResourceRequest) -> Option<Demand> {
    let selector = g
        .bundle_selectors
        .first()
        .filter(|s| !s.resource_requests.is_empty());
    let requests = selector.map_or(&g.requests, |s| &s.resource_requests);
    if requests.is_empty() {
        return None;
    }
    let constrained = |anti: bool| {
        requests.iter().any(|r| {
            r.placement_constraints.iter().any(|c| {
                if anti {
                    c.anti_affinity.is_some()
                } else {
                    c.affinity.is_some()
                }
            })
        })
    };
    let strategy = if constrained(true) {
        Strategy::StrictSpread
    } else if constrained(false) {
        Strategy::StrictPack
    } else if let Some(s) = strategy_in_details(&g.details) {
        s
    } else {
        selector
            .and_then(|s| s.locality_requirement.as_ref())
            .and_then(|l| l.locality_constraint.as_ref())
            .map(|c| match c.placement_strategy {
                1 => Strategy::Spread,
                2 => Strategy::StrictPack,
                3 => Strategy::StrictSpread,
                _ => Strategy::Pack,
            })
            .unwrap_or(Strategy::Pack)
    };
    Some(Demand::Gang {
        bundles: requests.iter().map(bundle).collect(),
        strategy,
        details: g.details.clone(),
    })
}

/// The strategy in Ray's `<pg id>:<STRATEGY>|<STATE>`, or any word of it that names one.
fn strategy_in_details(details: &str) -> Option<Strategy> {
    details
        .split([':', '|', ' ', ','])
        .find_map(|w| match w.trim() {
            "PACK" => Some(Strategy::Pack),
            "SPREAD" => Some(Strategy::Spread),
            "STRICT_PACK" => Some(Strategy::StrictPack),
            "STRICT_SPREAD" => Some(Strategy::StrictSpread),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::autoscaler::planner::{PlanInput, Settings, Submit, plan};
    use crate::proto::ray::autoscaler::{
        AffinityConstraint, AntiAffinityConstraint, BundleSelector, ClusterResourceConstraint,
        LocalityConstraint, LocalityRequirement, PlacementConstraint, ResourceRequestByCount,
    };

    fn request(pairs: &[(&str, f64)]) -> ResourceRequest {
        ResourceRequest {
            resources_bundle: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Default::default()
        }
    }

    fn constrained(pairs: &[(&str, f64)], c: PlacementConstraint) -> ResourceRequest {
        ResourceRequest {
            placement_constraints: vec![c],
            ..request(pairs)
        }
    }

    fn by_count(pairs: &[(&str, f64)], count: i64) -> ResourceRequestByCount {
        ResourceRequestByCount {
            request: Some(request(pairs)),
            count,
        }
    }

    fn selector(requests: Vec<ResourceRequest>) -> BundleSelector {
        BundleSelector {
            resource_requests: requests,
            locality_requirement: None,
        }
    }

    fn node_state(id: u8, status: GcsStatus, cpus: f64, free: f64) -> NodeState {
        NodeState {
            node_id: vec![id; 28],
            instance_id: format!("50{id:02}"),
            ray_node_type_name: "cpu4".into(),
            total_resources: [("CPU".to_string(), cpus)].into(),
            available_resources: [("CPU".to_string(), free)].into(),
            status: status as i32,
            ..Default::default()
        }
    }

    fn head_state(free: f64) -> NodeState {
        let mut n = node_state(1, GcsStatus::Running, 4.0, free);
        n.instance_id = "1000".into();
        n.ray_node_type_name = String::new();
        n.total_resources.insert(HEAD_RESOURCE.into(), 1.0);
        n
    }

    fn cpu(n: f64) -> Resources {
        [("CPU".to_string(), n)].into()
    }

    #[test]
    fn gang_strategy_and_bundles() {
        let anti = PlacementConstraint {
            anti_affinity: Some(AntiAffinityConstraint {
                label_name: "_PG_ab".into(),
                label_value: String::new(),
            }),
            affinity: None,
        };
        let aff = PlacementConstraint {
            anti_affinity: None,
            affinity: Some(AffinityConstraint {
                label_name: "_PG_ab".into(),
                label_value: String::new(),
            }),
        };
        let one = || request(&[("CPU", 1.0)]);
        // (name, the request, the strategy and bundle count read; None: dropped)
        type Row = (&'static str, GangResourceRequest, Option<(Strategy, usize)>);
        let table: Vec<Row> = vec![
            (
                "anti-affinity (as the GCS marks STRICT_SPREAD), in the bundle selector",
                GangResourceRequest {
                    requests: vec![one()],
                    details: "ab:PACK|PENDING".into(),
                    bundle_selectors: vec![selector(vec![
                        constrained(&[("CPU", 1.0)], anti.clone()),
                        constrained(&[("CPU", 1.0)], anti.clone()),
                        constrained(&[("CPU", 1.0)], anti.clone()),
                    ])],
                },
                Some((Strategy::StrictSpread, 3)),
            ),
            (
                "affinity (STRICT_PACK) in the legacy list",
                GangResourceRequest {
                    requests: vec![constrained(&[("CPU", 1.0)], aff.clone()), one()],
                    ..Default::default()
                },
                Some((Strategy::StrictPack, 2)),
            ),
            (
                "SPREAD named in the details",
                GangResourceRequest {
                    requests: vec![one(), one()],
                    details: "cd01:SPREAD|PENDING".into(),
                    ..Default::default()
                },
                Some((Strategy::Spread, 2)),
            ),
            (
                "PACK named in the details of a rescheduling group",
                GangResourceRequest {
                    bundle_selectors: vec![selector(vec![one()])],
                    details: "ef:PACK|RESCHEDULING".into(),
                    ..Default::default()
                },
                Some((Strategy::Pack, 1)),
            ),
            (
                "the locality strategy when nothing else says",
                GangResourceRequest {
                    bundle_selectors: vec![BundleSelector {
                        resource_requests: vec![one(), one()],
                        locality_requirement: Some(LocalityRequirement {
                            locality_constraint: Some(LocalityConstraint {
                                label_name: String::new(),
                                placement_strategy: 3,
                            }),
                            label_selector: None,
                        }),
                    }],
                    ..Default::default()
                },
                Some((Strategy::StrictSpread, 2)),
            ),
            (
                "nothing says: PACK",
                GangResourceRequest {
                    requests: vec![one()],
                    details: "whatever".into(),
                    ..Default::default()
                },
                Some((Strategy::Pack, 1)),
            ),
            (
                "an empty selector falls back to the legacy list",
                GangResourceRequest {
                    requests: vec![one(), one()],
                    bundle_selectors: vec![selector(vec![])],
                    details: "x:STRICT_PACK|PENDING".into(),
                },
                Some((Strategy::StrictPack, 2)),
            ),
            (
                "an empty group (Ray lists placed groups like this): dropped",
                GangResourceRequest::default(),
                None,
            ),
        ];
        for (name, g, want) in table {
            let got = gang(&g).map(|d| match d {
                Demand::Gang {
                    bundles, strategy, ..
                } => (strategy, bundles.len()),
                other => panic!("{name}: not a gang: {other:?}"),
            });
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn nodes_and_demand_from_a_hand_built_state() {
        let mut weird = node_state(5, GcsStatus::Running, 4.0, 4.0);
        weird.status = 99;
        weird.idle_duration_ms = -5;
        let mut idle = node_state(2, GcsStatus::Idle, 4.0, 4.0);
        idle.idle_duration_ms = 90_000;
        let state = ClusterResourceState {
            node_states: vec![
                head_state(1.0),
                idle,
                node_state(3, GcsStatus::Dead, 4.0, 0.0),
                node_state(4, GcsStatus::Draining, 4.0, 4.0),
                weird,
            ],
            pending_resource_requests: vec![
                by_count(&[("CPU", 1.0)], 12),
                by_count(&[("GPU", 1.0)], 0),
                by_count(&[("CPU", 2.0)], -3),
                ResourceRequestByCount {
                    request: None,
                    count: 2,
                },
            ],
            pending_gang_resource_requests: vec![
                GangResourceRequest::default(),
                GangResourceRequest {
                    requests: vec![request(&[("GPU", 1.0)])],
                    details: "pg1:STRICT_SPREAD|PENDING".into(),
                    bundle_selectors: vec![],
                },
            ],
            cluster_resource_constraints: vec![ClusterResourceConstraint {
                resource_requests: vec![by_count(&[("CPU", 8.0)], 2), by_count(&[("CPU", 1.0)], 0)],
            }],
            ..Default::default()
        };
        let (nodes, demands) = observe_gcs(&state);

        // (node id, instance, type, status, idle ms, available CPUs)
        let want = [
            (1u8, "1000", "head", NodeStatus::Running, 0, 1.0),
            (2, "5002", "cpu4", NodeStatus::Idle, 90_000, 4.0),
            (3, "5003", "cpu4", NodeStatus::Dead, 0, 0.0),
            (4, "5004", "cpu4", NodeStatus::Draining, 0, 4.0),
            (5, "5005", "cpu4", NodeStatus::Running, 0, 4.0),
        ];
        assert_eq!(nodes.len(), want.len());
        for (n, (id, inst, ty, status, idle_ms, free)) in nodes.iter().zip(want) {
            assert_eq!(n.node_id, hex::encode([id; 28]));
            assert_eq!(
                (
                    n.instance_id.as_str(),
                    n.node_type.as_str(),
                    n.status,
                    n.idle_ms
                ),
                (inst, ty, status, idle_ms),
                "node {id}"
            );
            assert_eq!(n.available, cpu(free), "node {id}");
        }
        assert_eq!(
            demands,
            vec![
                Demand::Tasks {
                    bundle: cpu(1.0),
                    count: 12
                },
                Demand::Tasks {
                    bundle: Resources::new(),
                    count: 2
                },
                Demand::Gang {
                    bundles: vec![[("GPU".to_string(), 1.0)].into()],
                    strategy: Strategy::StrictSpread,
                    details: "pg1:STRICT_SPREAD|PENDING".into(),
                },
                Demand::Constraint {
                    bundle: cpu(8.0),
                    count: 2
                },
            ]
        );
    }

    /// From the GCS's words to a plan: a STRICT_SPREAD group of 3 on a 1-node cluster asks
    /// for 2 nodes; a GPU request with no GPU type is infeasible.
    #[test]
    fn observe_then_plan() {
        let anti = PlacementConstraint {
            anti_affinity: Some(AntiAffinityConstraint {
                label_name: "_PG_ab".into(),
                label_value: String::new(),
            }),
            affinity: None,
        };
        let bundle = constrained(&[("CPU", 1.0)], anti);
        let state = ClusterResourceState {
            node_states: vec![head_state(4.0)],
            pending_resource_requests: vec![by_count(&[("GPU", 1.0)], 1)],
            pending_gang_resource_requests: vec![GangResourceRequest {
                requests: vec![bundle.clone(); 3],
                details: "ab:STRICT_SPREAD|PENDING".into(),
                bundle_selectors: vec![selector(vec![bundle; 3])],
            }],
            ..Default::default()
        };
        let (nodes, demands) = observe_gcs(&state);
        let types = [crate::autoscaler::NodeTypeSpec {
            name: "cpu4".into(),
            resources: cpu(4.0),
            min_workers: 0,
            max_workers: 10,
        }];
        let settings = Settings {
            max_workers: 10,
            idle_timeout_ms: 60_000,
            upscaling_speed: 1.0,
            max_pending_jobs: 10,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
            max_consecutive_failures: 3,
        };
        let p = plan(&PlanInput {
            nodes: &nodes,
            demands: &demands,
            jobs: &[],
            types: &types,
            settings: &settings,
            health: &BTreeMap::new(),
            now_ms: 1,
        });
        assert_eq!(
            p.submit,
            vec![Submit {
                node_type: "cpu4".to_string(),
                count: 2
            }]
        );
        assert_eq!(p.infeasible, vec![demands[0].clone()]);
        assert!(p.waiting.is_empty() && p.cancel.is_empty() && p.drain.is_empty());
    }
}
