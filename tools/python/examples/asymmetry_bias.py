#!/usr/bin/env python3
"""Asymmetry bias of equilibrium propagation against the feedback angle, before and after training
with Jacobian homeostasis — hepsim as a Python library.

For each feedback angle α (SPEC 5: K_fb ← sin α K_fb + cos α K_ffᵀ; 0° = symmetric) the network
mlp_2-256 is initialised, relaxed to its free fixed points u* on Fashion-MNIST test images, and the
exact EP response v* = dσ(u*_β)/dβ (what EP/hEP estimate as N grows) is compared with the RBP
adjoint δ (exact backprop through the equilibrium) by their cosine, per sample over all neurons.
The same network is then trained for one epoch (hEP N = 2, AdamW, lr 1e-4) with the homeostatic
loss (hepsim.train with homeostasis = λ: the CLI's run, logged and checkpointed) and, as a control,
without it; the cosine is measured again on the trained weights. Prints a table and draws the figure.

Usage (from the repository root, after tools/test.sh or tools/build.sh):
  PYTHONPATH=build/tools/python python3 tools/python/examples/asymmetry_bias.py [figure.png]
Options through the environment: ANGLES="0,15,30,45,60,75,90", SAMPLES=100, TRAIN=0 (all), LAMBDA=1,
RUNS=<directory for the training runs> (default: a temporary one).
"""
import os
import sys
import tempfile

import numpy as np

import hepsim

angles = [float(a) for a in os.environ.get("ANGLES", "0,15,30,45,60,75,90").split(",")]
samples = int(os.environ.get("SAMPLES", "100"))
train_images = int(os.environ.get("TRAIN", "0"))  # 0: all 60,000 training images
lam = float(os.environ.get("LAMBDA", "1"))
figure = sys.argv[1] if len(sys.argv) > 1 else "asymmetry_bias.png"
runs = os.environ.get("RUNS") or tempfile.mkdtemp(prefix="hepsim-asymmetry-")

images, labels = hepsim.datasets.load("fmnist", "test", limit=samples)
x, y = hepsim.datasets.batch(images, labels, "fmnist", 10)


def cosine(model, theta):
    """Mean over the samples of cos(v*, δ) at the free fixed points, and its standard error."""
    # The damped map (dt 0.5): the map's fixed points, also where a near-symmetric network makes the
    # plain map cycle (README, "Homeostasis makes the map cycle").
    free = hepsim.ep.free_phase(model, theta, x, y, max_steps=40000, tol=1e-10, dt=0.5)
    ok = np.array([s == "converged" for s in free.status])
    vstar = hepsim.ep.exact_response(model, theta, free, dense=True)[ok]
    delta = hepsim.ep.rbp(model, theta, free, dense=True)[ok]
    c = np.sum(vstar * delta, axis=1) / (np.linalg.norm(vstar, axis=1) * np.linalg.norm(delta, axis=1))
    return c.mean(), c.std(ddof=1) / np.sqrt(c.size), int(ok.sum())


def trained(angle, homeostasis):
    """One epoch of the CLI's training at this angle; returns the checkpoint's model and θ."""
    out = os.path.join(runs, f"angle{angle:g}_homeo{homeostasis:g}")
    hepsim.train(arch="mlp_2-256", dataset="fmnist", angle=angle, homeostasis=homeostasis, epochs=1,
                 optimizer="adamw", lr=1e-4, train_limit=train_images, test_limit=1000, out=out, quiet=True)
    ck = hepsim.load_checkpoint(os.path.join(out, "checkpoint.h5"))
    return ck["model"], ck["theta"]


rows = []
print(f"{'angle':>6} {'weight angle':>12} {'cos init':>10} {'cos trained':>12} {'cos homeostatic':>16} "
      f"{'jac_sym init/trained/homeo':>28}")
for a in angles:
    model = hepsim.sim.Model("mlp_2-256", (1, 28, 28), 10)
    theta = model.init(seed=0, angle=a)
    init = cosine(model, theta)
    m_plain, t_plain = trained(a, 0.0)
    m_homeo, t_homeo = trained(a, lam)
    plain, homeo = cosine(m_plain, t_plain), cosine(m_homeo, t_homeo)
    sym = [hepsim.jac.jac_sym(m, t) for m, t in ((model, theta), (m_plain, t_plain), (m_homeo, t_homeo))]
    rows.append((a, model.weight_angle(theta), init, plain, homeo, sym, model.weight_angle(t_homeo)))
    print(f"{a:6.0f} {rows[-1][1]:12.1f} {init[0]:10.4f} {plain[0]:12.4f} {homeo[0]:16.4f} "
          f"{sym[0]:9.3f}/{sym[1]:.3f}/{sym[2]:.3f}", flush=True)

import matplotlib  # noqa: E402  (only the figure needs it: tools/deps.sh --plots)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
a = [r[0] for r in rows]
for k, label, style in ((2, "at initialisation", "o-"), (3, "after 1 epoch, no homeostasis", "s--"),
                        (4, f"after 1 epoch, homeostasis λ = {lam:g}", "^-")):
    ax.errorbar(a, [r[k][0] for r in rows], yerr=[r[k][1] for r in rows], fmt=style, label=label, capsize=2)
    bx.plot(a, [r[5][k - 2] for r in rows], style, label=label)
ax.set_xlabel("feedback angle α at initialisation (degrees)")
ax.set_ylabel("cos(v*, δ)  (EP response vs RBP adjoint)")
ax.set_title(f"Asymmetry bias, mlp_2-256, {samples} FMNIST test images")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
bx.set_xlabel("feedback angle α at initialisation (degrees)")
bx.set_ylabel("jac_sym")
bx.set_title("Jacobian symmetry")
bx.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(figure, dpi=110)
print(f"figure: {figure}  (training runs in {runs})")
