"""Shared fixtures of the Python module's tests (run by ctest: see tests/CMakeLists.txt).

The environment names the build's pieces: PYTHONPATH holds the module, HEPSIM_BINARY the CLI whose
results the module must reproduce, HEPSIM_REFERENCE_DIR the golden tiny network.
"""
import json
import os
import subprocess

import numpy as np
import pytest

import hepsim

BINARY = os.environ.get("HEPSIM_BINARY", "hepsim")
REFERENCE_DIR = os.environ.get("HEPSIM_REFERENCE_DIR", os.path.join(os.path.dirname(__file__), "..", "data", "reference"))


def cli(*args, check=True):
    """Runs the CLI; returns (exit code, stdout JSON or None, stderr)."""
    p = subprocess.run([BINARY, *map(str, args)], capture_output=True, text=True, timeout=600)
    out = json.loads(p.stdout) if p.stdout.strip() else None
    if check and p.returncode != 0:
        raise AssertionError(f"hepsim {' '.join(map(str, args))} failed ({p.returncode}): {p.stderr}")
    return p.returncode, out, p.stderr


def same_json(a, b, ignore=("seconds",)):
    """Equal JSON values; the CLI's null is the module's NaN; keys in `ignore` (wall times) skipped."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (sorted(a), sorted(b))
        for k in a:
            if k not in ignore:
                same_json(a[k], b[k], ignore)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            same_json(x, y, ignore)
    elif a is None or (isinstance(a, float) and np.isnan(a)):
        assert b is None or (isinstance(b, float) and np.isnan(b)), (a, b)
    else:
        assert a == b, (a, b)


def rel_err(a, b):
    """‖a − b‖ / ‖b‖ (Frobenius), as the C++ tests' rel_err."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


class Tiny:
    """The golden tiny network (tests/data/reference/tiny_network.json) as module objects."""

    def __init__(self):
        with open(os.path.join(REFERENCE_DIR, "tiny_network.json")) as f:
            self.j = j = json.load(f)
        arch = {"name": "tiny",
                "layers": [{"name": n, "size": j["sizes"][n]} for n in ("l1", "l2", "out")],
                "edges": [{"pre": e["pre"], "post": e["post"], "type": "dense" if e["bias"] else "dense_nobias"}
                          for e in j["edges"]]}
        self.model = hepsim.sim.Model(arch, j["input_size"], j["classes"], activation="sigmoid")
        self.theta = self.model.init(seed=0)
        self.theta[:] = 0
        self.fill(self.theta, j["params"], j["readout"])
        self.x = np.array(j["x"], dtype=np.float64)
        self.y = np.array(j["y"], dtype=np.float64)

    def fill(self, theta, params, readout):
        for name, p in params.items():
            self.model.param(theta, name + ".K")[:] = np.array(p["K"])
            if "b" in p:
                self.model.param(theta, name + ".b")[:] = np.array(p["b"])
        if readout is not None:
            self.model.param(theta, "readout.W")[:] = np.array(readout["W"])
            self.model.param(theta, "readout.b")[:] = np.array(readout["b"])

    def samples(self, key):
        return np.array([s[key] for s in self.j["samples"]])

    def estimate(self, key):
        return np.array([s["estimates"][key] for s in self.j["samples"]])

    def gradient(self, key):
        g = np.zeros(self.model.n_params)
        self.fill(g, self.j[key], self.j["readout_gradient"])
        return g


@pytest.fixture(scope="session")
def tiny():
    return Tiny()


@pytest.fixture(scope="session")
def mlp():
    return hepsim.sim.Model("mlp_2-256", (1, 28, 28), 10)


@pytest.fixture(scope="session")
def fmnist_test():
    """The first 50 Fashion-MNIST test images (Debian's dataset-fashion-mnist), as the CLI reads them."""
    return hepsim.datasets.load("fmnist", "test", limit=50)
