"""The library through the module against the golden tiny network (float64, computed independently
in NumPy; its README: a correct implementation reproduces every number to about 1e-10 relative),
with the tolerances of the C++ suite's tests/ep/test_reference.cpp."""
import numpy as np
import pytest

import hepsim
from conftest import rel_err

TIGHT = dict(max_steps=20000, tol=1e-15, report_tol=1e-13)


@pytest.fixture(scope="module")
def free(tiny):
    fs = hepsim.ep.free_phase(tiny.model, tiny.theta, tiny.x, tiny.y, **TIGHT)
    assert max(fs.residual) < 1e-13
    assert fs.status == ["converged"] * len(tiny.x)
    return fs


def test_free_state_and_relax(tiny, free):
    assert rel_err(free.u, tiny.samples("u_star")) < 1e-10
    # hepsim.sim.relax is the same relaxation: the same states, bit for bit.
    r = hepsim.sim.relax(tiny.model, tiny.theta, tiny.x, tiny.y, **TIGHT)
    assert np.array_equal(r["states"], free.u)
    for solver in ("rk4", "dopri5", "anderson"):
        r = hepsim.sim.relax(tiny.model, tiny.theta, tiny.x, tiny.y, solver=solver, max_steps=20000, tol=1e-13)
        assert r["status"] == ["converged"] * len(tiny.x), solver
        assert rel_err(r["states"], tiny.samples("u_star")) < 1e-9, solver


def test_rbp_and_exact_response(tiny, free):
    delta, vstar = tiny.samples("delta_rbp"), tiny.samples("v_star")
    assert rel_err(hepsim.ep.rbp(tiny.model, tiny.theta, free, dense=True), delta) < 1e-10
    assert rel_err(hepsim.ep.exact_response(tiny.model, tiny.theta, free, dense=True), vstar) < 1e-10
    d = hepsim.ep.rbp(tiny.model, tiny.theta, free, steps=100000, tol=1e-15)
    assert d["last_update"] <= 1e-15
    assert rel_err(d["v"], delta) < 1e-10
    v = hepsim.ep.exact_response(tiny.model, tiny.theta, free, steps=100000, tol=1e-15)
    assert rel_err(v["v"], vstar) < 1e-10
    assert rel_err(vstar, delta) > 1e-2  # the asymmetry bias is visible
    for fn, want in ((hepsim.ep.rbp, delta), (hepsim.ep.exact_response, vstar)):  # GMRES
        k = fn(tiny.model, tiny.theta, free, steps=1000, tol=1e-14, krylov=True)
        assert k["last_update"] <= 1e-14 and k["steps"] < 1000
        assert rel_err(k["v"], want) < 1e-10
    with pytest.raises(ValueError, match="tol"):
        hepsim.ep.rbp(tiny.model, tiny.theta, free, krylov=True)


