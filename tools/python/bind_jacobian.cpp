// hepsim.jac: the Jacobian of the network at its free fixed point (jacobian/jacobian.hpp):
// jac_sym and the homeostatic loss exactly (block norms) or by Hutchinson probes, the homeostatic
// gradient, the dense H, spectra, and the norms of a conv network at given states.
#include "jacobian/jacobian.hpp"
#include "tools/python/module.hpp"

namespace hepsim::python {
namespace {

py::dict estimate_out(const Estimate& e) {
  py::dict d;
  d["value"] = e.value;
  d["std_error"] = e.std_error;
  d["probes"] = e.probes;
  return d;
}

py::dict norms_out(const JacobianNorms& n) {
  py::dict d;
  d["s2"] = n.s2;
  d["a2"] = n.a2;
  d["neurons"] = n.neurons;
  d["jac_sym"] = n.jac_sym();
  d["homeo"] = n.homeo();
  return d;
}


// Probe vectors (probes, neurons) as the estimators' buffers: at least `least` of them.
template <class R>
Probes<R> probes_in(const py::object& probes, const Network& net, Index least, const char* why) {
  const Samples<R> e = samples_in<R>(probes, net.neurons, "probes");
  if (e.count() < least) refuse("probes", why);
  Probes<R> p(net.neurons, e.count());
  p.probes() = e.map;
  return p;
}

}  // namespace

void bind_jacobian(py::module_& m) {
  m.def(
      "norms",
      [](const PyModel& model, const py::array& theta) {
        require_dense_model(model, "hepsim.jac.norms", "conv networks: hepsim.jac.norms_at_states at their states");
        return by_precision(theta, [&](auto r) -> py::object {
          using R = decltype(r);
          const Theta<R> th(theta, model.net().n_params);
          return norms_out(native([&] { return exact_norms<R>(model.net(), *th); }));
        });
      },
      py::arg("model"), py::arg("theta"),
      "Exact ‖S‖²_F, ‖A‖²_F of J = H − I (dense networks, block norms at any size) with jac_sym = ‖S‖/(‖S‖ + ‖A‖)\n"
      "and the homeostatic loss homeo = ½‖H − Hᵀ‖²_F / n.");
  m.def(
      "jac_sym",
      [](const PyModel& model, const py::array& theta) {
        require_dense_model(model, "hepsim.jac.jac_sym", "conv networks: hepsim.jac.norms_at_states at their states");
        return by_precision(theta, [&](auto r) -> py::object {
          using R = decltype(r);
          const Theta<R> th(theta, model.net().n_params);
          return py::float_(native([&] { return exact_norms<R>(model.net(), *th).jac_sym(); }));
        });
      },
      py::arg("model"), py::arg("theta"), "jac_sym = ‖S‖_F / (‖S‖_F + ‖A‖_F), exact (dense networks).");
  m.def(
      "homeo_loss",
      [](const PyModel& model, const py::array& theta) {
        require_dense_model(model, "hepsim.jac.homeo_loss", "conv networks: hepsim.jac.norms_at_states at their states");
        return by_precision(theta, [&](auto r) -> py::object {
          using R = decltype(r);
          const Theta<R> th(theta, model.net().n_params);
          return py::float_(native([&] { return homeo_exact<R>(model.net(), *th); }));
        });
      },
      py::arg("model"), py::arg("theta"), "The homeostatic loss L_h = ½‖H − Hᵀ‖²_F / n, exact (dense networks).");
  m.def(
      "homeo_gradient",
      [](const PyModel& model, const py::array& theta, double weight) {
        require_dense_model(model, "hepsim.jac.homeo_gradient", "conv networks: hepsim.jac.norms_at_states at their states");
        return by_precision(theta, [&](auto r) -> py::object {
          using R = decltype(r);
          const Theta<R> th(theta, model.net().n_params);
          Vec<R> grad = Vec<R>::Zero(model.net().n_params);
          native([&] { add_homeo_exact_gradient<R>(model.net(), *th, static_cast<R>(weight), grad); });
          return vector_out(std::move(grad));
        });
      },
      py::arg("model"), py::arg("theta"), py::arg("weight") = 1.0,
      "weight · ∂L_h/∂θ exactly (θ layout; zero outside the recurrent kernels).");
  m.def(
      "homeo_hutchinson",
      [](const PyModel& model, const py::array& theta, const py::object& probes, double weight) {
        require_dense_model(model, "hepsim.jac.homeo_hutchinson", "conv networks: hepsim.jac.norms_at_states at their states");
        return by_precision(theta, [&](auto r) -> py::object {
          using R = decltype(r);
          const Theta<R> th(theta, model.net().n_params);
          Probes<R> p = probes_in<R>(probes, model.net(), 1, "needs at least one probe");
          Vec<R> grad = Vec<R>::Zero(model.net().n_params);
          const Estimate est = native([&] { return homeo_hutchinson<R>(model.net(), *th, p, static_cast<R>(weight), &grad); });
          py::dict d = estimate_out(est);
          d["grad"] = vector_out(std::move(grad));
          return d;
        });
      },
      py::arg("model"), py::arg("theta"), py::arg("probes"), py::arg("weight") = 1.0,
      "The Hutchinson estimate of L_h from the probe vectors ε (probes, neurons) and weight · its exact gradient\n"
      "for those probes: {'value', 'std_error', 'probes', 'grad'}.");
  m.def(
      "jac_sym_estimate",
      [](const PyModel& model, const py::array& theta, const py::object& probes) {
        require_dense_model(model, "hepsim.jac.jac_sym_estimate", "conv networks: hepsim.jac.norms_at_states at their states");
        return by_precision(theta, [&](auto r) -> py::object {
          using R = decltype(r);
          const Theta<R> th(theta, model.net().n_params);
          Probes<R> p = probes_in<R>(probes, model.net(), 2, "needs at least two probes (a standard error)");
          return estimate_out(native([&] { return jac_sym_estimate<R>(model.net(), *th, p); }));
        });
      },
      py::arg("model"), py::arg("theta"), py::arg("probes"), "jac_sym estimated from probe vectors (probes, neurons).");
  m.def(
      "norms_at_states",
      [](const PyModel& model, const py::array& theta, const py::object& s, Index draws, std::uint64_t seed) {
        if (draws < 1) refuse("draws", "must be at least 1");
        return by_precision(theta, [&](auto r) -> py::object {
          using R = decltype(r);
          const Theta<R> th(theta, model.net().n_params);
          const Samples<R> st = samples_in<R>(s, model.net().neurons, "s");
          return norms_out(native([&] { return norms_at_states<R>(model.net(), *th, st.map, draws, seed); }));
        });
      },
      py::arg("model"), py::arg("theta"), py::arg("s"), py::arg("draws") = 5, py::arg("seed") = 0,
      "The norms where H depends on the state (conv networks): Hutchinson estimates at the activated states s\n"
      "(samples, neurons), averaged over the samples.");
  m.def(
      "dense_jacobian",
      [](const PyModel& model, const py::array& theta) {
        require_dense_model(model, "hepsim.jac.dense_jacobian", "conv networks: hepsim.jac.norms_at_states at their states");
        if (model.net().neurons > kMaxDenseNeurons)
          refuse("model", "has " + std::to_string(model.net().neurons) + " neurons; the dense H is formed up to " +
                              std::to_string(kMaxDenseNeurons));
        return by_precision(theta, [&](auto r) -> py::object {
          using R = decltype(r);
          const Theta<R> th(theta, model.net().n_params);
          Mat<R> H = native([&] {
            Mat<R> h = dense_jacobian<R>(model.net(), *th);
            h.transposeInPlace();  // rows of the returned (C-order) array are rows of H
            return h;
          });
          return samples_out(std::move(H));
        });
      },
      py::arg("model"), py::arg("theta"), "H = ∂G/∂s (neurons x neurons; dense networks, state-independent).");
  m.def(
      "spectrum",
      [](const py::object& J) {
        if (!py::isinstance<py::array>(J) || py::reinterpret_borrow<py::array>(J).ndim() != 2)
          refuse("J", "must be a square 2-D NumPy array of dtype float64");
        const Samples<double> j = samples_in<double>(J, static_cast<Index>(py::reinterpret_borrow<py::array>(J).shape(1)), "J");
        if (j.map.rows() != j.map.cols()) refuse("J", "must be square");
        Spectrum s = native([&] { return spectrum(Mat<double>(j.map.transpose())); });
        py::dict d;
        d["eigenvalues"] = vector_out(Vec<std::complex<double>>(s.eigenvalues));
        d["max_real"] = s.max_real;
        d["henrici"] = s.henrici;
        return d;
      },
      py::arg("J"), "Eigenvalues of a square float64 matrix, the rightmost one and Henrici's departure from normality.");
}

}  // namespace hepsim::python
