"""Check deploy/kubernetes against the published schemas.

usage: extproc_k8s_manifests.py DEPLOY_KUBERNETES_DIR

InferencePool and AIGatewayRoute documents are validated against the
openAPIV3Schema of their published CRDs (vendored in schemas/, with the
source commit recorded): every field name must exist in the schema,
required fields must be present, enums and basic types must match. Core
kinds get a structural check of their top-level fields. The kustomization
must list exactly the manifest files present.
"""

import json
import pathlib
import sys

import yaml

ROOT = pathlib.Path(sys.argv[1])
errors = []

SCHEMAS = {}
for f in (ROOT / "schemas").glob("*.schema.json"):
    d = json.loads(f.read_text())
    SCHEMAS[(f"{d['group']}/{d['version']}", d["kind"])] = d["openAPIV3Schema"]

TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "boolean": bool,
}


def validate(node, schema, path):
    if schema.get("x-kubernetes-preserve-unknown-fields") or schema.get("x-kubernetes-int-or-string"):
        return
    t = schema.get("type")
    if t in TYPES and not isinstance(node, TYPES[t]):
        errors.append(f"{path}: expected {t}, got {type(node).__name__}")
        return
    if "enum" in schema and node not in schema["enum"]:
        errors.append(f"{path}: {node!r} not one of {schema['enum']}")
    if isinstance(node, dict):
        props = schema.get("properties")
        if props is not None:
            for k, v in node.items():
                if k not in props:
                    errors.append(f"{path}.{k}: no such field in the published schema")
                else:
                    validate(v, props[k], f"{path}.{k}")
            for r in schema.get("required", []):
                if r not in node:
                    errors.append(f"{path}: required field {r!r} missing")
        elif isinstance(schema.get("additionalProperties"), dict):
            for k, v in node.items():
                validate(v, schema["additionalProperties"], f"{path}.{k}")
    if isinstance(node, list) and "items" in schema:
        for i, v in enumerate(node):
            validate(v, schema["items"], f"{path}[{i}]")


CORE = {
    ("v1", "Namespace"): {"apiVersion", "kind", "metadata"},
    ("v1", "ConfigMap"): {"apiVersion", "kind", "metadata", "data"},
    ("v1", "Service"): {"apiVersion", "kind", "metadata", "spec"},
    ("apps/v1", "Deployment"): {"apiVersion", "kind", "metadata", "spec"},
}
METADATA = {"name", "namespace", "labels", "annotations"}

seen_kinds = set()
files = sorted(p for p in ROOT.glob("*.yaml") if p.name != "kustomization.yaml")
for f in files:
    for i, doc in enumerate(yaml.safe_load_all(f.read_text())):
        if doc is None:
            continue
        where = f"{f.name}#{i}"
        key = (doc.get("apiVersion"), doc.get("kind"))
        seen_kinds.add(key)
        extra = set(doc.get("metadata", {})) - METADATA
        if extra or "name" not in doc.get("metadata", {}):
            errors.append(f"{where}: metadata needs a name and only {sorted(METADATA)}: {extra}")
        if key in SCHEMAS:
            validate({k: v for k, v in doc.items() if k != "metadata"}, SCHEMAS[key], where)
        elif key in CORE:
            unknown = set(doc) - CORE[key]
            if unknown:
                errors.append(f"{where}: unexpected top-level fields {sorted(unknown)}")
        else:
            errors.append(f"{where}: unexpected kind {key}")

for want in SCHEMAS:
    if want not in seen_kinds:
        errors.append(f"no manifest of kind {want}")

kust = yaml.safe_load((ROOT / "kustomization.yaml").read_text())
if sorted(kust.get("resources", [])) != sorted(p.name for p in files):
    errors.append(f"kustomization resources {kust.get('resources')} != files {[p.name for p in files]}")

# The pool's picker is the herd-epp Service, on its ext_proc port.
pool = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d and d.get("kind") == "InferencePool"][0]
svc = [
    d
    for f in files
    for d in yaml.safe_load_all(f.read_text())
    if d and d.get("kind") == "Service" and d["metadata"]["name"] == pool["spec"]["endpointPickerRef"]["name"]
]
if not svc or pool["spec"]["endpointPickerRef"]["port"]["number"] not in [p["port"] for p in svc[0]["spec"]["ports"]]:
    errors.append("InferencePool.endpointPickerRef does not point at the herd-epp Service port")

if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"ok: {len(files)} files, kinds {sorted(seen_kinds)}")