@pytest.mark.parametrize("beta", [0.05, 0.5])
@pytest.mark.parametrize("N", [1, 2, 3, 4, 6])
def test_estimators(tiny, free, N, beta):
    est = hepsim.ep.estimate(tiny.model, tiny.theta, free, N=N, beta=beta, **TIGHT)
    assert est["relaxations"] == (1 if N == 1 else N // 2 + 1)
    assert "diverged" not in est["status"]
    assert rel_err(est["v"], tiny.estimate(f"N={N},beta={beta}")) < 1e-10
    assert (est["curvature"] is not None) == (N >= 3)


def test_gradients(tiny, free):
    n_edges = tiny.model.blocks[-2]["offset"]  # the readout's blocks come last
    g_rbp = hepsim.ep.parameter_gradient(tiny.model, tiny.theta, free, tiny.samples("delta_rbp"))
    g_ep = hepsim.ep.parameter_gradient(tiny.model, tiny.theta, free, tiny.samples("v_star"))
    want_rbp, want_ep = tiny.gradient("rbp_gradient"), tiny.gradient("ep_exact_gradient")
    assert rel_err(g_rbp[:n_edges], want_rbp[:n_edges]) < 1e-10
    assert rel_err(g_ep[:n_edges], want_ep[:n_edges]) < 1e-10
    assert rel_err(g_rbp[n_edges:], want_rbp[n_edges:]) < 1e-10
    # Truncated BPTT through enough steps from the fixed point is RBP.
    b = hepsim.ep.bptt(tiny.model, tiny.theta, free, steps=400)
    assert rel_err(b["error_sum"], tiny.samples("delta_rbp")) < 1e-8
    assert rel_err(b["grad"], want_rbp) < 1e-8


def test_jacobian_metrics(tiny):
    n = hepsim.jac.norms(tiny.model, tiny.theta)
    assert n["jac_sym"] == pytest.approx(tiny.j["jac_sym"], rel=1e-12)
    assert n["homeo"] == pytest.approx(tiny.j["homeo_exact"], rel=1e-12)
    assert hepsim.jac.jac_sym(tiny.model, tiny.theta) == n["jac_sym"]
    assert hepsim.jac.homeo_loss(tiny.model, tiny.theta) == pytest.approx(tiny.j["homeo_exact"], rel=1e-12)
    assert tiny.model.weight_angle(tiny.theta) == pytest.approx(tiny.j["weight_angle_deg"], rel=1e-12)
    # The dense H: its antisymmetric part gives the homeostatic loss ½‖H − Hᵀ‖²_F / n.
    H = hepsim.jac.dense_jacobian(tiny.model, tiny.theta)
    assert H.shape == (12, 12)
    assert 0.5 * np.sum((H - H.T) ** 2) / 12 == pytest.approx(tiny.j["homeo_exact"], rel=1e-12)
    # Its gradient 2(H − Hᵀ)/n on the kernels, against central differences of the loss.
    g = hepsim.jac.homeo_gradient(tiny.model, tiny.theta)
    rng = np.random.default_rng(0)
    d = rng.standard_normal(tiny.model.n_params)
    h = 1e-6
    tp, tm = tiny.theta.copy(), tiny.theta.copy()
    tp += h * d
    tm -= h * d
    fd = (hepsim.jac.homeo_loss(tiny.model, tp) - hepsim.jac.homeo_loss(tiny.model, tm)) / (2 * h)
    assert g @ d == pytest.approx(fd, rel=1e-7)
    # Hutchinson: unbiased, and with the basis vectors as probes the exact value.
    e = hepsim.jac.homeo_hutchinson(tiny.model, tiny.theta, np.eye(12) * np.sqrt(12))
    assert e["value"] == pytest.approx(tiny.j["homeo_exact"], rel=1e-12)
    spec = hepsim.jac.spectrum(H - np.eye(12))
    assert np.allclose(np.sort_complex(spec["eigenvalues"]), np.sort_complex(np.linalg.eigvals(H - np.eye(12))), atol=1e-12)


def test_loss_gradient_and_estimates_at_states(tiny, free):
    # g_s = ∂ℓ/∂s on `out`: the reference's nudge vector e (the map adds β e; trap 2's sign is in β).
    g = hepsim.ep.loss_gradient(tiny.model, tiny.theta, free)
    assert rel_err(g, tiny.samples("nudge_e")) < 1e-10
    # Hutchinson estimates are unbiased: many Gaussian probes land within a few standard errors.
    rng = np.random.default_rng(1)
    est = hepsim.jac.jac_sym_estimate(tiny.model, tiny.theta, rng.standard_normal((20000, 12)))
    assert abs(est["value"] - tiny.j["jac_sym"]) < 5 * est["std_error"] + 1e-12
    # A dense network's H does not depend on the state: the estimate at states is the exact norm.
    n = hepsim.jac.norms(tiny.model, tiny.theta)
    s = 1 / (1 + np.exp(-4 * free.u + 2))
    at = hepsim.jac.norms_at_states(tiny.model, tiny.theta, s, draws=20000, seed=3)
    assert at["jac_sym"] == pytest.approx(n["jac_sym"], rel=2e-2)
    assert at["homeo"] == pytest.approx(n["homeo"], rel=5e-2)
    # The contour points: |β| e^{2πik/N}, k = 0 … ⌊N/2⌋.
    assert np.allclose(hepsim.ep.contour_points(4, 0.5), [0.5, 0.5j, -0.5])
    # hEP's coefficients: c_1 is the estimate.
    est = hepsim.ep.estimate(tiny.model, tiny.theta, free, N=4, beta=0.05, coefficients=True, **TIGHT)
    assert len(est["coefficients"]) == 4 and np.array_equal(est["coefficients"][1], est["v"])
