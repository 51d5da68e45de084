#!/usr/bin/env python3
"""Draw the gateway's memory curve (RSS against linked sessions) as a PNG.

Usage: plot-memory.py bench-memory.csv out.png
The CSV is written by tests/integration/bench_scale.rs (columns: sessions, rss_kib and
phase: `linked` while sessions are being linked, `restored` after a restart
brought them back; older files without the column are all `linked`).
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src, out = sys.argv[1], sys.argv[2]
series = {}
with open(src) as f:
    for r in csv.DictReader(f):
        phase = r.get("phase") or "linked"
        series.setdefault(phase, []).append((int(r["sessions"]), int(r["rss_kib"]) / 1024))
linked = sorted(series.get("linked", []))
fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
ax.plot([p[0] for p in linked], [p[1] for p in linked], marker="o",
        label="wasup RSS while linking")
restored = sorted(series.get("restored", []))
if restored:
    ax.plot([p[0] for p in restored], [p[1] for p in restored], marker="s", linestyle="none",
            label="wasup RSS after a restart restored them")
if linked:
    base, top = linked[0][1], max(p[0] for p in linked)
    ax.plot([0, top], [base, base + top * 200 / 1024], linestyle="--", color="grey",
            label="goal: 200 KiB per session")
ax.set_xlabel("linked sessions")
ax.set_ylabel("resident set (MiB)")
ax.set_title("wasup gateway memory by linked sessions")
ax.grid(True, alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(out)
