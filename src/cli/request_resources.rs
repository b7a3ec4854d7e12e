//! `ray-hpc request-resources NAME [--cpus N] [--gpus N] [--bundles JSON]`: asks a cluster's Ray
//! to keep room for these resources, as `ray.autoscaler.sdk.request_resources` does (Ray's
//! `RequestClusterResourceConstraint`): the autoscaler scales up until they fit, and keeps that
//! floor until the next request replaces it. No resources at all clears the request.
//! Unlike Ray's own call this needs no `ray.init()`: the GCS address and token come from the
//! registry.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use crate::proto::ray::autoscaler::{
    ClusterResourceConstraint, ResourceRequest, ResourceRequestByCount,
};
use crate::ray::gcs::GcsClient;
use crate::registry::{self, ClusterDir, ClusterState};

/// Bounds the connection to the GCS and the call.
const GCS_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  ray-hpc request-resources exp1 --cpus 64                        64 one-CPU bundles
  ray-hpc request-resources exp1 --bundles '[{\"CPU\": 4, \"GPU\": 1}]'  room for one such task
  ray-hpc request-resources exp1                                  clears the request")]
pub struct Args {
    /// The cluster's name in the registry. It must be READY.
    #[arg(value_name = "NAME")]
    name: String,
    /// Room for this many one-CPU tasks (bundles of {"CPU": 1}).
    #[arg(long, value_name = "N")]
    cpus: Option<u32>,
    /// Room for this many one-GPU tasks (bundles of {"GPU": 1}).
    #[arg(long, value_name = "N")]
    gpus: Option<u32>,
    /// Resource shapes that must fit, as a JSON list of objects, e.g.
    /// '[{"CPU": 4, "GPU": 1}, {"CPU": 2, "memory": 4e9}]'.
    #[arg(long, value_name = "JSON")]
    bundles: Option<String>,
}

/// One resource shape (resource name to amount) and how many of it.
#[derive(Debug, Clone, PartialEq)]
struct ShapeCount {
    shape: BTreeMap<String, f64>,
    count: i64,
}

pub fn run(args: &Args) -> anyhow::Result<i32> {
    let wanted = bundles(args)?;
    let shapes = group(&wanted);
    let dir = ClusterDir::open_existing(&registry::root()?, &args.name)?;
    let rec = dir.load()?;
    if rec.state != ClusterState::Ready {
        bail!(
            "cluster `{}` is {}, not READY: there is no Ray to ask; see `ray-hpc status {}`",
            rec.name,
            super::env::state_word(rec.state),
            rec.name
        );
    }
    let address = rec
        .gcs_address
        .clone()
        .ok_or_else(|| anyhow!("the record of cluster `{}` has no GCS address", rec.name))?;
    let token = match rec.auth.as_str() {
        "token" => {
            let path = rec.token_path.clone().unwrap_or_else(|| dir.token_path());
            Some(std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read the auth token of cluster `{}` at {}",
                    rec.name,
                    path.display()
                )
            })?)
        }
        _ => None,
    };
    let constraint = ClusterResourceConstraint {
        resource_requests: shapes
            .iter()
            .map(|s| ResourceRequestByCount {
                request: Some(ResourceRequest {
                    resources_bundle: s.shape.clone().into_iter().collect(),
                    ..Default::default()
                }),
                count: s.count,
            })
            .collect(),
    };
    super::runtime()?.block_on(async {
        let gcs = GcsClient::connect(&address, token, GCS_TIMEOUT).await?;
        gcs.request_cluster_resource_constraint(constraint).await
    })?;
    if shapes.is_empty() {
        eprintln!("cluster {}: resource request cleared", rec.name);
    } else {
        eprintln!(
            "cluster {}: asked Ray to keep room for {}",
            rec.name,
            describe(&shapes)
        );
    }
    Ok(0)
}

/// Every bundle asked for, in order: the --cpus ones, the --gpus ones, then --bundles.
fn bundles(args: &Args) -> anyhow::Result<Vec<BTreeMap<String, f64>>> {
    let one = |resource: &str| BTreeMap::from([(resource.to_string(), 1.0)]);
    let mut out = Vec::new();
    out.extend((0..args.cpus.unwrap_or(0)).map(|_| one("CPU")));
    out.extend((0..args.gpus.unwrap_or(0)).map(|_| one("GPU")));
    if let Some(text) = &args.bundles {
        out.extend(parse_bundles(text)?);
    }
    Ok(out)
}

