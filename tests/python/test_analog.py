"""The analog substrate from Python: state noise, time constants, settling time, device mismatch and
few-bit weights, and online (oscillating) holomorphic EP."""
import numpy as np
import pytest

import hepsim
from conftest import rel_err


def test_state_noise_is_keyed_and_needs_a_fixed_step_solver(tiny):
    kw = dict(max_steps=300, noise=0.01, noise_seed=5)
    a = hepsim.sim.relax(tiny.model, tiny.theta, tiny.x, **kw)
    b = hepsim.sim.relax(tiny.model, tiny.theta, tiny.x, **kw)
    c = hepsim.sim.relax(tiny.model, tiny.theta, tiny.x, noise_key=1, **kw)
    other_seed = hepsim.sim.relax(tiny.model, tiny.theta, tiny.x, max_steps=300, noise=0.01, noise_seed=6)
    assert not np.array_equal(a["states"], other_seed["states"])
    clean = hepsim.sim.relax(tiny.model, tiny.theta, tiny.x, max_steps=300)
    assert np.array_equal(a["states"], b["states"])            # the same key: the same noise
    assert not np.array_equal(a["states"], c["states"])        # another relaxation: other noise
    d = np.abs(a["states"] - clean["states"]).max()
    assert 1e-4 < d < 0.2                                        # σ = 0.01 around the fixed point
    with pytest.raises(ValueError, match="^solver: state noise needs a fixed-step solver"):
        hepsim.sim.relax(tiny.model, tiny.theta, tiny.x, solver="dopri5", noise=0.01)
    with pytest.raises(ValueError, match="noise: must be a finite number"):
        hepsim.sim.relax(tiny.model, tiny.theta, tiny.x, noise=-1.0)


def test_time_constants_keep_the_fixed_points(tiny):
    ref = hepsim.sim.relax(tiny.model, tiny.theta, tiny.x, solver="rk4", max_steps=20000, tol=1e-12)
    slow = hepsim.sim.relax(tiny.model, tiny.theta, tiny.x, solver="rk4", max_steps=20000, tol=1e-12,
                            tau={"l1": 4.0, "out": 0.5})
    assert slow["status"] == ["converged"] * 2
    assert np.abs(slow["states"] - ref["states"]).max() < 1e-9
    assert min(slow["steps"]) > max(ref["steps"])                # a slower layer takes longer
    for tau in ({"nope": 2.0}, {"l1": None}, {"l1": [2.0]}, {"l1": 2j}, {"l1": np.True_}, {"l1": 0.0}, [2.0]):
        with pytest.raises(ValueError, match="^tau"):
            hepsim.sim.relax(tiny.model, tiny.theta, tiny.x, solver="rk4", tau=tau)
    with pytest.raises(ValueError, match="^noise: must be a number, not a bool"):
        hepsim.sim.relax(tiny.model, tiny.theta, tiny.x, noise=np.True_)
    # A settling time ends the phase where it stands.
    short = hepsim.sim.relax(tiny.model, tiny.theta, tiny.x, solver="rk4", dt=0.5, max_steps=20000, tol=1e-12,
                             max_time=3.0)
    assert short["t"] == pytest.approx(3.0) and short["status"] == ["max_steps"] * 2


