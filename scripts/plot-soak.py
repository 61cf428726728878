"""Draws scripts/soak.sh's CSV: the server's RSS and the state file's size over time."""
import csv
import subprocess
import sys

try:
    import matplotlib
except ImportError:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "matplotlib"], check=True)
    import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

src, dst = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(src)))
t = [int(r["seconds"]) / 60 for r in rows]
rss = [int(r["rss_kb"]) / 1024 for r in rows]
state = [int(r["state_bytes"]) / 2**20 for r in rows]
fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(t, rss, label="reins serve RSS (MiB)")
ax.plot(t, state, label="state file + WAL (MiB)")
ax.set_xlabel("minutes")
ax.set_ylabel("MiB")
ax.set_title("Soak: steady load on reins serve (scripts/soak.sh)")
ax.grid(True, alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(dst, dpi=100)
