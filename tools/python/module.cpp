// The Python module `hepsim`: see tools/python/module.hpp for its parts.
#include "tools/python/module.hpp"

#include <cctype>
#include <csignal>
#include <filesystem>
#include <mutex>

#include "sim/blocking.hpp"
#include "tools/cli.hpp"
#include "tools/signals.hpp"

namespace hepsim::python {

void refuse(const std::string& argument, const std::string& message) { throw InputError(argument, message); }

namespace {
// "--weight-bits" → "weight_bits" wherever a flag appears in `text`.
std::string flags_as_keywords(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    const bool flag = text.compare(i, 2, "--") == 0 && i + 2 < text.size() && std::islower(static_cast<unsigned char>(text[i + 2])) &&
                      (i == 0 || !std::isalnum(static_cast<unsigned char>(text[i - 1])));
    if (!flag) {
      out += text[i++];
      continue;
    }
    for (i += 2; i < text.size() && (std::isalnum(static_cast<unsigned char>(text[i])) || text[i] == '-'); ++i)
      out += text[i] == '-' ? '_' : text[i];
  }
  return out;
}
}  // namespace

void rethrow_as_keyword(const InputError& e) {
  const std::string& where = e.where();
  if (where.size() < 3 || where.compare(0, 2, "--") != 0) throw e;
  const std::string what = e.what();
  throw InputError(flags_as_keywords(where), flags_as_keywords(what.substr(std::min(what.size(), where.size() + 2))));
}

