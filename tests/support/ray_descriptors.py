"""Dump the protobuf descriptors of the installed Ray wheel as JSON (for tests/ray_proto_compat.rs).

Loads ray/core/generated/autoscaler_pb2.py (and, through its imports, common_pb2.py and whatever
else it depends on) and prints one JSON object on stdout:

  {"ray_version": "...",
   "files": {"<file name>": "<package>"},
   "messages": {".pkg.Msg[.Nested]": {"map_entry": bool,
                                      "fields": {"<name>": {"number", "type", "label",
                                                            "type_name", "oneof",
                                                            "proto3_optional"}}}},
   "enums": {".pkg.Enum": {"<VALUE>": number}},
   "services": {".pkg.Service": {"<Method>": {"input", "output",
                                              "client_streaming", "server_streaming"}}}}

type and label are the FieldDescriptorProto enum numbers, type names are fully qualified with a
leading dot, "oneof" is the containing oneof's name or null: the same shape as the descriptors
protoc hands to prost, so the Rust side compares like with like.
"""

import importlib
import importlib.metadata
import json
import sys

from google.protobuf import descriptor_pb2

MODULES = ["ray.core.generated.autoscaler_pb2", "ray.core.generated.common_pb2"]


def walk_message(prefix, msg, out):
    name = f"{prefix}.{msg.name}"
    fields = {}
    for f in msg.field:
        fields[f.name] = {
            "number": f.number,
            "type": f.type,
            "label": f.label,
            "type_name": f.type_name,
            "oneof": msg.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None,
            "proto3_optional": f.proto3_optional,
        }
    out["messages"][name] = {"map_entry": msg.options.map_entry, "fields": fields}
    for nested in msg.nested_type:
        walk_message(name, nested, out)
    for enum in msg.enum_type:
        walk_enum(name, enum, out)


def walk_enum(prefix, enum, out):
    out["enums"][f"{prefix}.{enum.name}"] = {v.name: v.number for v in enum.value}


def walk_file(fd, out, seen):
    if fd.name in seen:
        return
    seen.add(fd.name)
    for dep in fd.dependencies:
        walk_file(dep, out, seen)
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    out["files"][proto.name] = proto.package
    prefix = f".{proto.package}" if proto.package else ""
    for msg in proto.message_type:
        walk_message(prefix, msg, out)
    for enum in proto.enum_type:
        walk_enum(prefix, enum, out)
    for svc in proto.service:
        out["services"][f"{prefix}.{svc.name}"] = {
            m.name: {
                "input": m.input_type,
                "output": m.output_type,
                "client_streaming": m.client_streaming,
                "server_streaming": m.server_streaming,
            }
            for m in svc.method
        }


def main():
    out = {
        "ray_version": importlib.metadata.version("ray"),
        "files": {},
        "messages": {},
        "enums": {},
        "services": {},
    }
    seen = set()
    for module in MODULES:
        walk_file(importlib.import_module(module).DESCRIPTOR, out, seen)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
