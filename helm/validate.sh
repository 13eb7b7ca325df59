#!/usr/bin/env bash
# Renders helm/purposegate with each scenario's values through the real Helm
# engine (PyPI helm-python-sdk: the Helm SDK, offline), lints it, and checks
# every rendered object against the Kubernetes schemas (PyPI
# kubernetes-validate). Exits non-zero on any problem.
#
#   helm/validate.sh                 # every helm/purposegate/ci/*-values.yaml
#   helm/validate.sh my-values.yaml  # just these
#
# KUBE_VERSION (default 1.30.0) picks the Kubernetes version to check against.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ "$#" -eq 0 ]; then
  set -- "$here"/purposegate/ci/*-values.yaml
fi
exec python3 - "$here/purposegate" "${KUBE_VERSION:-1.30.0}" "$@" <<'PY'
import sys

import helm_python as helm
import kubernetes_validate
import yaml

chart_dir, kube_version, *values_files = sys.argv[1:]
# Kinds from CRDs have no schema in kubernetes-validate; they are rendered
# and linted but not schema-checked.
CRD_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")
problems = 0
chart = helm.Chart.load(chart_dir)
for path in values_files:
    name = path.rsplit("/", 1)[-1]
    try:
        with open(path) as f:
            values = helm.values_from_yaml(f.read()) or {}
    except Exception as e:
        print(f"FAIL {name}: cannot read the values: {e}")
        problems += 1
        continue
    report = helm.lint(chart_dir, values, strict=True, kube_version=f"v{kube_version}")
    lint_errors = [m["error"] for m in report.get("messages") or [] if m.get("severity", 0) >= 2]
    lint_errors += [e for e in report.get("errors") or [] if not any(e in l or l in e for l in lint_errors)]
    lint_errors = list(dict.fromkeys(e.strip() for e in lint_errors))
    for error in lint_errors:
        print(f"FAIL {name}: lint: {error}")
    problems += len(lint_errors)
    if lint_errors:
        # The render would only repeat what lint said.
        continue
    try:
        chart.validate_schema(values)
        manifests = chart.render(values, name="purposegate", namespace="purposegate", is_install=True)
    except Exception as e:
        print(f"FAIL {name}: render: {e}")
        problems += 1
        continue
    checked = 0
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            kind = f'{doc.get("apiVersion")}/{doc.get("kind")}'
            if doc.get("apiVersion", "").startswith(CRD_GROUPS):
                print(f"  skip {name}: {kind} (a CRD kind, not in the Kubernetes schemas)")
                continue
            try:
                kubernetes_validate.validate(doc, kube_version, strict=True)
                checked += 1
            except kubernetes_validate.ValidationError as e:
                where = "/".join(str(p) for p in e.path)
                print(f"FAIL {name}: {template}: {kind} {doc['metadata'].get('name')}: {where}: {e.message}")
                problems += 1
            except Exception as e:
                print(f"FAIL {name}: {template}: {kind}: {e}")
                problems += 1
    print(f"{'ok  ' if not problems else '    '}{name}: {checked} objects valid for Kubernetes {kube_version}")
print(f"{len(values_files)} scenario(s), {problems} problem(s)")
sys.exit(1 if problems else 0)
PY