def test_device_mismatch_and_quantization(tiny):
    n_edges = tiny.model.blocks[-2]["offset"]
    assert np.array_equal(hepsim.sim.device_theta(tiny.model, tiny.theta), tiny.theta)
    q = hepsim.sim.device_theta(tiny.model, tiny.theta, weight_bits=2, weight_clip=1.0)
    assert len(np.unique(q[:n_edges])) <= 4 and np.abs(q[:n_edges]).max() <= 1.0
    assert np.array_equal(q[n_edges:], tiny.theta[n_edges:])   # the readout is exact
    m1 = hepsim.sim.device_theta(tiny.model, tiny.theta, mismatch=0.1, seed=1)
    m2 = hepsim.sim.device_theta(tiny.model, tiny.theta, mismatch=0.1, seed=1)
    assert np.array_equal(m1, m2) and not np.array_equal(m1, tiny.theta)
    assert not np.array_equal(m1, hepsim.sim.device_theta(tiny.model, tiny.theta, mismatch=0.1, seed=2))
    ratio = m1[:n_edges][tiny.theta[:n_edges] != 0] / tiny.theta[:n_edges][tiny.theta[:n_edges] != 0]
    assert 0.02 < np.std(ratio) < 0.2                            # factors 1 + c ξ, c = 0.1
    # Library errors name the keyword arguments, in the message too.
    with pytest.raises(ValueError, match="^weight_clip") as e:
        hepsim.sim.device_theta(tiny.model, tiny.theta, weight_bits=3)
    assert "--" not in str(e.value) and "weight_bits" in str(e.value)
    for kw, name in ((dict(seed=-1), "seed"), (dict(weight_bits=2 ** 40), "weight_bits"), (dict(seed=True), "seed")):
        with pytest.raises(ValueError, match="^" + name):
            hepsim.sim.device_theta(tiny.model, tiny.theta, **kw)
    with pytest.raises(ValueError, match="^seed"):
        tiny.model.init(seed=-1)


def test_online_hep_equals_the_phased_estimate_when_every_point_settles(tiny):
    est = hepsim.ep.online_estimate(tiny.model, tiny.theta, tiny.x, tiny.y, N=4, beta=0.05, periods=3,
                                    max_steps=2000)
    assert est["n_diverged"] == 0 and est["steps"] == 3 * 4 * 2000
    assert rel_err(est["v"], tiny.estimate("N=4,beta=0.05")) < 1e-8
    assert np.abs(est["imag"]).max() < 1e-8
    # The averaged state is u* up to the contour's aliasing, O(|β|^N) = 6e-6 times the 4th Taylor coefficient.
    assert rel_err(est["free"].u, tiny.samples("u_star")) < 1e-5
    with pytest.raises(ValueError, match="periods"):
        hepsim.ep.online_estimate(tiny.model, tiny.theta, tiny.x, tiny.y, periods=1)
    with pytest.raises(ValueError, match="^tol: does not apply"):
        hepsim.ep.online_estimate(tiny.model, tiny.theta, tiny.x, tiny.y, tol=1e-3)


def test_library_refusals_name_the_arguments(tiny):
    free = hepsim.ep.free_phase(tiny.model, tiny.theta, tiny.x, tiny.y, max_steps=50)
    with pytest.raises(ValueError, match="^beta: must be a finite positive number"):
        hepsim.ep.estimate(tiny.model, tiny.theta, free, beta=-0.05)
    with pytest.raises(ValueError, match="^solver: does not apply: with u given"):
        hepsim.ep.free_phase(tiny.model, tiny.theta, tiny.x, tiny.y, u=free.u, solver="rk4")
    cnn = hepsim.sim.Model("cnn_small", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="^model: cnn_small has convolutional edges"):
        hepsim.jac.norms(cnn, cnn.init())


def test_nudged_noise_is_keyed_apart_from_the_free_phase(tiny):
    free = hepsim.ep.free_phase(tiny.model, tiny.theta, tiny.x, tiny.y, max_steps=2000, noise=0.01)
    a = hepsim.ep.estimate(tiny.model, tiny.theta, free, N=2, beta=0.05, max_steps=200, noise=0.01)
    b = hepsim.ep.estimate(tiny.model, tiny.theta, free, N=2, beta=0.05, max_steps=200, noise=0.01, noise_key=1)
    c = hepsim.ep.estimate(tiny.model, tiny.theta, free, N=2, beta=0.05, max_steps=200, noise=0.01, noise_key=0)
    assert np.array_equal(a["v"], b["v"]) and not np.array_equal(a["v"], c["v"])
