#!/usr/bin/env python3
"""Draws docs/benchmarks.md's chart from the raw results `flowforge bench --out` wrote.

    scripts/bench/chart.py RESULTS.jsonl OUT.png

Left: queue burn-down (jobs/s) against handler slots per worker process, one line per
process count, the median with the min..max of the repeated runs as a bar. Right, when the
results hold an API run: requests/s against connections, one line per route. Other
systems measured the same way (the `system` field) are drawn in grey.
"""
import json
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def spread(values):
    med = statistics.median(values)
    return med, med - min(values), max(values) - med


def axes(ax, title, xlabel, ylabel):
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def burn_down(ax, runs):
    series = defaultdict(lambda: defaultdict(list))
    for r in runs:
        series[(r.get("system", "flowforge"), r["processes"])][r["concurrency"]].append(r["jobs_per_sec"])
    for (system, processes), by_conc in sorted(series.items()):
        xs = sorted(by_conc)
        stats = [spread(by_conc[x]) for x in xs]
        ours = system == "flowforge"
        ax.errorbar(
            xs,
            [s[0] for s in stats],
            yerr=[[s[1] for s in stats], [s[2] for s in stats]],
            marker="o" if ours else "s",
            capsize=3,
            color=None if ours else "grey",
            label=f"{system}, {processes} process{'es' if processes > 1 else ''}",
        )
    axes(ax, "Queue burn-down", "handler slots per worker process", "jobs/s (200,000 no-op tasks, median, min..max)")


def api(ax, runs):
    series = defaultdict(list)
    for r in runs:
        series[r["route"]].append((r["connections"], r["requests_per_sec"]))
    for route, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=route)
    axes(ax, "API under load", "connections (HTTPS through the proxy)", "requests/s")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    results = load(sys.argv[1])
    # The chart is of tasks without an owner; runs spread over owners measure the fair claim.
    burn = [r for r in results if r.get("bench") == "burn-down" and not r.get("owners")]
    api_runs = [r for r in results if r.get("bench") == "api" and r.get("phase") == "closed-loop"]
    panels = [p for p in (("burn", burn), ("api", api_runs)) if p[1]]
    if not panels:
        sys.exit("no burn-down or API results in " + sys.argv[1])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (kind, runs) in zip(axes[0], panels):
        (burn_down if kind == "burn" else api)(ax, runs)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
