"""NumPy in and out: samples along the first axis, dtypes never converted silently, shapes checked,
no copies where the layout allows, complex nudges; and the library's relaxation against the CLI's."""
import numpy as np
import pytest

import hepsim
from conftest import cli


@pytest.fixture(scope="module")
def batch(fmnist_test):
    images, labels = fmnist_test
    return hepsim.datasets.batch(images, labels, "fmnist", 10)


def test_datasets_load_and_batch(fmnist_test, batch):
    images, labels = fmnist_test
    assert images.shape == (50, 1, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (50,) and labels.dtype == np.int32
    x, y = batch
    assert x.shape == (50, 784) and x.dtype == np.float64
    assert np.array_equal(x, images.reshape(50, -1) / 255.0)  # (F)MNIST: x = pixel / 255
    assert np.array_equal(y.argmax(axis=1), labels) and np.all(y.sum(axis=1) == 1)
    x32, _ = hepsim.datasets.batch(images, labels, "fmnist", 10, dtype="float32")
    assert x32.dtype == np.float32
    with pytest.raises(ValueError, match="data directory not found"):
        hepsim.datasets.load("fmnist", data_dir="/nonexistent")
    with pytest.raises(ValueError, match="split"):
        hepsim.datasets.load("fmnist", split="validation")
    with pytest.raises(ValueError, match="labels"):
        hepsim.datasets.batch(images, labels + 10, "fmnist", 10)


def test_library_relaxation_equals_the_cli(mlp, batch):
    # The CLI relaxes the first 20 test samples with fresh weights (seed 4, angle 60) in one chunk.
    # --threads 1 and relax's one Eigen thread per chunk: the same as set_threads(1) here (Eigen's
    # threaded products sum in another order).
    x, y = batch
    theta = mlp.init(seed=4, angle=60)
    hepsim.set_threads(1)
    try:
        r = hepsim.sim.relax(mlp, theta, x[:20], max_steps=3000, tol=1e-7)
    finally:
        hepsim.set_threads(0)
    j = cli("relax", "--samples", 20, "--batch-size", 20, "--seed", 4, "--angle", 60, "--max-steps", 3000,
            "--tol", 1e-7, "--threads", 1)[1]
    assert j["converged"] == r["status"].count("converged")
    assert j["mean_steps"] == np.mean(r["steps"])
    assert j["max_residual"] == np.max(r["residual"])
    assert j["field_evals"] == r["field_evals"]


def test_dtypes_and_shapes_are_refused_not_reinterpreted(mlp, batch):
    x, y = batch
    theta = mlp.init()
    cases = [
        (dict(x=x.astype(np.float32)), "x: has dtype float32; this call needs float64"),
        (dict(x=x.astype(np.int64)), "x: has dtype int64"),
        (dict(x=x[:, :700]), r"x: has shape \(50, 700\): each sample must have 784 values"),
        (dict(x=x[0]), "x: must have samples along its first axis"),
        (dict(x=x.tolist()), "x: must be a NumPy array"),
        (dict(x=x, y=y[:10]), "y: has 10 samples; the other arrays of this call have 50"),
        (dict(x=x, y=y.astype(np.float32)), "y: has dtype float32"),
        (dict(x=x, beta=np.ones(3)), "beta: must be a number or a 1-D numeric array of one nudge per sample"),
        (dict(x=x, beta=0.1), "y: is needed for a nudged phase"),
        (dict(x=x, u0=np.zeros((50, 10))), "u0: has shape"),
        (dict(x=x, max_steps=0), "max_steps: must be at least 1"),
        (dict(x=x, tol=-1.0), "tol: must be a finite number"),
        (dict(x=x, max_steps="ten"), "max_steps: must be an integer"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message):
            hepsim.sim.relax(mlp, theta, **kw)
    with pytest.raises(ValueError, match="theta: must be a 1-D array of the network's 337528 parameters"):
        hepsim.sim.relax(mlp, theta[:-1], x)
    with pytest.raises(ValueError, match="theta: has dtype int64"):
        hepsim.sim.relax(mlp, theta.astype(np.int64), x)
    with pytest.raises(ValueError, match="arch: .nope. is neither a built-in"):
        hepsim.sim.Model("nope", 784, 10)
    with pytest.raises(ValueError, match="angle"):
        mlp.init(angle=200)
    with pytest.raises(ValueError, match="'l9-l1.K' is not a parameter block"):
        mlp.param(theta, "l9-l1.K")


def test_layouts_views_and_precision(mlp, batch):
    x, y = batch
    theta = mlp.init(seed=1)
    ref = hepsim.sim.relax(mlp, theta, x[:8], max_steps=40)
    # A non-contiguous view is read correctly (copied once), a Fortran-ordered copy too.
    assert np.array_equal(hepsim.sim.relax(mlp, theta, np.asfortranarray(x[:8]), max_steps=40)["states"], ref["states"])
    wide = np.zeros((8, 2 * 784))
    wide[:, ::2] = x[:8]
    assert np.array_equal(hepsim.sim.relax(mlp, theta, wide[:, ::2], max_steps=40)["states"], ref["states"])
    # Results own their memory and have samples first.
    s = ref["states"]
    assert s.shape == (8, mlp.neurons) and s.flags.c_contiguous and s.flags.writeable
    # param() is a view of θ: writing it changes what the next call computes; θ made by init is used in place.
    theta2 = theta.copy()
    K = mlp.param(theta2, "l2-l1.K")
    assert K.shape == (256, 256) and np.shares_memory(K, theta2)
    K[:] = 0
    assert np.all(theta2[mlp.blocks[4]["offset"]:mlp.blocks[4]["offset"] + 256 * 256] == 0)
    assert not np.array_equal(hepsim.sim.relax(mlp, theta2, x[:8], max_steps=40)["states"], s)
    # float32 parameters take float32 batches (the fused engine).
    t32 = mlp.init(seed=1, dtype="float32")
    r32 = hepsim.sim.relax(mlp, t32, x[:8].astype(np.float32), max_steps=40)
    assert r32["states"].dtype == np.float32
    assert np.max(np.abs(r32["states"] - s)) < 1e-4


def test_complex_nudges_and_angle(mlp, batch):
    x, y = batch
    theta = mlp.init(seed=2, angle=0)
    assert mlp.weight_angle(theta) == pytest.approx(0, abs=1e-5)
    free = hepsim.sim.relax(mlp, theta, x[:4], y[:4], max_steps=2000, tol=1e-12)
    beta = 0.05 * np.exp(2j * np.pi * np.arange(4) / 4)
    r = hepsim.sim.relax(mlp, theta, x[:4], y[:4], beta=beta, u0=free["states"].astype(np.complex128),
                         max_steps=2000, tol=1e-12)
    assert r["states"].dtype == np.complex128
    assert r["status"] == ["converged"] * 4
    # β = |β| (k = 0) is the real nudged phase.
    real = hepsim.sim.relax(mlp, theta, x[:1], y[:1], beta=0.05, u0=free["states"][:1], max_steps=2000, tol=1e-12)
    assert np.max(np.abs(r["states"][0] - real["states"][0])) < 1e-10
    # A conjugate nudge gives the conjugate state (real parameters).
    rc = hepsim.sim.relax(mlp, theta, x[:4], y[:4], beta=np.conj(beta), u0=free["states"].astype(np.complex128),
                          max_steps=2000, tol=1e-12)
    assert np.max(np.abs(rc["states"] - np.conj(r["states"]))) < 1e-10
    # The angle: apply_angle in place mixes K_fb toward K_ffᵀ.
    t = mlp.init(seed=2, angle=90)
    mlp.apply_angle(t, 0)
    assert mlp.weight_angle(t) == pytest.approx(0, abs=1e-5)


def test_mismatched_and_degenerate_inputs_are_refused(mlp, tiny, batch):
    x, y = batch
    theta = mlp.init()
    # A free state of another network (it would index past its arrays).
    free = hepsim.ep.free_phase(tiny.model, tiny.theta, tiny.x, tiny.y, max_steps=50)
    for f in (hepsim.ep.rbp, hepsim.ep.exact_response, hepsim.ep.loss_gradient):
        with pytest.raises(ValueError, match="free: is a state of another network"):
            f(mlp, theta, free)
    with pytest.raises(ValueError, match="free: is a state of another network"):
        hepsim.ep.bptt(mlp, theta, free, steps=3)
    with pytest.raises(ValueError, match="free: holds float64 states"):
        hepsim.ep.rbp(tiny.model, tiny.theta.astype(np.float32), free)
    # θ of the wrong size, layout or dtype where it is changed in place.
    for bad in (np.zeros(10), np.zeros(mlp.n_params + 1), np.zeros((2, mlp.n_params)), theta.copy()[::1][None, :]):
        with pytest.raises(ValueError, match="theta"):
            mlp.apply_angle(bad, 30)
    strided = np.zeros(2 * mlp.n_params)[::2]
    with pytest.raises(ValueError, match="writable contiguous"):
        mlp.apply_angle(strided, 30)
    # A θ view with other strides than the vector it views is not taken for that vector.
    t = mlp.init(seed=1)
    view = np.lib.stride_tricks.as_strided(t, shape=t.shape, strides=(0,))
    assert not np.array_equal(hepsim.sim.relax(mlp, view, x[:2], max_steps=5)["states"],
                              hepsim.sim.relax(mlp, t, x[:2], max_steps=5)["states"])
    # No samples; a spectrum of a number; β of bools or text; a complex NumPy scalar is complex.
    with pytest.raises(ValueError, match="x: has no samples"):
        hepsim.sim.relax(mlp, theta, x[:0])
    with pytest.raises(ValueError, match="J: must be a square"):
        hepsim.jac.spectrum(2)
    with pytest.raises(ValueError, match="beta"):
        hepsim.sim.relax(mlp, theta, x[:2], y[:2], beta=np.array([True, False]))
    with pytest.raises(ValueError, match="beta"):
        hepsim.sim.relax(mlp, theta, x[:2], y[:2], beta="a")
    r = hepsim.sim.relax(mlp, theta, x[:2], y[:2], beta=np.complex64(0.05j), max_steps=5)
    assert r["states"].dtype == np.complex128
    with pytest.raises(ValueError, match="max_steps: is out of range"):
        hepsim.sim.relax(mlp, theta, x[:2], max_steps=2 ** 70)
    with pytest.raises(ValueError, match="activation"):
        hepsim.sim.Model("mlp_2-256", 784, 10, activation=5)
    with pytest.raises(ValueError, match="input_shape"):
        hepsim.sim.Model("mlp_2-256", 1.5, 10)
