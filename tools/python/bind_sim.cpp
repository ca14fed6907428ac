// hepsim.sim: Model (an architecture compiled for an input shape, with its activation and loss),
// parameters (init with the SPEC 5 angle, named blocks as NumPy views, the weight angle) and the
// relaxation with every solver and β real or complex.
#include <chrono>
#include <limits>

#include "tools/progress.hpp"
#include "tools/python/module.hpp"

namespace hepsim::python {
namespace {

MapShape input_shape_of(const py::handle& shape, Index& size) {
  if (PyIndex_Check(shape.ptr())) {
    size = shape.cast<Index>();
    if (size <= 0) refuse("input_shape", "must be positive");
    return {0, 0, 0};
  }
  std::vector<Index> dims;
  try {
    dims = shape.cast<std::vector<Index>>();
  } catch (const py::cast_error&) {
    refuse("input_shape", "must be a size n or a shape (C, H, W) of positive integers");
  }
  if (dims.size() == 1) return input_shape_of(py::int_(dims[0]), size);
  if (dims.size() != 3 || dims[0] <= 0 || dims[1] <= 0 || dims[2] <= 0)
    refuse("input_shape", "must be a size n or a shape (C, H, W) of positive values");
  size = dims[0] * dims[1] * dims[2];
  return {dims[0], dims[1], dims[2]};
}

PyModel make_model(const py::object& arch, const py::object& input_shape, Index classes, const py::object& activation,
                   const std::string& loss) {
  if (classes <= 0) refuse("classes", "must be positive");
  Index size = 0;
  const MapShape shape = input_shape_of(input_shape, size);
  PyModel m;
  std::string activation_default = "sigmoid";
  if (py::isinstance<py::dict>(arch)) {
    const std::string text = py::module_::import("json").attr("dumps")(arch).cast<std::string>();
    m.model.net = compile(parse_architecture(text, "arch", size, classes, shape));
  } else if (py::isinstance<py::str>(arch) || py::isinstance(arch, py::module_::import("os").attr("PathLike"))) {
    const std::string name = py::str(py::module_::import("os").attr("fspath")(arch)).cast<std::string>();
    try {
      m.model.net = compile(load_architecture(name, size, classes, shape));
    } catch (const InputError& e) {  // the loader names the CLI's flag; here it is the argument
      if (e.where() != "--arch") throw;
      const std::string what = e.what();
      throw InputError("arch", what.substr(std::min(what.size(), e.where().size() + 2)));
    }
    activation_default = default_activation(name);
  } else {
    refuse("arch", "must be a built-in name, a JSON file or a dict");
  }
  if (!activation.is_none() && !py::isinstance<py::str>(activation)) refuse("activation", "must be 'sigmoid' or 'dsilu'");
  m.model.activation = parse_activation(activation.is_none() ? activation_default : activation.cast<std::string>(), "activation");
  m.model.loss = parse_loss(loss, "loss");
  check_loss(m.model.net, m.model.loss, "loss");
  return m;
}

const ParamBlock& block_named(const Network& net, const std::string& name) {
  for (const ParamBlock& b : net.blocks)
    if (b.name == name) return b;
  std::string names;
  for (const ParamBlock& b : net.blocks) names += (names.empty() ? "" : ", ") + b.name;
  refuse("name", "'" + name + "' is not a parameter block (" + names + ")");
}

// What hepsim.sim.relax runs: the drive, the field and the relaxation of u.
template <class S>
RelaxResult relax_core(const PyModel& pm, const Vec<RealOf<S>>& theta, const Eigen::Map<const Mat<RealOf<S>>>& x,
                       const Eigen::Map<const Mat<RealOf<S>>>& y, const Vec<S>& beta, Mat<S>& u, const RelaxConfig& cfg) {
  using R = RealOf<S>;
  Mat<R> drive(pm.net().neurons, x.cols());
  input_drive<R>(pm.net(), theta, x, drive);
  Field<S> field(pm.model, theta, drive, y, beta);
  return relax(field, u, cfg);
}

// hepsim.sim.relax; with timings > 0 instead the seconds of that many runs of relax_core alone.
template <class S>
py::dict relax_impl(const PyModel& pm, const py::handle& theta_obj, const py::handle& x_obj, const py::handle& y_obj,
                    const py::handle& beta_obj, const py::handle& u0, const RelaxConfig& cfg, long timings = 0) {
  using R = RealOf<S>;
  const Network& net = pm.net();
  const Theta<R> theta(theta_obj, net.n_params);
  const Samples<R> x = samples_in<R>(x_obj, net.input_size, "x");
  const Index B = x.count();
  Mat<R> zeros;
  const Samples<R> y = targets_in<R>(y_obj, net, B, zeros);
  Vec<S> beta(B);
  if (py::isinstance<py::array>(beta_obj)) {
    const py::array b = py::reinterpret_borrow<py::array>(beta_obj);
    const char kind = b.dtype().kind();
    if (b.ndim() != 1 || static_cast<Index>(b.shape(0)) != B || (kind != 'f' && kind != 'c' && kind != 'i' && kind != 'u'))
      refuse("beta", "must be a number or a 1-D numeric array of one nudge per sample (" + std::to_string(B) + ")");
    const auto c = py::array_t<S, py::array::c_style | py::array::forcecast>(b);
    beta = Eigen::Map<const Vec<S>>(c.data(), B);
  } else {
    if (py::isinstance<py::bool_>(beta_obj) || py::isinstance<py::str>(beta_obj)) refuse("beta", "must be a number");
    try {
      beta.setConstant(beta_obj.cast<S>());
    } catch (const py::cast_error&) {
      refuse("beta", "must be a number (real or complex)");
    }
  }
  if (!beta.allFinite()) refuse("beta", "must be finite");
  if (y_obj.is_none() && (beta.array() != S(0)).any()) refuse("y", "is needed for a nudged phase (beta ≠ 0)");
  Mat<S> u;
  if (u0.is_none()) {
    u = Mat<S>::Zero(net.neurons, B);
  } else {
    const Samples<S> start = samples_in<S>(u0, net.neurons, "u0", B);
    u = start.map;
  }
  if (timings) {  // the benchmark of the binding's cost: the library's own work, timed inside
    const Mat<S> start = u;
    std::vector<double> seconds(static_cast<std::size_t>(timings));
    native([&] {
      for (double& t : seconds) {
        u = start;
        const auto t0 = std::chrono::steady_clock::now();
        const RelaxResult r = relax_core(pm, *theta, x.map, y.map, beta, u, cfg);
        t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        (void)r;
      }
    });
    return py::dict(py::arg("seconds") = seconds);
  }
  // As the CLI: a relaxation longer than 3 s shows where it stands on stderr.
  tools::PhaseProgress progress("hepsim.sim.relax");
  RelaxConfig shown = cfg;
  shown.progress = progress.phase("relaxation");
  RelaxResult r = native([&] { return relax_core(pm, *theta, x.map, y.map, beta, u, shown); });
  py::dict out;
  out["states"] = samples_out(std::move(u));
  out["residual"] = vector_out(Vec<double>(r.residual));
  out["status"] = status_list(r.status);
  out["steps"] = vector_out(r.col_steps);
  out["field_evals"] = r.field_evals;
  out["t"] = r.t;
  return out;
}

// Whether a β (a number, a NumPy scalar or an array) is complex.
bool complex_beta(const py::handle& beta) {
  if (py::isinstance<py::array>(beta)) return py::reinterpret_borrow<py::array>(beta).dtype().kind() == 'c';
  return PyComplex_Check(beta.ptr()) || py::module_::import("numpy").attr("iscomplexobj")(beta).cast<bool>();
}

// θ as a writable, contiguous array of the network's parameters (apply_angle changes it in place).
template <class R>
Eigen::Map<Vec<R>> theta_in_place(py::array& theta, Index n) {
  if (theta.ndim() != 1 || static_cast<Index>(theta.shape(0)) != n)
    refuse("theta", "must be a 1-D array of the network's " + std::to_string(n) + " parameters");
  if (!(theta.flags() & py::array::c_style) || !theta.writeable())
    refuse("theta", "must be a writable contiguous array (it is changed in place)");
  return {static_cast<R*>(theta.mutable_data()), n};
}

}  // namespace

void bind_sim(py::module_& m) {
  py::class_<PyModel>(m, "Model",
                      "A network (an architecture compiled for an input shape and a number of classes) with its\n"
                      "activation and loss. Parameters are a flat vector θ (float32 or float64) laid out in named\n"
                      "blocks: a kernel block is a column-major rows x cols matrix (param() gives the view).")
      .def(py::init(&make_model), py::arg("arch"), py::arg("input_shape"), py::arg("classes"),
           py::arg("activation") = py::none(), py::arg("loss") = "xent",
           "arch: a built-in name ('mlp_2-256', 'loop_mnist', 'cnn', 'cnn_small'), a JSON file or a dict in the\n"
           "architecture format; input_shape: n or (C, H, W); activation: 'sigmoid' or 'dsilu' (default: the\n"
           "built-in's); loss: 'xent' or 'mse'.")
      .def("__repr__",
           [](const PyModel& p) {
             return "hepsim.sim.Model('" + p.net().name + "', neurons=" + std::to_string(p.net().neurons) +
                    ", params=" + std::to_string(p.net().n_params) + ", activation='" + to_string(p.model.activation) +
                    "', loss='" + to_string(p.model.loss) + "')";
           })
      .def_property_readonly("name", [](const PyModel& p) { return p.net().name; })
      .def_property_readonly("neurons", [](const PyModel& p) { return p.net().neurons; })
      .def_property_readonly("n_params", [](const PyModel& p) { return p.net().n_params; })
      .def_property_readonly("input_size", [](const PyModel& p) { return p.net().input_size; })
      .def_property_readonly("classes", [](const PyModel& p) { return p.net().classes; })
      .def_property_readonly("activation", [](const PyModel& p) { return to_string(p.model.activation); })
      .def_property_readonly("loss", [](const PyModel& p) { return to_string(p.model.loss); })
      .def_property_readonly("architecture", [](const PyModel& p) {
        return py::module_::import("json").attr("loads")(to_json(p.net()));
      }, "The compiled architecture as a dict (numeric layer sizes).")
      .def_property_readonly("layers", [](const PyModel& p) {
        py::list l;
        for (const Layer& layer : p.net().layers) {
          py::dict d;
          d["name"] = layer.name;
          d["size"] = layer.size;
          d["offset"] = layer.offset;
          d["shape"] = layer.shaped() ? py::make_tuple(layer.shape.c, layer.shape.h, layer.shape.w) : py::make_tuple(layer.size);
          l.append(d);
        }
        return l;
      }, "The state layers in neuron order: name, size, offset (first neuron in a state), shape.")
      .def_property_readonly("blocks", [](const PyModel& p) {
        py::list l;
        for (const ParamBlock& b : p.net().blocks) {
          py::dict d;
          d["name"] = b.name;
          d["offset"] = b.offset;
          d["rows"] = b.rows;
          d["cols"] = b.cols;
          d["bias"] = b.bias;
          l.append(d);
        }
        return l;
      }, "The parameter blocks of θ: name ('l1-l2.K', 'readout.b', …), offset, rows, cols, bias.")
      .def(
          "init",
          [](const PyModel& p, const py::object& seed_arg, double angle, const std::string& dtype) -> py::array {
            // The range of the CLI's --seed.
            const auto seed = static_cast<std::uint64_t>(integer_arg(seed_arg, "seed", 0, std::numeric_limits<long long>::max()));
            if (!(angle >= 0 && angle <= 180)) refuse("angle", "must be between 0 and 180 degrees");
            if (dtype == "float64") return vector_out(init_params<double>(p.net(), seed, angle));
            if (dtype == "float32") return vector_out(init_params<float>(p.net(), seed, angle));
            refuse("dtype", "must be 'float32' or 'float64'");
          },
          py::arg("seed") = 0, py::arg("angle") = 90.0, py::arg("dtype") = "float64",
          "SPEC 5 initialisation (the CLI's --seed, --angle): θ as a new array.")
      .def(
          "param",
          [](const PyModel& p, py::array theta, const std::string& name) {
            const ParamBlock& b = block_named(p.net(), name);
            if (theta.ndim() != 1 || static_cast<Index>(theta.shape(0)) != p.net().n_params)
              refuse("theta", "must be a 1-D array of the network's " + std::to_string(p.net().n_params) + " parameters");
            const py::ssize_t stride = theta.strides(0);
            auto* data = static_cast<char*>(theta.mutable_data()) + b.offset * stride;
            if (b.cols == 1) return py::array(theta.dtype(), {b.rows}, {stride}, data, theta);
            return py::array(theta.dtype(), {b.rows, b.cols}, {stride, b.rows * stride}, data, theta);
          },
          py::arg("theta"), py::arg("name"), "The block `name` of θ as a writable view (rows x cols, or rows for a bias).")
      .def(
          "apply_angle",
          [](const PyModel& p, py::array theta, double angle) {
            if (!(angle >= 0 && angle <= 180)) refuse("angle", "must be between 0 and 180 degrees");
            const auto mix = [&](auto r) {
              using R = decltype(r);
              Eigen::Map<Vec<R>> v = theta_in_place<R>(theta, p.net().n_params);
              native([&] {
                Vec<R> w = v;
                apply_angle<R>(p.net(), w, angle);
                v = w;
              });
            };
            if (theta_is_double(theta)) mix(double{});
            else mix(float{});
          },
          py::arg("theta"), py::arg("angle"), "Mixes every feedback kernel in place: K_fb ← sin α K_fb + cos α K_ffᵀ (SPEC 5).")
      .def(
          "weight_angle",
          [](const PyModel& p, const py::array& theta) {
            if (theta_is_double(theta)) {
              const Theta<double> t(theta, p.net().n_params);
              return native([&] { return weight_angle_deg<double>(p.net(), *t); });
            }
            const Theta<float> t(theta, p.net().n_params);
            return native([&] { return weight_angle_deg<float>(p.net(), *t); });
          },
          py::arg("theta"), "The angle between feedforward and feedback kernels in degrees (NaN without reciprocal pairs).");

  m.def(
      "device_theta",
      [](const PyModel& model, const py::array& theta, double mismatch, const py::object& weight_bits,
         double weight_clip, const py::object& seed) {
        DeviceConfig dc;
        dc.mismatch = mismatch;
        dc.weight_bits = static_cast<int>(integer_arg(weight_bits, "weight_bits", 0, 16));
        dc.weight_clip = weight_clip;
        dc.seed = static_cast<std::uint64_t>(integer_arg(seed, "seed", 0, std::numeric_limits<long long>::max()));
        const Device device = native([&] { return Device(model.net(), dc); });
        return by_precision(theta, [&](auto r) -> py::object {
          using R = decltype(r);
          const Theta<R> th(theta, model.net().n_params);
          Vec<R> out(model.net().n_params);
          native([&] { device.apply<R>(*th, out); });
          return vector_out(std::move(out));
        });
      },
      py::arg("model"), py::arg("theta"), py::arg("mismatch") = 0.0, py::arg("weight_bits") = 0,
      py::arg("weight_clip") = 0.0, py::arg("seed") = 0,
      "The parameters an analog device realises (sim/analog/substrate.hpp, the CLI's --mismatch, --weight-bits,\n"
      "--weight-clip, --seed): Q(θ) ⊙ (1 + c ξ) on the substrate's kernels and biases, the readout exact.");

  const auto relax_fn = [](long timings) {
    return [timings](const PyModel& model, const py::array& theta, const py::object& x, const py::object& y,
                     const py::object& beta, const py::object& u0, py::kwargs kw) {
      py::dict opts(kw);
      const RelaxConfig cfg = relax_config(opts, "", 150, model.net());
      no_more_kwargs(opts, "hepsim.sim.relax");
      const bool dbl = theta_is_double(theta), cplx = complex_beta(beta);
      if (dbl) return cplx ? relax_impl<std::complex<double>>(model, theta, x, y, beta, u0, cfg, timings)
                           : relax_impl<double>(model, theta, x, y, beta, u0, cfg, timings);
      return cplx ? relax_impl<std::complex<float>>(model, theta, x, y, beta, u0, cfg, timings)
                  : relax_impl<float>(model, theta, x, y, beta, u0, cfg, timings);
    };
  };
  m.def("_relax_native_seconds", relax_fn(1), py::arg("model"), py::arg("theta"), py::arg("x"), py::arg("y") = py::none(),
        py::arg("beta") = 0.0, py::arg("u0") = py::none(),
        "For tools/bench/python_overhead.py: the seconds of the library's work of one hepsim.sim.relax call with\n"
        "these arguments (timed in C++, without the binding's conversions), as {'seconds': [s]}.");
  m.def(
      "relax", relax_fn(0),
      py::arg("model"), py::arg("theta"), py::arg("x"), py::arg("y") = py::none(), py::arg("beta") = 0.0,
      py::arg("u0") = py::none(),
      "Relaxes the batch x (samples, input_size) to a fixed point of M(u) = G(σ(u), x) + β e from u0 (default 0).\n"
      "beta: a number or one per sample, real or complex (complex: complex states); y: one-hot targets\n"
      "(samples, classes), needed when beta ≠ 0. Keywords: solver ('map', 'rk4', 'dopri5', 'anderson'), max_steps\n"
      "(150), tol (0: run the whole budget), dt (0: the solver's default), report_tol, rtol, atol, anderson_m,\n"
      "stall_window, cycle_period; an analog substrate's noise (σ; map or rk4), noise_seed, noise_key, tau\n"
      "({layer: τ}: per-layer time constants) and max_time (settling time; the map and rk4 take whole steps of\n"
      "dt, at least one). Returns {'states': (samples, neurons), 'residual', 'status', 'steps',\n"
      "'field_evals', 't'} (sim/relax.hpp: statuses converged, max_steps, diverged, cycling, stalled).");
}

}  // namespace hepsim::python
