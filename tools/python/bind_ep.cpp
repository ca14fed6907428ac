// hepsim.ep: the free state of a batch (relaxed, or given: e.g. a reference u*), and at it the
// estimators of SPEC 3 — the RBP adjoint δ and the exact EP response v* (by iteration or dense
// solve), EP/hEP with N points and β, truncated BPTT — and the parameter gradient of an error
// vector, all with the library's own code (ep/estimators.hpp).
#include <variant>

#include "ep/estimators.hpp"
#include "tools/cli.hpp"
#include "tools/progress.hpp"
#include "tools/python/module.hpp"

namespace hepsim::python {
namespace {

// A batch at its free state: FreeState<float> or FreeState<double> (θ's precision).
struct PyFree {
  std::variant<FreeState<float>, FreeState<double>> fs;
};

// The free state of `p` for a call on `net`: of θ's precision and of this network's sizes.
template <class R>
FreeState<R>& free_of(PyFree& p, const Network& net, const std::string& what) {
  auto* f = std::get_if<FreeState<R>>(&p.fs);
  if (!f)
    refuse("free", std::string("holds ") + (std::is_same_v<R, float> ? "float64" : "float32") + " states; " + what +
                       " was given " + dtype_of<R>() + " parameters");
  if (f->u.rows() != net.neurons || f->x.rows() != net.input_size || f->y.rows() != net.classes)
    refuse("free", "is a state of another network (" + std::to_string(f->u.rows()) + " neurons, " +
                       std::to_string(f->x.rows()) + " inputs, " + std::to_string(f->y.rows()) + " classes; the model has " +
                       std::to_string(net.neurons) + ", " + std::to_string(net.input_size) + ", " +
                       std::to_string(net.classes) + ")");
  return *f;
}

template <class R>
void relaxed(PyFree& out, const PyModel& pm, const py::handle& theta_obj, const py::handle& x_obj, const py::handle& y_obj,
             const py::handle& u_obj, const RelaxConfig& cfg) {
  const Network& net = pm.net();
  const Theta<R> theta(theta_obj, net.n_params);
  const Samples<R> x = samples_in<R>(x_obj, net.input_size, "x");
  Mat<R> zeros;
  const Samples<R> y = targets_in<R>(y_obj, net, x.count(), zeros);
  FreeState<R> fs;
  if (!u_obj.is_none()) {  // a given state: the drive only, no relaxation
    const Samples<R> u = samples_in<R>(u_obj, net.neurons, "u", x.count());
    fs.x = x.map;
    fs.y = y.map;
    fs.u = u.map;
    fs.drive.resize(net.neurons, x.count());
    fs.relax.status.assign(static_cast<std::size_t>(x.count()), RelaxStatus::converged);
    fs.relax.residual = native([&] {
      input_drive<R>(net, *theta, fs.x, fs.drive);
      const Vec<R> zero = Vec<R>::Zero(x.count());
      Field<R> field(pm.model, *theta, fs.drive, fs.y, zero);
      return residual(field, fs.u);
    });
    fs.relax.col_steps.assign(static_cast<std::size_t>(x.count()), 0);
    // A given state is "converged" where it is a fixed point to the relaxations' reporting
    // tolerance (RelaxConfig::report_tol), else "max_steps".
    for (Index j = 0; j < x.count(); ++j)
      if (!(fs.relax.residual[j] <= RelaxConfig{}.report_tol)) fs.relax.status[static_cast<std::size_t>(j)] = RelaxStatus::max_steps;
  } else {
    tools::PhaseProgress progress("hepsim.ep.free_phase");  // as the CLI's: after 3 s, on stderr
    RelaxConfig shown = cfg;
    shown.progress = progress.phase("free phase");
    fs = native([&] { return free_phase<R>(pm.model, *theta, x.map, y.map, shown); });
  }
  out.fs = std::move(fs);
}

template <class R>
py::array view(const py::object& self, const Mat<R>& m) {
  const auto rows = static_cast<py::ssize_t>(m.rows()), cols = static_cast<py::ssize_t>(m.cols());
  return py::array(py::dtype::of<R>(), {cols, rows},
                   {rows * static_cast<py::ssize_t>(sizeof(R)), static_cast<py::ssize_t>(sizeof(R))}, m.data(), self);
}


// A FreeState property: the matrix `pick` selects, as a (samples, features) view kept alive by
// the FreeState object.
template <class Pick>
auto free_view(Pick pick) {
  return [pick](py::object self) {
    PyFree& p = self.cast<PyFree&>();
    return std::visit([&](auto& f) { return view(self, pick(f)); }, p.fs);
  };
}

IterationConfig iteration_config(long steps, double tol, double dt) {
  if (steps < 1) refuse("steps", "must be at least 1");
  if (!(std::isfinite(tol) && tol >= 0)) refuse("tol", "must be a finite number ≥ 0");
  if (!(std::isfinite(dt) && dt > 0 && dt <= 1)) refuse("dt", "must be in (0, 1]");
  return {steps, tol, dt};
}

template <class R>
py::dict iteration_out(IterationResult<R>&& r) {
  py::dict d;
  d["v"] = samples_out(std::move(r.v));
  d["steps"] = r.steps;
  d["last_update"] = r.last_update;
  return d;
}

}  // namespace

void bind_ep(py::module_& m) {
  py::class_<PyFree>(m, "FreeState", "A batch at its free state: x, y, drive, u (samples along the first axis), and\n"
                                     "per sample the free phase's residual and status.")
      .def("__repr__",
           [](PyFree& p) {
             return std::visit(
                 [](auto& f) {
                   using R = typename std::decay_t<decltype(f.u)>::Scalar;
                   return "hepsim.ep.FreeState(samples=" + std::to_string(f.u.cols()) + ", neurons=" +
                          std::to_string(f.u.rows()) + ", " + dtype_of<R>() + ", converged=" +
                          std::to_string(f.relax.converged()) + ")";
                 },
                 p.fs);
           })
      .def_property_readonly("u", free_view([](auto& f) -> auto& { return f.u; }))
      .def_property_readonly("x", free_view([](auto& f) -> auto& { return f.x; }))
      .def_property_readonly("y", free_view([](auto& f) -> auto& { return f.y; }))
      .def_property_readonly("drive", free_view([](auto& f) -> auto& { return f.drive; }))
      .def_property_readonly("residual", [](PyFree& p) {
        return std::visit([](auto& f) { return vector_out(Vec<double>(f.relax.residual)); }, p.fs);
      })
      .def_property_readonly("status", [](PyFree& p) { return std::visit([](auto& f) { return status_list(f.relax.status); }, p.fs); })
      .def_property_readonly("steps", [](PyFree& p) { return std::visit([](auto& f) { return vector_out(f.relax.col_steps); }, p.fs); });

  m.def(
      "free_phase",
      [](const PyModel& model, const py::array& theta, const py::object& x, const py::object& y, const py::object& u,
         py::kwargs kw) {
        py::dict opts(kw);
        if (!u.is_none() && py::len(opts) > 0)
          refuse(py::str(opts.begin()->first).cast<std::string>(), "does not apply: with u given nothing is relaxed");
        const RelaxConfig cfg = relax_config(opts, "", 150, model.net());
        no_more_kwargs(opts, "hepsim.ep.free_phase");
        PyFree out;
        if (theta_is_double(theta)) relaxed<double>(out, model, theta, x, y, u, cfg);
        else relaxed<float>(out, model, theta, x, y, u, cfg);
        return out;
      },
      py::arg("model"), py::arg("theta"), py::arg("x"), py::arg("y"), py::arg("u") = py::none(),
      "The free state of the batch (x, y): relaxed from u = 0 (keywords as hepsim.sim.relax: solver, max_steps\n"
      "= T1, tol, dt, …), or, with u given (samples, neurons), that state as it is (e.g. a reference u*; its\n"
      "residual is measured, and a sample counts as converged where it is below 1e-3).");

  // δ (RBP, `transposed`) or v* (the exact response): iterated, by GMRES, or by dense solves.
  const auto linear_response = [](bool transposed) {
    return [transposed](const PyModel& model, const py::array& theta, PyFree& free, long steps, double tol, double dt,
                        bool dense, bool krylov) {
      if (dense && krylov) refuse("krylov", "dense=True and krylov=True exclude each other");
      if (krylov && !(tol > 0)) refuse("tol", "must be > 0 with krylov=True (the residual GMRES stops at)");
      return by_precision(theta, [&](auto r) -> py::object {
        using R = decltype(r);
        const Theta<R> th(theta, model.net().n_params);
        FreeState<R>& fs = free_of<R>(free, model.net(), transposed ? "rbp" : "exact_response");
        if (dense)
          return samples_out(native([&] {
            return transposed ? rbp_dense<R>(model.model, *th, fs.u, fs.y) : exact_response_dense<R>(model.model, *th, fs.u, fs.y);
          }));
        const IterationConfig ic = iteration_config(steps, tol, dt);
        return iteration_out(native([&] {
          if (krylov)
            return transposed ? rbp_krylov<R>(model.model, *th, fs.u, fs.y, ic)
                              : exact_response_krylov<R>(model.model, *th, fs.u, fs.y, ic);
          return transposed ? rbp_adjoint<R>(model.model, *th, fs.u, fs.y, ic)
                            : exact_response<R>(model.model, *th, fs.drive, fs.u, fs.y, ic);
        }));
      });
    };
  };
  m.def("rbp", linear_response(true), py::arg("model"), py::arg("theta"), py::arg("free"), py::arg("steps") = 20,
        py::arg("tol") = 0.0, py::arg("dt") = 1.0, py::arg("dense") = false, py::arg("krylov") = false,
        "The RBP adjoint δ = (I − D J_Gᵀ)⁻¹ D g_s at the free state: by `steps` iterations (until tol, damped by dt),\n"
        "returning {'v', 'steps', 'last_update'}; with krylov=True by GMRES (one VJP per iteration, `steps` of them\n"
        "at most, until the residual is below tol; converges where the iteration does not); or with dense=True by a\n"
        "linear solve per sample (an array).");
  m.def("exact_response", linear_response(false), py::arg("model"), py::arg("theta"), py::arg("free"),
        py::arg("steps") = 20, py::arg("tol") = 0.0, py::arg("dt") = 1.0, py::arg("dense") = false,
        py::arg("krylov") = false,
        "The exact EP response v* = dσ(u*_β)/dβ at β = 0 = (I − D J_G)⁻¹ D g_s: by forward-mode iteration of the\n"
        "nudged map ({'v', 'steps', 'last_update'}), with krylov=True by GMRES (JVPs; as rbp), or with dense=True by\n"
        "a linear solve per sample (an array).");

  m.def(
      "estimate",
      [](const PyModel& model, const py::array& theta, PyFree& free, int N, double beta, bool coefficients, py::kwargs kw) {
        py::dict opts(kw);
        EstimatorConfig ec;
        const bool keyed = opts.contains("noise_key");
        ec.nudged = relax_config(opts, "", 20, model.net());
        // Noise of the nudged phases apart from the free phase's (key 0 by default), as the CLI keys
        // each step's phases apart.
        if (!keyed) ec.nudged.noise.key = 1;
        no_more_kwargs(opts, "hepsim.ep.estimate");
        if (N < 1 || N > tools::kMaxContourPoints) refuse("N", "must be between 1 and " + std::to_string(tools::kMaxContourPoints));
        if (!(std::isfinite(beta) && beta > 0)) refuse("beta", "must be a finite positive number (|β|)");
        ec.N = N;
        ec.beta = beta;
        ec.keep_coefficients = coefficients;
        return by_precision(theta, [&](auto r) -> py::object {
          using R = decltype(r);
          const Theta<R> th(theta, model.net().n_params);
          FreeState<R>& fs = free_of<R>(free, model.net(), "estimate");
          tools::PhaseProgress progress("hepsim.ep.estimate");
          EstimatorConfig shown = ec;
          shown.nudged.progress = progress.phase("nudged phases");
          EstimateResult<R> e = native([&] { return ep_estimate<R>(model.model, *th, fs, shown); });
          py::dict d;
          d["v"] = samples_out(std::move(e.v));
          d["curvature"] = e.curvature.size() ? py::object(samples_out(std::move(e.curvature))) : py::none();
          py::list cs;
          for (Mat<R>& c : e.coefficients) cs.append(samples_out(std::move(c)));
          d["coefficients"] = cs;
          d["status"] = status_list(e.status);
          d["relaxations"] = e.relaxations;
          d["max_residual"] = e.max_residual;
          d["steps"] = e.steps;
          return d;
        });
      },
      py::arg("model"), py::arg("theta"), py::arg("free"), py::arg("N") = 2, py::arg("beta") = 0.05,
      py::arg("coefficients") = false,
      "The EP estimate of v* from nudged phases restarted at the free state: N = 1 classic, 2 symmetric, ≥ 3\n"
      "holomorphic with β_k = |β| e^{2πik/N}. Keywords set the nudged phase (solver, max_steps = T2 (20), tol,\n"
      "dt, noise, …; noise_key defaults to 1, apart from the free phase's 0). Returns {'v', 'curvature' (N ≥ 3), 'coefficients' (c_0 … c_{N−1} when requested), 'status',\n"
      "'relaxations', 'max_residual', 'steps'}.");

  m.def(
      "online_estimate",
      [](const PyModel& model, const py::array& theta, const py::object& x, const py::object& y, int N, double beta,
         long periods, py::kwargs kw) {
        py::dict opts(kw);
        OnlineConfig oc;
        if (opts.contains("tol")) refuse("tol", "does not apply: every phase point runs its max_steps (T2) steps");
        oc.phase = relax_config(opts, "", 20, model.net());
        no_more_kwargs(opts, "hepsim.ep.online_estimate");
        if (N < 2 || N > tools::kMaxContourPoints) refuse("N", "must be between 2 and " + std::to_string(tools::kMaxContourPoints));
        if (!(std::isfinite(beta) && beta > 0)) refuse("beta", "must be a finite positive number (|β|)");
        if (periods < 2) refuse("periods", "must be at least 2 (the first is the settling transient)");
        oc.N = N;
        oc.beta = beta;
        oc.periods = periods;
        return by_precision(theta, [&](auto r) -> py::object {
          using R = decltype(r);
          const Theta<R> th(theta, model.net().n_params);
          const Samples<R> xs = samples_in<R>(x, model.net().input_size, "x");
          const Samples<R> ys = samples_in<R>(y, model.net().classes, "y", xs.count());
          tools::PhaseProgress progress("hepsim.ep.online_estimate");
          OnlineConfig shown = oc;
          shown.phase.progress = progress.phase("phase points");
          OnlineResult<R> o = native([&] { return online_estimate<R>(model.model, *th, xs.map, ys.map, shown); });
          py::dict d;
          d["v"] = samples_out(std::move(o.v));
          d["curvature"] = o.curvature.size() ? py::object(samples_out(std::move(o.curvature))) : py::none();
          d["imag"] = samples_out(std::move(o.imag));
          d["n_diverged"] = o.n_diverged;
          d["steps"] = o.steps;
          d["free"] = PyFree{std::move(o.free)};
          return d;
        });
      },
      py::arg("model"), py::arg("theta"), py::arg("x"), py::arg("y"), py::arg("N") = 4, py::arg("beta") = 0.1,
      py::arg("periods") = 3,
      "Online (oscillating) holomorphic EP (SPEC 3.3): from u = 0 the network runs `periods` periods while β\n"
      "rotates through N phase points of |β| e^{2πik/N}, T2 steps each (keywords: the phase's solver, max_steps\n"
      "= T2 (20), dt, noise, noise_seed, tau, …; max_time ends each phase point earlier), and the trajectory is\n"
      "demodulated. Returns {'v' (the error\n"
      "vector), 'curvature' (N ≥ 3), 'imag' (lag/noise indicator), 'free' (the averaged free state),\n"
      "'n_diverged', 'steps'}.");

  m.def(
      "bptt",
      [](const PyModel& model, const py::array& theta, PyFree& free, long steps, double dt) {
        if (steps < 1) refuse("steps", "must be at least 1");
        if (!(std::isfinite(dt) && dt > 0 && dt <= 1)) refuse("dt", "must be in (0, 1]");
        return by_precision(theta, [&](auto r) -> py::object {
          using R = decltype(r);
          const Theta<R> th(theta, model.net().n_params);
          FreeState<R>& fs = free_of<R>(free, model.net(), "bptt");
          BpttResult<R> b = native([&] { return truncated_bptt<R>(model.model, *th, fs.x, fs.drive, fs.u, fs.y, steps, dt); });
          py::dict d;
          d["grad"] = vector_out(std::move(b.grad));
          d["error_sum"] = samples_out(std::move(b.error_sum));
          return d;
        });
      },
      py::arg("model"), py::arg("theta"), py::arg("free"), py::arg("steps"), py::arg("dt") = 1.0,
      "Truncated BPTT through `steps` map steps from the free state: {'grad' (θ layout, divided by the batch),\n"
      "'error_sum' (Σ_t dt a_t, the truncated RBP δ at a fixed point)}.");

  m.def(
      "parameter_gradient",
      [](const PyModel& model, const py::array& theta, PyFree& free, const py::object& v) {
        return by_precision(theta, [&](auto r) -> py::object {
          using R = decltype(r);
          const Theta<R> th(theta, model.net().n_params);
          FreeState<R>& fs = free_of<R>(free, model.net(), "parameter_gradient");
          const Samples<R> err = samples_in<R>(v, model.net().neurons, "v", fs.u.cols());
          return vector_out(native([&] { return parameter_gradient<R>(model.model, *th, fs, err.map); }));
        });
      },
      py::arg("model"), py::arg("theta"), py::arg("free"), py::arg("v"),
      "The gradient of SPEC 3.1 from an error vector v (samples, neurons): (∂G/∂θ)ᵀ v / B + ∂ℓ/∂θ_r / B.");

  m.def(
      "loss_gradient",
      [](const PyModel& model, const py::array& theta, PyFree& free) {
        return by_precision(theta, [&](auto r) -> py::object {
          using R = decltype(r);
          const Theta<R> th(theta, model.net().n_params);
          FreeState<R>& fs = free_of<R>(free, model.net(), "loss_gradient");
          return samples_out(native([&] { return loss_gradient_s<R>(model.model, *th, fs.u, fs.y); }));
        });
      },
      py::arg("model"), py::arg("theta"), py::arg("free"), "g_s = ∂ℓ/∂s at the free state (zero outside `out`).");

  m.def(
      "contour_points",
      [](int N, double beta) {
        if (N < 2 || N > tools::kMaxContourPoints) refuse("N", "must be between 2 and " + std::to_string(tools::kMaxContourPoints));
        return contour_points(N, beta);
      },
      py::arg("N"), py::arg("beta"), "The contour points relaxed for N ≥ 2: β_k = |β| e^{2πik/N}, k = 0 … ⌊N/2⌋.");
}

}  // namespace hepsim::python