long long integer_arg(const py::handle& v, const std::string& name, long long lo, long long hi) {
  const bool numpy_bool = py::hasattr(v, "dtype") && py::str(v.attr("dtype").attr("kind")).cast<std::string>() == "b";
  if (py::isinstance<py::bool_>(v) || numpy_bool || !PyIndex_Check(v.ptr())) refuse(name, "must be an integer");
  const py::int_ i = py::reinterpret_steal<py::int_>(PyNumber_Index(v.ptr()));
  int overflow = 0;
  const long long x = PyLong_AsLongLongAndOverflow(i.ptr(), &overflow);
  if (overflow != 0 || x < lo || x > hi)
    refuse(name, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  return x;
}

void require_dense_model(const PyModel& model, const std::string& what, const std::string& instead) {
  if (model.net().has_conv())
    refuse("model", model.net().name + " has convolutional edges: " + what + " needs a state-independent Jacobian (" +
                        instead + ")");
}

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

bool theta_is_double(const py::handle& theta) {
  if (!py::isinstance<py::array>(theta)) refuse("theta", "must be a NumPy array (float32 or float64)");
  if (has_dtype<double>(theta)) return true;
  if (has_dtype<float>(theta)) return false;
  refuse("theta", "has dtype " + dtype_name(py::reinterpret_borrow<py::array>(theta)) +
                      "; the parameters are float32 or float64");
}

namespace {
std::mutex g_signal_mutex;
bool g_handler_installed = false;
unsigned long g_main_thread = 0;
struct sigaction g_python_handler;

extern "C" void on_interrupt(int) { request_interrupt(); }

// Python's own SIGINT handler is in place (what raises KeyboardInterrupt).
bool python_handles_sigint() {
  const py::module_ signal = py::module_::import("signal");
  return signal.attr("getsignal")(SIGINT).is(signal.attr("default_int_handler"));
}
}  // namespace

void note_main_thread() {
  g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
}

NativeCall::NativeCall() {
  if (PyThread_get_thread_ident() == g_main_thread && python_handles_sigint()) {
    const std::lock_guard<std::mutex> lock(g_signal_mutex);
    if (!g_handler_installed) {
      clear_interrupt();
      struct sigaction action {};
      action.sa_handler = on_interrupt;
      sigemptyset(&action.sa_mask);
      action.sa_flags = SA_RESTART;
      sigaction(SIGINT, &action, &g_python_handler);
      g_handler_installed = installed_ = true;
    }
  }
  release_.emplace();
}

NativeCall::~NativeCall() {
  release_.reset();
  if (!installed_) return;
  const std::lock_guard<std::mutex> lock(g_signal_mutex);
  sigaction(SIGINT, &g_python_handler, nullptr);
  g_handler_installed = false;
  clear_interrupt();  // this call has reported it (finish) or is unwinding from it
}

void NativeCall::finish() const { throw_if_interrupted(); }

py::list status_list(const std::vector<RelaxStatus>& status) {
  py::list l;
  for (RelaxStatus s : status) l.append(to_string(s));
  return l;
}

namespace {
template <class T>
T take(py::dict& kw, const std::string& key, T fallback) {
  if (!kw.contains(key)) return fallback;
  const py::object v = kw[py::str(key)];
  PyDict_DelItemString(kw.ptr(), key.c_str());
  if (py::hasattr(v, "dtype") && py::str(v.attr("dtype").attr("kind")).cast<std::string>() == "b")
    refuse(key, "must be a number, not a bool");
  try {
    if constexpr (std::is_same_v<T, std::string>) {
      if (!py::isinstance<py::str>(v)) throw py::cast_error();
    } else if constexpr (std::is_integral_v<T>) {
      if (py::isinstance<py::bool_>(v) || !PyIndex_Check(v.ptr())) throw py::cast_error();
    } else {
      if (py::isinstance<py::bool_>(v) || py::isinstance<py::str>(v)) throw py::cast_error();
    }
    return v.cast<T>();
  } catch (const py::cast_error&) {
    if constexpr (std::is_integral_v<T>)
      if (PyIndex_Check(v.ptr()) && !py::isinstance<py::bool_>(v)) refuse(key, "is out of range");
    refuse(key, std::string("must be ") +
                    (std::is_same_v<T, std::string> ? "a string" : std::is_integral_v<T> ? "an integer" : "a number") +
                    ", not " + py::str(py::type::of(v).attr("__name__")).cast<std::string>());
  }
}

void require(bool ok, const std::string& key, const std::string& what) {
  if (!ok) refuse(key, what);
}
}  // namespace

RelaxConfig relax_config(py::dict& kw, const std::string& p, long default_steps, const Network& net) {
  RelaxConfig c;
  c.solver = parse_solver(take(kw, p + "solver", std::string("map")), p + "solver");
  c.max_steps = take(kw, p + "max_steps", default_steps);
  c.tol = take(kw, p + "tol", c.tol);
  c.dt = take(kw, p + "dt", c.dt);
  c.report_tol = take(kw, p + "report_tol", c.report_tol);
  c.rtol = take(kw, p + "rtol", c.rtol);
  c.atol = take(kw, p + "atol", c.atol);
  c.anderson_m = take(kw, p + "anderson_m", c.anderson_m);
  c.stall_window = take(kw, p + "stall_window", c.stall_window);
  c.cycle_period = take(kw, p + "cycle_period", c.cycle_period);
  c.noise.sigma = take(kw, p + "noise", c.noise.sigma);
  c.noise.seed = take(kw, p + "noise_seed", c.noise.seed);
  c.noise.key = take(kw, p + "noise_key", c.noise.key);
  c.max_time = take(kw, p + "max_time", c.max_time);
  const auto finite_nonneg = [](double v) { return std::isfinite(v) && v >= 0; };
  require(c.max_steps >= 1, p + "max_steps", "must be at least 1");
  require(finite_nonneg(c.tol), p + "tol", "must be a finite number ≥ 0 (0: run the whole budget)");
  require(finite_nonneg(c.dt), p + "dt", "must be a finite number ≥ 0 (0: the solver's default)");
  require(std::isfinite(c.report_tol) && c.report_tol > 0, p + "report_tol", "must be a finite positive number");
  require(std::isfinite(c.rtol) && c.rtol > 0, p + "rtol", "must be a finite positive number");
  require(std::isfinite(c.atol) && c.atol > 0, p + "atol", "must be a finite positive number");
  require(c.anderson_m >= 1 && c.anderson_m <= 16, p + "anderson_m", "must be between 1 and 16");
  require(finite_nonneg(c.stall_window), p + "stall_window", "must be a finite number ≥ 0 (0: never stall)");
  require(c.cycle_period >= 0 && c.cycle_period <= 64, p + "cycle_period", "must be between 0 (no cycle test) and 64");
  require(finite_nonneg(c.noise.sigma), p + "noise", "must be a finite number ≥ 0 (0: no noise)");
  require(finite_nonneg(c.max_time), p + "max_time", "must be a finite number ≥ 0 (0: no limit)");
  if (kw.contains(p + "tau")) {
    const py::object tau = kw[py::str(p + "tau")];
    PyDict_DelItemString(kw.ptr(), (p + "tau").c_str());
    if (!py::isinstance<py::dict>(tau)) refuse(p + "tau", "must be a dict {layer: time constant}");
    std::vector<std::pair<std::string, double>> pairs;
    for (const auto& [layer, value] : py::reinterpret_borrow<py::dict>(tau)) {
      const bool numpy_bool = py::hasattr(value, "dtype") && py::str(value.attr("dtype").attr("kind")).cast<std::string>() == "b";
      if (!py::isinstance<py::str>(layer) || py::isinstance<py::bool_>(value) || numpy_bool || py::isinstance<py::str>(value) ||
          PyComplex_Check(value.ptr()))
        refuse(p + "tau", "must map layer names to numbers");
      try {
        pairs.emplace_back(layer.cast<std::string>(), value.cast<double>());
      } catch (const py::cast_error&) {
        refuse(p + "tau", "must map layer names to numbers");
      }
    }
    c.rate = time_constant_rates(net, pairs, p + "tau");
  }
  return c;
}

void no_more_kwargs(const py::dict& kw, const std::string& function) {
  for (const auto& item : kw)
    refuse(py::str(item.first).cast<std::string>(), "is not a keyword argument of " + function);
}

template <class R>
Samples<R> targets_in(const py::handle& y, const Network& net, Index samples, Mat<R>& zeros) {
  if (!y.is_none()) return samples_in<R>(y, net.classes, "y", samples);
  zeros = Mat<R>::Zero(net.classes, samples);
  Samples<R> s;
  new (&s.map) Eigen::Map<const Mat<R>>(zeros.data(), zeros.rows(), zeros.cols());
  return s;
}
template Samples<float> targets_in<float>(const py::handle&, const Network&, Index, Mat<float>&);
template Samples<double> targets_in<double>(const py::handle&, const Network&, Index, Mat<double>&);

}  // namespace hepsim::python

