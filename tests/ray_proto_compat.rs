//! Checks our subset of Ray's protocol (proto/ray/*.proto) against the installed Ray wheel.
//!
//! tests/support/ray_descriptors.py dumps the wheel's descriptors as JSON; we decode our own
//! `FILE_DESCRIPTOR_SET` and require every message, field, enum value and service method we declare
//! to exist in the wheel with the same number, type, label, type name and oneof. A Ray upgrade that
//! moves or retypes a field we use fails here instead of in a user's job.
//!
//! The Python is `$RAY_HPC_PYTHON`, else `<crate>/.venv/bin/python`. Without it the test fails: the
//! check is the point, so it must not pass silently on a machine without Ray.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Wheel {
    ray_version: String,
    messages: BTreeMap<String, WheelMessage>,
    enums: BTreeMap<String, BTreeMap<String, i32>>,
    services: BTreeMap<String, BTreeMap<String, WheelMethod>>,
}

#[derive(Debug, Deserialize)]
struct WheelMessage {
    map_entry: bool,
    fields: BTreeMap<String, WheelField>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct WheelField {
    number: i32,
    #[serde(rename = "type")]
    ty: i32,
    label: i32,
    type_name: String,
    oneof: Option<String>,
    proto3_optional: bool,
}

#[derive(Debug, Deserialize, PartialEq)]
struct WheelMethod {
    input: String,
    output: String,
    client_streaming: bool,
    server_streaming: bool,
}

fn python() -> PathBuf {
    match std::env::var_os("RAY_HPC_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    }
}

/// The wheel's descriptors, loaded once per test binary.
fn wheel() -> &'static Wheel {
    static WHEEL: OnceLock<Wheel> = OnceLock::new();
    WHEEL.get_or_init(|| {
        let python = python();
        assert!(
            python.exists(),
            "no Python with Ray at {}: run the setup (`python3.11 -m venv .venv && \
             .venv/bin/pip install 'ray[default]==2.60.0'` in the crate root) or point \
             RAY_HPC_PYTHON at a Python that has the Ray wheel installed",
            python.display()
        );
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/ray_descriptors.py");
        let out = Command::new(&python)
            .arg(&script)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {} {}: {e}", python.display(), script.display())
            });
        assert!(
            out.status.success(),
            "{} {} failed ({}); is Ray installed in that Python? stderr:\n{}",
            python.display(),
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{} printed JSON we cannot read: {e}", script.display()))
    })
}

/// Our compiled descriptors, restricted to Ray's packages (`ray.*`).
fn ours() -> FileDescriptorSet {
    let mut set = FileDescriptorSet::decode(ray_hpc::proto::FILE_DESCRIPTOR_SET)
        .expect("FILE_DESCRIPTOR_SET does not decode");
    set.file.retain(|f| f.package().starts_with("ray."));
    set
}

fn type_name(t: i32) -> String {
    Type::try_from(t).map_or_else(|_| format!("type#{t}"), |t| t.as_str_name().to_string())
}

fn label_name(l: i32) -> String {
    Label::try_from(l).map_or_else(|_| format!("label#{l}"), |l| l.as_str_name().to_string())
}

fn describe(f: &WheelField) -> String {
    let mut s = format!("{} {} = {}", label_name(f.label), type_name(f.ty), f.number);
    if !f.type_name.is_empty() {
        s.push_str(&format!(" ({})", f.type_name));
    }
    if let Some(o) = &f.oneof {
        s.push_str(&format!(" in oneof {o}"));
    }
    if f.proto3_optional {
        s.push_str(" [proto3 optional]");
    }
    s
}

fn check_message(prefix: &str, msg: &DescriptorProto, wheel: &Wheel, errors: &mut Vec<String>) {
    let name = format!("{prefix}.{}", msg.name());
    let Some(theirs) = wheel.messages.get(&name) else {
        errors.push(format!(
            "message {name}: not in the Ray {} wheel",
            wheel.ray_version
        ));
        return;
    };
    let map_entry = msg.options.as_ref().is_some_and(|o| o.map_entry());
    if map_entry != theirs.map_entry {
        errors.push(format!(
            "message {name}: map entry is {map_entry} here, {} in the wheel",
            theirs.map_entry
        ));
    }
    for f in &msg.field {
        let field = format!("{name}.{}", f.name());
        let Some(want) = theirs.fields.get(f.name()) else {
            let by_number = theirs.fields.iter().find(|(_, w)| w.number == f.number());
            errors.push(format!(
                "field {field} (= {}): not in the Ray {} wheel{}",
                f.number(),
                wheel.ray_version,
                by_number.map_or(String::new(), |(n, _)| format!(
                    "; number {} is `{n}` there",
                    f.number()
                ))
            ));
            continue;
        };
        let got = WheelField {
            number: f.number(),
            ty: f.r#type.unwrap_or_default(),
            label: f.label.unwrap_or_default(),
            type_name: f.type_name().to_string(),
            oneof: f
                .oneof_index
                .and_then(|i| msg.oneof_decl.get(i as usize))
                .map(|o| o.name().to_string()),
            proto3_optional: f.proto3_optional(),
        };
        if &got != want {
            errors.push(format!(
                "field {field}: ours is `{}`, the Ray {} wheel has `{}`",
                describe(&got),
                wheel.ray_version,
                describe(want)
            ));
        }
    }
    for nested in &msg.nested_type {
        check_message(&name, nested, wheel, errors);
    }
    for e in &msg.enum_type {
        check_enum(&name, e, wheel, errors);
    }
}

