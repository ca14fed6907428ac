#!/usr/bin/python3
"""Plots one or more hepsim training logs (DIR/log.h5, layout in tools/run_files.hpp and README)
into one PNG: test accuracy, per-layer alignment of the error vector with backprop's delta,
cosine of the gradient with the RBP gradient, jac_sym, weight angle and homeostatic loss against
the epoch, runs overlaid for comparison.

Usage: tools/plot_log.py LOG.h5 [LOG.h5 ...] [--labels A B ...] [--out FIGURE.png]
Needs Debian's python3-h5py and python3-matplotlib (tools/deps.sh --plots installs them).
"""
import argparse
import json
import math
import os
import sys

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def load(path):
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        sys.exit(f"{path}: cannot open the log ({e})")
    with f:
        if "epochs" not in f or "alignment" not in f:
            sys.exit(f"{path}: not a hepsim log (no /epochs or /alignment)")
        run = {k: f["epochs"][k][()] for k in f["epochs"]}
        layers = json.loads(f.attrs["layers"])
        run["cos_mean"] = {l: f["alignment/cos_delta_mean"][l][()] for l in layers}
        run["cos_std"] = {l: f["alignment/cos_delta_std"][l][()] for l in layers}
        run["cos_grad_total"] = f["alignment/cos_grad_total"][()]
        run["config"] = json.loads(f.attrs["config"])
        run["layers"] = layers
    return run


def default_label(run, path):
    c = run["config"]
    n = f"N={c['N']}" if c["algo"] == "hep" else c["algo"]
    return f"{os.path.basename(os.path.dirname(os.path.abspath(path)))} ({n}, β={c['beta']}, λ={c['homeostasis']})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("logs", nargs="+")
    ap.add_argument("--labels", nargs="*")
    ap.add_argument("--out", default=None, help="figure path (default: next to the first log)")
    a = ap.parse_args()
    if a.labels and len(a.labels) != len(a.logs):
        sys.exit("--labels: give one label per log")
    runs = [load(p) for p in a.logs]
    labels = a.labels or [default_label(r, p) for r, p in zip(runs, a.logs)]
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(a.logs[0])), "training.png")

    fig, ax = plt.subplots(2, 3, figsize=(15, 8.5))
    ax = ax.ravel()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    for i, (run, label) in enumerate(zip(runs, labels)):
        col = colors[i % len(colors)]
        ep = run["epoch"]
        ax[0].plot(ep, 100 * run["test_acc"], "-o", color=col, label=f"{label} test")
        ax[0].plot(ep, 100 * run["train_acc"], ":", color=col, label=f"{label} train")
        for k, layer in enumerate(run["layers"]):
            m, s = run["cos_mean"][layer], run["cos_std"][layer]
            ax[1].plot(ep, m, styles[k % len(styles)], color=col, marker="o", label=f"{label}: {layer}")
            ax[1].fill_between(ep, m - s, m + s, color=col, alpha=0.1)
        ax[2].plot(ep, run["cos_grad_total"], "-o", color=col, label=label)
        ax[3].plot(ep, run["jac_sym"], "-o", color=col, label=label)
        if not all(math.isnan(x) for x in run["weight_angle_deg"]):
            ax[4].plot(ep, run["weight_angle_deg"], "-o", color=col, label=label)
        ax[5].plot(ep, run["homeo_loss"], "-o", color=col, label=label)
    titles = ["accuracy (%)", "cos(error vector, RBP δ) per layer", "cos(gradient, RBP gradient)",
              "jac_sym = ‖S‖/(‖S‖+‖A‖)", "weight angle (°)", "homeostatic loss ½‖H−Hᵀ‖²/n"]
    for x, t in zip(ax, titles):
        x.set_title(t)
        x.set_xlabel("epoch")
        x.xaxis.set_major_locator(MaxNLocator(integer=True))
        x.grid(alpha=0.3)
        x.legend(fontsize=7)
    ax[5].set_yscale("log")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