PYBIND11_MODULE(hepsim, m) {
  namespace hp = hepsim::python;
  namespace py = pybind11;
  hepsim::fix_product_blocking();  // the CLI's products, bit for bit
  m.doc() =
      "hepsim: equilibrium propagation on simulated neuromorphic and analog substrates.\n\n"
      "The subcommands of the hepsim CLI are functions returning its JSON result as a dict: train, eval, relax,\n"
      "jacobian, gradcheck, bench (flags as keyword arguments, '-' written '_'). Below them the library:\n"
      "hepsim.sim (models, parameters, relaxation), hepsim.ep (estimators and exact references), hepsim.jac\n"
      "(Jacobian metrics, homeostasis), hepsim.datasets (images and batches). Arrays have samples along the\n"
      "first axis; bad input raises ValueError with the CLI's message (library calls name the keyword argument);\n"
      "Ctrl-C interrupts a long call.";
  m.attr("__version__") = HEPSIM_VERSION;
  hp::note_main_thread();
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const hepsim::InputError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const hepsim::Interrupted&) {
      PyErr_SetString(PyExc_KeyboardInterrupt, "hepsim: interrupted");
    } catch (const hepsim::tools::RunStopped& e) {
      PyErr_SetString(PyExc_KeyboardInterrupt, e.what());
    } catch (const std::filesystem::filesystem_error& e) {
      // As the CLI: a path the user named that cannot be resolved is bad input (ValueError naming
      // it); anything else is the machine's failure (OSError).
      const bool users = hepsim::tools::is_users_path_error(e);
      const std::string path = e.path1().empty() ? std::string("hepsim") : e.path1().string();
      PyErr_SetString(users ? PyExc_ValueError : PyExc_OSError, hepsim::InputError(path, e.code().message()).what());
    } catch (const std::bad_alloc&) {
      PyErr_SetString(PyExc_MemoryError, "hepsim: out of memory: the requested sizes do not fit");
    }
  });
  hp::bind_commands(m);
  py::module_ sim = m.def_submodule("sim", "Models (architectures, parameters, angle) and relaxation");
  hp::bind_sim(sim);
  py::module_ ep = m.def_submodule("ep", "Free states, RBP, exact response, EP/hEP estimators, BPTT, gradients");
  hp::bind_ep(ep);
  py::module_ jac = m.def_submodule("jac", "Jacobian metrics: jac_sym, homeostasis, weight angle, spectrum");
  hp::bind_jacobian(jac);
  py::module_ data = m.def_submodule("datasets", "Datasets as uint8 images and labels; normalised batches");
  hp::bind_datasets(data);
}
