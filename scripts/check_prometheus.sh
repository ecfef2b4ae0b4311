#!/usr/bin/env bash
# The monitoring files (docs/monitoring.md): Prometheus's rules, their unit tests and the example
# configuration, and the Grafana dashboard's queries. Needs promtool (Debian's `prometheus`
# package; scripts/test.sh installs it) and python3.
#   - promtool check rules: deploy/prometheus/rules.yml and alerts.yml parse, every expr is PromQL;
#   - promtool test rules: alerts_test.yml (each alert fires after its `for:` and not otherwise);
#   - promtool check config: deploy/prometheus/prometheus.yml;
#   - every `expr` of deploy/grafana/resizer.json is PromQL (wrapped as recording rules in a
#     temporary rules file for promtool, Grafana's $__rate_interval etc. replaced by a duration);
#   - every resizer_* metric the rules and the dashboard name is one the code exports (the name
#     appears in crates/*/src), and every resizer:* series they read is recorded in rules.yml.
set -euo pipefail
cd "$(dirname "$0")/.."

promtool=$(command -v promtool || true)
[[ -n $promtool ]] || { echo "error: promtool not found (apt-get install prometheus)" >&2; exit 1; }

dir=deploy/prometheus
"$promtool" check rules "$dir/rules.yml" "$dir/alerts.yml"
"$promtool" test rules "$dir/alerts_test.yml"
"$promtool" check config "$dir/prometheus.yml"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - deploy/grafana/resizer.json "$dir/rules.yml" "$dir/alerts.yml" "$tmp/dashboard_rules.yml" <<'PY'
import json, pathlib, re, sys

dashboard_path, rules_path, alerts_path, out_path = sys.argv[1:5]
dashboard = json.load(open(dashboard_path))

def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))

exprs = []
for p in panels(dashboard["panels"]):
    for t in p.get("targets", []):
        if t.get("expr"):
            exprs.append((p["title"], t["refId"], t["expr"]))
if not exprs:
    sys.exit(f"{dashboard_path}: no expr found")

# Grafana's variables, as Prometheus would see them once Grafana has replaced them.
grafana_vars = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
lines = ["groups:", "  - name: dashboard", "    rules:"]
for i, (title, ref, expr) in enumerate(exprs):
    for var, value in grafana_vars.items():
        expr = expr.replace(var, value)
    if "$" in expr:
        sys.exit(f"{dashboard_path}: panel {title!r} {ref}: unknown variable in {expr!r}")
    lines.append(f"      # panel {title!r}, query {ref}")
    lines.append(f"      - record: dashboard:expr_{i}")
    lines.append(f"        expr: {json.dumps(expr)}")
pathlib.Path(out_path).write_text("\n".join(lines) + "\n")

# Metric names: those the code exports (any resizer_* name in the crates' sources), those
# recorded in rules.yml.
exported = set()
for src in pathlib.Path("crates").glob("*/src/**/*.rs"):
    exported |= set(re.findall(r"resizer_[a-z0-9_]+", src.read_text()))
recorded = set(re.findall(r"record:\s*(resizer:[a-z0-9_:]+)", open(rules_path).read()))

def check(where, text):
    bad = []
    for name in re.findall(r"\bresizer_[a-z0-9_]+", text):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in exported and base not in exported:
            bad.append(name)
    for name in re.findall(r"\bresizer:[a-z0-9_:]+", text):
        if name not in recorded:
            bad.append(name)
    return [f"{where}: {n} is neither exported by the code nor recorded in {rules_path}" for n in bad]

errors = []
for title, ref, expr in exprs:
    errors += check(f"{dashboard_path}: panel {title!r} {ref}", expr)
for path in (rules_path, alerts_path):  # exprs, and the names the annotations tell operators to look at
    errors += check(path, open(path).read())
if errors:
    sys.exit("\n".join(errors))
print(f"{dashboard_path}: {len(exprs)} exprs, metric names checked against crates/*/src and {rules_path}")
PY
"$promtool" check rules "$tmp/dashboard_rules.yml"
