#!/usr/bin/env python3
"""Draw the gateway's memory curve (RSS against linked sessions) as a PNG.

Usage: plot-memory.py bench-memory.csv out.png
The CSV is written by tests/bench_scale.rs (columns: sessions, rss_kib).
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src, out = sys.argv[1], sys.argv[2]
with open(src) as f:
    rows = [(int(r["sessions"]), int(r["rss_kib"]) / 1024) for r in csv.DictReader(f)]
rows.sort()
xs, ys = [r[0] for r in rows], [r[1] for r in rows]
fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
ax.plot(xs, ys, marker="o", label="wasup RSS")
goal = [(x, ys[0] + x * 200 / 1024) for x in xs]
ax.plot([g[0] for g in goal], [g[1] for g in goal], linestyle="--", color="grey",
        label="goal: 200 KiB per session")
ax.set_xlabel("linked sessions")
ax.set_ylabel("resident set (MiB)")
ax.set_title("wasup gateway memory by linked sessions")
ax.grid(True, alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(out)
