#!/usr/bin/env python3
"""The cost of the Python binding on one relaxation call (issue: under 2 %).

The Table-1 setting: mlp_2-256 on Fashion-MNIST test images, a batch of 50, T1 = 150 map steps (fixed
budget), float32 (training's precision) and float64. Each round times one hepsim.sim.relax call from
Python (conversions, GIL release, Ctrl-C handler, result arrays) and, interleaved, the same library
work timed inside C++ (hepsim.sim._relax_native_seconds); the overhead is the median over rounds of
(Python time / C++ time) − 1.

Usage: PYTHONPATH=build/tools/python python3 tools/bench/python_overhead.py [rounds] [threads]
"""
import statistics
import sys
import time

import numpy as np

import hepsim

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
hepsim.set_threads(threads)
model = hepsim.sim.Model("mlp_2-256", (1, 28, 28), 10)
images, labels = hepsim.datasets.load("fmnist", "test", limit=50)
print(f"rounds {rounds}, threads {threads}")
for dtype in ("float32", "float64"):
    theta = model.init(seed=0, dtype=dtype)
    x, y = hepsim.datasets.batch(images, labels, "fmnist", 10, dtype=dtype)
    for _ in range(5):  # warm up
        hepsim.sim.relax(model, theta, x, y, max_steps=150)
    ratios, py_times, c_times = [], [], []
    for r in range(rounds):
        t0 = time.perf_counter()
        hepsim.sim.relax(model, theta, x, y, max_steps=150)
        t_py = time.perf_counter() - t0
        t_c = hepsim.sim._relax_native_seconds(model, theta, x, y, max_steps=150)["seconds"][0]
        ratios.append(t_py / t_c)
        py_times.append(t_py)
        c_times.append(t_c)
    med = statistics.median(ratios)
    print(f"{dtype}: python call {statistics.median(py_times) * 1e3:.3f} ms, library {statistics.median(c_times) * 1e3:.3f} ms, "
          f"overhead (median of ratios) {100 * (med - 1):+.2f} %")

# The binding's fixed cost per call, where the work is smallest: one map step.
theta = model.init(seed=0, dtype="float32")
x, y = hepsim.datasets.batch(images, labels, "fmnist", 10, dtype="float32")
diffs = []
for r in range(rounds):
    t0 = time.perf_counter()
    hepsim.sim.relax(model, theta, x, y, max_steps=1)
    t_py = time.perf_counter() - t0
    diffs.append(t_py - hepsim.sim._relax_native_seconds(model, theta, x, y, max_steps=1)["seconds"][0])
print(f"fixed cost of a call (one step, float32): {statistics.median(diffs) * 1e6:.1f} µs")