fn check_enum(
    prefix: &str,
    e: &prost_types::EnumDescriptorProto,
    wheel: &Wheel,
    errors: &mut Vec<String>,
) {
    let name = format!("{prefix}.{}", e.name());
    let Some(theirs) = wheel.enums.get(&name) else {
        errors.push(format!(
            "enum {name}: not in the Ray {} wheel",
            wheel.ray_version
        ));
        return;
    };
    for v in &e.value {
        match theirs.get(v.name()) {
            None => errors.push(format!(
                "enum value {name}.{} (= {}): not in the Ray {} wheel",
                v.name(),
                v.number(),
                wheel.ray_version
            )),
            Some(&n) if n != v.number() => errors.push(format!(
                "enum value {name}.{}: ours is {}, the Ray {} wheel has {n}",
                v.name(),
                v.number(),
                wheel.ray_version
            )),
            Some(_) => {}
        }
    }
}

/// Every mismatch between our declarations and the wheel, one line each.
fn compare(ours: &FileDescriptorSet, wheel: &Wheel) -> Vec<String> {
    let mut errors = Vec::new();
    for file in &ours.file {
        let prefix = format!(".{}", file.package());
        for msg in &file.message_type {
            check_message(&prefix, msg, wheel, &mut errors);
        }
        for e in &file.enum_type {
            check_enum(&prefix, e, wheel, &mut errors);
        }
        for svc in &file.service {
            let name = format!("{prefix}.{}", svc.name());
            let Some(theirs) = wheel.services.get(&name) else {
                errors.push(format!(
                    "service {name}: not in the Ray {} wheel",
                    wheel.ray_version
                ));
                continue;
            };
            for m in &svc.method {
                let got = WheelMethod {
                    input: m.input_type().to_string(),
                    output: m.output_type().to_string(),
                    client_streaming: m.client_streaming(),
                    server_streaming: m.server_streaming(),
                };
                match theirs.get(m.name()) {
                    None => errors.push(format!(
                        "rpc {name}/{}: not in the Ray {} wheel",
                        m.name(),
                        wheel.ray_version
                    )),
                    Some(want) if *want != got => errors.push(format!(
                        "rpc {name}/{}: ours is {got:?}, the Ray {} wheel has {want:?}",
                        m.name(),
                        wheel.ray_version
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    errors
}

#[test]
fn our_ray_protos_match_the_installed_wheel() {
    let ours = ours();
    let wheel = wheel();
    // Guard against comparing nothing (e.g. a placeholder proto or a build.rs change).
    let declared: Vec<String> = ours
        .file
        .iter()
        .flat_map(|f| {
            f.message_type
                .iter()
                .map(move |m| format!(".{}.{}", f.package(), m.name()))
        })
        .collect();
    for required in [
        ".ray.rpc.autoscaler.ClusterResourceState",
        ".ray.rpc.autoscaler.NodeState",
        ".ray.rpc.autoscaler.GangResourceRequest",
        ".ray.rpc.autoscaler.BundleSelector",
        ".ray.rpc.autoscaler.PlacementConstraint",
        ".ray.rpc.autoscaler.AutoscalingState",
        ".ray.rpc.autoscaler.DrainNodeRequest",
        ".ray.rpc.LabelSelector",
    ] {
        assert!(
            declared.iter().any(|d| d == required),
            "our descriptor set lacks {required}; declared: {declared:?}"
        );
    }
    let errors = compare(&ours, wheel);
    assert!(
        errors.is_empty(),
        "proto/ray/*.proto disagrees with the installed Ray {} wheel in {} place(s):\n  {}\n\
         Fix proto/ray/*.proto to match the wheel (ray/core/generated/*_pb2.py).",
        wheel.ray_version,
        errors.len(),
        errors.join("\n  ")
    );
}

/// The comparison itself must catch a moved field, a retyped field and a renumbered enum value.
#[test]
fn the_check_catches_mismatches() {
    let wheel = wheel();
    let mut ours = ours();
    let autoscaler = ours
        .file
        .iter_mut()
        .find(|f| f.package() == "ray.rpc.autoscaler")
        .expect("no ray.rpc.autoscaler in our descriptor set");
    let node_state = autoscaler
        .message_type
        .iter_mut()
        .find(|m| m.name() == "NodeState")
        .expect("no NodeState");
    let instance_id = node_state
        .field
        .iter_mut()
        .find(|f| f.name() == "instance_id")
        .unwrap();
    instance_id.number = Some(99);
    let version = node_state
        .field
        .iter_mut()
        .find(|f| f.name() == "node_state_version")
        .unwrap();
    version.set_type(Type::Uint64);
    let reason = autoscaler
        .enum_type
        .iter_mut()
        .find(|e| e.name() == "DrainNodeReason")
        .unwrap();
    let preemption = reason
        .value
        .iter_mut()
        .find(|v| v.name() == "DRAIN_NODE_REASON_PREEMPTION")
        .unwrap();
    preemption.number = Some(7);

    let errors = compare(&ours, wheel);
    let expect = [
        "field .ray.rpc.autoscaler.NodeState.instance_id",
        "field .ray.rpc.autoscaler.NodeState.node_state_version",
        "enum value .ray.rpc.autoscaler.DrainNodeReason.DRAIN_NODE_REASON_PREEMPTION",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|line| line.starts_with(e)),
            "mutation of {e} not reported; got {errors:#?}"
        );
    }
    assert_eq!(
        errors.len(),
        expect.len(),
        "unexpected extra reports: {errors:#?}"
    );
}