/// `--bundles`: a JSON list of objects of resource name to a number ≥ 0, not all zero.
fn parse_bundles(text: &str) -> anyhow::Result<Vec<BTreeMap<String, f64>>> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        anyhow!("--bundles {text}: not JSON ({e}); expected e.g. '[{{\"CPU\": 4}}]'")
    })?;
    let list = value.as_array().ok_or_else(|| {
        anyhow!("--bundles {text}: expected a JSON list of objects, e.g. '[{{\"CPU\": 4}}]'")
    })?;
    list.iter()
        .enumerate()
        .map(|(i, bundle)| {
            let at = format!("--bundles: bundle {} ({bundle})", i + 1);
            let object = bundle
                .as_object()
                .ok_or_else(|| anyhow!("{at}: expected an object such as {{\"CPU\": 4}}"))?;
            let mut shape = BTreeMap::new();
            for (resource, amount) in object {
                if resource.trim().is_empty() {
                    bail!("{at}: a resource name is empty");
                }
                let amount = amount
                    .as_f64()
                    .filter(|a| a.is_finite() && *a >= 0.0)
                    .ok_or_else(|| {
                        anyhow!("{at}: {resource} must be a number ≥ 0, not {amount}")
                    })?;
                shape.insert(resource.clone(), amount);
            }
            if shape.values().all(|a| *a == 0.0) {
                bail!("{at}: asks for no resources");
            }
            Ok(shape)
        })
        .collect()
}

/// Identical shapes counted once each, in the order they first appear (as Ray's SDK groups them).
fn group(bundles: &[BTreeMap<String, f64>]) -> Vec<ShapeCount> {
    let mut out: Vec<ShapeCount> = Vec::new();
    for b in bundles {
        match out.iter_mut().find(|s| &s.shape == b) {
            Some(s) => s.count += 1,
            None => out.push(ShapeCount {
                shape: b.clone(),
                count: 1,
            }),
        }
    }
    out
}

/// `{CPU: 1} x 4, {CPU: 4, GPU: 1}`, as `status` writes demand.
fn describe(shapes: &[ShapeCount]) -> String {
    shapes
        .iter()
        .map(|s| {
            let inner: Vec<String> = s
                .shape
                .iter()
                .map(|(k, v)| format!("{k}: {}", crate::status::render::num(*v)))
                .collect();
            let shape = format!("{{{}}}", inner.join(", "));
            if s.count > 1 {
                format!("{shape} x {}", s.count)
            } else {
                shape
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(argv: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("request-resources").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn cpus_gpus_and_bundles_group_by_shape_like_rays_sdk() {
        let a = args(&[
            "c",
            "--cpus",
            "3",
            "--gpus",
            "1",
            "--bundles",
            r#"[{"CPU": 1}, {"CPU": 4, "GPU": 1}, {"GPU": 1}]"#,
        ]);
        let shapes = group(&bundles(&a).unwrap());
        let cpu = BTreeMap::from([("CPU".to_string(), 1.0)]);
        let gpu = BTreeMap::from([("GPU".to_string(), 1.0)]);
        let both = BTreeMap::from([("CPU".to_string(), 4.0), ("GPU".to_string(), 1.0)]);
        assert_eq!(
            shapes,
            [
                ShapeCount {
                    shape: cpu,
                    count: 4
                },
                ShapeCount {
                    shape: gpu,
                    count: 2
                },
                ShapeCount {
                    shape: both,
                    count: 1
                },
            ]
        );
        assert_eq!(
            describe(&shapes),
            "{CPU: 1} x 4, {GPU: 1} x 2, {CPU: 4, GPU: 1}"
        );
        assert!(group(&bundles(&args(&["c"])).unwrap()).is_empty());
    }

    #[test]
    fn bad_bundles_say_which_and_why() {
        for (text, want) in [
            ("{", "not JSON"),
            (r#"{"CPU": 1}"#, "expected a JSON list"),
            (r#"[{"CPU": 1}, 4]"#, "bundle 2 (4): expected an object"),
            (r#"[{"CPU": -1}]"#, "CPU must be a number ≥ 0, not -1"),
            (r#"[{"CPU": "x"}]"#, "CPU must be a number"),
            (r#"[{"": 1}]"#, "a resource name is empty"),
            (r#"[{}]"#, "asks for no resources"),
            (r#"[{"CPU": 0}]"#, "asks for no resources"),
        ] {
            let err = parse_bundles(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
