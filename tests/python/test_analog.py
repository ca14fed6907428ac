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
    with pytest.raises(ValueError, match="tau"):
        hepsim.sim.relax(tiny.model, tiny.theta, tiny.x, solver="rk4", tau={"nope": 2.0})
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
    ratio = m1[:n_edges][tiny.theta[:n_edges] != 0] / tiny.theta[:n_edges][tiny.theta[:n_edges] != 0]
    assert 0.02 < np.std(ratio) < 0.2                            # factors 1 + c ξ, c = 0.1
    with pytest.raises(ValueError, match="^weight_clip"):
        hepsim.sim.device_theta(tiny.model, tiny.theta, weight_bits=3)


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
