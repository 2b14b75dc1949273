#!/usr/bin/env bash
# Checks the observability kit with Prometheus's own tool, offline:
#   1. deploy/prometheus/ferry-alerts.yaml parses and its PromQL is valid (promtool check rules);
#   2. every alert fires on the condition it names, after its `for`, with its annotations rendered, and stays
#      quiet on healthy series (promtool test rules deploy/prometheus/ferry-alerts_test.yaml);
#   3. every query of the Grafana dashboard is valid PromQL: each becomes a recording rule (Grafana's
#      $instance and $__rate_interval replaced by a value) that promtool checks.
# That the metric names exist on a running Ferry is TestObservabilityKit's part (cmd/ferry).
# Installs promtool (Debian package prometheus) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null; then
	SUDO=""
	[ "$(id -u)" = 0 ] || SUDO=sudo
	echo "check-alerts: installing promtool (Debian package prometheus)"
	$SUDO apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

promtool check rules deploy/prometheus/ferry-alerts.yaml
promtool test rules deploy/prometheus/ferry-alerts_test.yaml

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - deploy/grafana/ferry-dashboard.json "$work/dashboard-rules.yaml" <<'PY'
import json, sys
exprs = []
def walk(o):
    if isinstance(o, dict):
        if isinstance(o.get("expr"), str) and o["expr"].strip():
            exprs.append(o["expr"])
        for v in o.values():
            walk(v)
    elif isinstance(o, list):
        for v in o:
            walk(v)
walk(json.load(open(sys.argv[1])))
if not exprs:
    sys.exit("check-alerts: the dashboard has no queries")
with open(sys.argv[2], "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        e = e.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$instance", ".*")
        if "$" in e:
            sys.exit("check-alerts: dashboard query %d uses a variable this check does not know: %s" % (i, e))
        f.write("      - record: dashboard:query_%d\n        expr: %s\n" % (i, json.dumps(e)))
print("check-alerts: %d dashboard queries" % len(exprs))
PY
promtool check rules "$work/dashboard-rules.yaml"
echo "check-alerts: ok"
