#!/usr/bin/env python3
"""FlowForge's Grafana dashboards, as code: writes dashboards/*.json from the panel list
below. `generate.py --check` fails if the committed JSON differs (scripts/test.sh runs it);
tests/stack/system-test.sh runs every panel's query against the live Prometheus.
"""
import json
import pathlib
import sys

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
SLO_TARGET = 0.999  # 99.9 % of api requests answered without a 5xx, over 30 days
BUDGET = 1 - SLO_TARGET
API = 'job="api"'
OK = f'{API},status!~"5.."'


def panel(title, queries, unit="short", kind="timeseries", description=""):
    """A panel; `queries` is a list of (PromQL, legend) pairs."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(queries)
        ],
    }


def dashboard(uid, title, description, panels):
    width, height = 12, 8
    for i, p in enumerate(panels):
        p["id"] = i + 1
        p["gridPos"] = {"x": (i % 2) * width, "y": (i // 2) * height, "w": width, "h": height}
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["flowforge"],
        "timezone": "browser",
        "schemaVersion": 38,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "panels": panels,
    }


def error_ratio(window):
    return f"1 - sum(rate(http_requests_total{{{OK}}}[{window}])) / sum(rate(http_requests_total{{{API}}}[{window}]))"


DASHBOARDS = [
    dashboard("flowforge-overview", "FlowForge / Overview", "Requests through the api: rate, errors, latency per route.", [
        panel("Request rate by route", [(f"sum by (route) (rate(http_requests_total{{{API}}}[5m]))", "{{route}}")], "reqps"),
        panel("Error rate (5xx share)", [(error_ratio("5m"), "5xx share")], "percentunit"),
        panel("Latency by route (p50 / p95 / p99)", [
            ("route:http_request_duration_seconds:p50_5m", "p50 {{route}}"),
            ("route:http_request_duration_seconds:p95_5m", "p95 {{route}}"),
            ("route:http_request_duration_seconds:p99_5m", "p99 {{route}}"),
        ], "s"),
        panel("Responses by status", [(f"sum by (status) (rate(http_requests_total{{{API}}}[5m]))", "{{status}}")], "reqps"),
        panel("Replicas up", [('sum by (job) (up{job=~"api|worker|proxy"})', "{{job}}")], "short", "stat"),
        panel("Tasks created", [("sum by (kind) (rate(tasks_created_total[5m]))", "{{kind}}")], "ops"),
    ]),
    dashboard("flowforge-queue", "FlowForge / Queue", "The PostgreSQL queue and the workers burning it down.", [
        panel("Queue depth (due now)", [("max(queue_depth)", "due"), ("max by (state) (queue_tasks)", "{{state}}")]),
        panel("Throughput (completed per second)", [("sum by (kind) (rate(tasks_completed_total[5m]))", "{{kind}}")], "ops"),
        panel("Processing time p95 by kind", [("kind:task_processing_duration_seconds:p95_5m", "{{kind}}")], "s"),
        panel("Enqueue → start delay p50 / p99", [
            ("histogram_quantile(0.5, sum by (le) (rate(task_start_delay_seconds_bucket[5m])))", "p50"),
            ("histogram_quantile(0.99, sum by (le) (rate(task_start_delay_seconds_bucket[5m])))", "p99"),
        ], "s"),
        panel("Retries", [("sum by (kind) (rate(task_retries_total[5m]))", "{{kind}}")], "ops"),
        panel("Dead letters (failed for good, last hour)", [("sum by (kind) (increase(tasks_failed_total[1h]))", "{{kind}}")]),
        panel("Lease expiries rescued", [("sum(rate(task_lease_expiries_total[5m]))", "rescued")], "ops"),
        panel("Tasks in flight per worker", [("sum by (instance) (tasks_in_flight)", "{{instance}}")]),
    ]),
    dashboard("flowforge-slo", "FlowForge / SLO", f"Availability SLO: {SLO_TARGET:.1%} of api requests without a 5xx over 30 days.", [
        panel("Availability SLI (30 days)", [(
            f"sum(increase(http_requests_total{{{OK}}}[30d])) / sum(increase(http_requests_total{{{API}}}[30d]))", "SLI")],
            "percentunit", "stat"),
        panel("Error budget remaining (30 days)", [(
            f"1 - (1 - sum(increase(http_requests_total{{{OK}}}[30d])) / sum(increase(http_requests_total{{{API}}}[30d]))) / {BUDGET:g}",
            "remaining")], "percentunit", "stat"),
        panel("Burn rate (1 budget = 1.0)", [
            (f"({error_ratio('5m')}) / {BUDGET:g}", "5m"),
            (f"({error_ratio('1h')}) / {BUDGET:g}", "1h"),
            (f"({error_ratio('6h')}) / {BUDGET:g}", "6h"),
        ]),
        panel("Error share against the objective", [(error_ratio("1h"), "1h error share"), (f"vector({BUDGET:g})", "budget")],
              "percentunit"),
    ]),
    dashboard("flowforge-infrastructure", "FlowForge / Infrastructure", "Host, database, cache and proxy.", [
        panel("Host CPU busy", [('1 - avg(rate(node_cpu_seconds_total{mode="idle"}[5m]))', "busy")], "percentunit"),
        panel("Host memory used", [("1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", "used")], "percentunit"),
        panel("Host disk used (/)", [(
            '1 - node_filesystem_avail_bytes{mountpoint="/"} / node_filesystem_size_bytes{mountpoint="/"}', "used")],
            "percentunit"),
        panel("PostgreSQL connections by state", [("sum by (state) (pg_stat_activity_count)", "{{state}}")]),
        panel("Cache hit ratio", [(
            'sum(rate(cache_requests_total{result="hit"}[5m])) / sum(rate(cache_requests_total[5m]))', "hits")],
            "percentunit"),
        panel("Redis memory", [("redis_memory_used_bytes", "used")], "bytes"),
        panel("Proxy requests by frontend", [("sum by (proxy) (rate(haproxy_frontend_http_requests_total[5m]))", "{{proxy}}")],
              "reqps"),
        panel("PostgreSQL and Redis up", [("pg_up", "postgres"), ("redis_up", "redis")], "short", "stat"),
    ]),
]


def main():
    out = pathlib.Path(__file__).parent / "dashboards"
    stale = []
    for d in DASHBOARDS:
        path = out / f"{d['uid']}.json"
        text = json.dumps(d, indent=2) + "\n"
        if "--check" in sys.argv:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        sys.exit(f"dashboards out of date (run deploy/grafana/generate.py): {', '.join(stale)}")
    if "--queries" in sys.argv:
        for d in DASHBOARDS:
            for p in d["panels"]:
                for t in p["targets"]:
                    print(f"{d['uid']}\t{p['title']}\t{t['expr']}")


if __name__ == "__main__":
    main()
