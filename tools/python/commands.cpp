// hepsim.train/eval/relax/jacobian/gradcheck/bench: the CLI's subcommands as functions. The keyword
// arguments become the flags (`samples=5` → `--samples 5`, `data_dir` → `--data-dir`, True → a
// bare switch, False and None → left out, a dict → its JSON text) and the subcommand runs in this
// process through tools::run_command, so the result is the CLI's JSON object with the CLI's
// numbers; bad input raises ValueError with the CLI's message (its `result` attribute holds the
// JSON when the command printed one before refusing it, e.g. too few samples settled).
#include <cmath>

#include "tools/cli.hpp"
#include "tools/signals.hpp"
#include "tools/python/module.hpp"
#include "tools/run_files.hpp"

namespace hepsim::python {
namespace {

// nlohmann::json → Python (NaN, which the CLI prints as null, stays a float NaN).
py::object to_python(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return py::none();
    case nlohmann::json::value_t::boolean: return py::bool_(j.get<bool>());
    case nlohmann::json::value_t::number_integer: return py::int_(j.get<long long>());
    case nlohmann::json::value_t::number_unsigned: return py::int_(j.get<unsigned long long>());
    case nlohmann::json::value_t::number_float: return py::float_(j.get<double>());
    case nlohmann::json::value_t::string: return py::str(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      py::list l;
      for (const auto& v : j) l.append(to_python(v));
      return l;
    }
    default: {
      py::dict d;
      for (const auto& [k, v] : j.items()) d[py::str(k)] = to_python(v);
      return d;
    }
  }
}

// One flag's text from a Python value (ValueError naming the flag for anything else).
std::string flag_text(const std::string& flag, const py::handle& v) {
  if (py::isinstance<py::str>(v)) return v.cast<std::string>();
  if (PyIndex_Check(v.ptr())) return py::str(py::int_(py::reinterpret_borrow<py::object>(v))).cast<std::string>();
  if (py::isinstance<py::float_>(v) || py::hasattr(v, "__float__")) {
    // repr: the shortest text that reads back as the same double; inf and nan keep their names
    // and are refused by the flag's own check, with the CLI's message.
    return py::repr(py::float_(py::reinterpret_borrow<py::object>(v))).cast<std::string>();
  }
  if (py::isinstance<py::dict>(v) || py::isinstance<py::list>(v))
    return py::module_::import("json").attr("dumps")(v).cast<std::string>();
  refuse(flag, "cannot be given a " + py::str(py::type::of(v).attr("__name__")).cast<std::string>());
}

// The argument list of `hepsim <command>` from a dict of flags.
std::vector<std::string> command_args(const std::string& command, const py::dict& flags) {
  std::vector<std::string> args{command};
  for (const auto& [key, value] : flags) {
    std::string name = py::str(key).cast<std::string>();
    for (char& c : name)
      if (c == '_') c = '-';
    const std::string flag = "--" + name;
    if (value.is_none()) continue;
    if (py::isinstance<py::bool_>(value)) {
      // A switch (--quiet) is given or left out; a flag with a value (--warm-start) takes on/off.
      if (tools::command_flag_is_switch(command, flag)) {
        if (value.cast<bool>()) args.push_back(flag);
      } else {
        args.push_back(flag);
        args.push_back(value.cast<bool>() ? "on" : "off");
      }
      continue;
    }
    args.push_back(flag);
    args.push_back(flag_text(flag, value));
  }
  return args;
}

// Flags from an optional dict and keyword arguments (the keywords win), keyed by the flag's
// name ('max_steps' and 'max-steps' are one flag).
py::dict merged(const py::object& config, const py::kwargs& kw, const std::string& command) {
  py::dict all;
  const auto put = [&](const py::handle& key, const py::handle& value) {
    if (!py::isinstance<py::str>(key)) refuse("config", "its keys must be flag names (strings)");
    std::string name = key.cast<std::string>();
    for (char& c : name)
      if (c == '_') c = '-';
    all[py::str(name)] = value;
  };
  if (!config.is_none()) {
    if (!py::isinstance<py::dict>(config))
      refuse("config", "hepsim." + command + " takes a dict of flags (or a path to a JSON file for train)");
    for (const auto& [k, v] : py::reinterpret_borrow<py::dict>(config)) put(k, v);
  }
  for (const auto& [k, v] : kw) put(k, v);
  return all;
}

py::object run(const std::vector<std::string>& args, const py::object& on_epoch) {
  nlohmann::json result;
  tools::CommandHooks hooks;
  hooks.result = &result;
  if (!on_epoch.is_none()) {
    if (!PyCallable_Check(on_epoch.ptr())) refuse("on_epoch", "must be callable (it receives each epoch's record)");
    hooks.on_epoch = [on_epoch](const nlohmann::json& record) {
      py::gil_scoped_acquire gil;
      on_epoch(to_python(record));
    };
  }
  // The result a command printed before refusing it (too few samples settled) or before it
  // stopped on Ctrl-C (train: the summary with "stopped") travels with the exception.
  const auto with_result = [&](PyObject* type, const char* what) {
    py::object error = py::reinterpret_borrow<py::object>(type)(what);
    error.attr("result") = to_python(result);
    PyErr_SetObject(type, error.ptr());
    throw py::error_already_set();
  };
  try {
    const NativeCall call;  // not native(): a subcommand's errors name the CLI's flags
    tools::run_command(args, hooks);
    call.finish();
  } catch (const InputError& e) {
    if (result.is_null()) throw;
    with_result(PyExc_ValueError, e.what());
  } catch (const tools::RunStopped& e) {
    if (result.is_null()) throw;
    with_result(PyExc_KeyboardInterrupt, e.what());
  }
  return to_python(result);
}

void def_command(py::module_& m, const char* name, const char* doc) {
  const std::string command = name;
  m.def(
      name,
      [command](const py::object& config, const py::kwargs& kw) { return run(command_args(command, merged(config, kw, command)), py::none()); },
      py::arg("config") = py::none(), doc);
}

}  // namespace

void bind_commands(py::module_& m) {
  m.def(
      "train",
      [](const py::object& config, const py::object& on_epoch, const py::kwargs& kw) {
        // A path: the CLI's --config file; a dict: its keys as flags.
        py::dict flags;
        std::vector<std::string> extra;
        if (py::isinstance<py::str>(config) || py::isinstance(config, py::module_::import("os").attr("PathLike"))) {
          extra = {"--config", py::str(py::module_::import("os").attr("fspath")(config)).cast<std::string>()};
          flags = merged(py::none(), kw, "train");
        } else {
          flags = merged(config, kw, "train");
        }
        std::vector<std::string> args = command_args("train", flags);
        args.insert(args.begin() + 1, extra.begin(), extra.end());
        return run(args, on_epoch);
      },
      py::arg("config") = py::none(), py::arg("on_epoch") = py::none(),
      "hepsim train: trains a network and writes DIR/log.h5, DIR/checkpoint.h5, DIR/config.json like the CLI.\n"
      "config: a dict of the configuration's keys (as flags: 'batch-size' or batch_size) or the path of a JSON\n"
      "configuration file; keyword arguments override it. on_epoch(record) is called after each epoch is logged\n"
      "and checkpointed, with the log's columns for that epoch (an exception raised there ends the run, which\n"
      "can be resumed with resume=DIR). Returns the CLI's JSON summary. Ctrl-C stops the run after its current\n"
      "step with a checkpoint (KeyboardInterrupt).");
  def_command(m, "eval", "hepsim eval: evaluates a run's checkpoint (checkpoint=DIR or file); returns the CLI's JSON.");
  def_command(m, "relax",
              "hepsim relax: relaxes test samples with fresh weights by a solver and by the map; returns the CLI's JSON.");
  def_command(m, "jacobian", "hepsim jacobian: Jacobian metrics of a fresh network or checkpoint; returns the CLI's JSON.");
  def_command(m, "gradcheck", "hepsim gradcheck: estimators against the exact gradient; returns the CLI's JSON.");
  def_command(m, "bench", "hepsim bench: FMA peak and engine speed; returns the CLI's JSON.");
  m.def(
      "load_checkpoint",
      [](const std::string& path, const py::object& input_shape) {
        tools::Checkpoint ck = native([&] { return tools::read_checkpoint(path); });
        // The input's shape: given, or that of the run's dataset (a flat input for h5 files).
        MapShape shape{0, 0, 0};
        if (!input_shape.is_none()) {
          std::vector<Index> dims;
          try {
            dims = input_shape.cast<std::vector<Index>>();
          } catch (const py::cast_error&) {
            refuse("input_shape", "must be (n,) or (C, H, W)");
          }
          for (Index d : dims)
            if (d <= 0) refuse("input_shape", "must hold positive sizes");
          if (dims.size() == 3) shape = {dims[0], dims[1], dims[2]};
          else if (dims.size() != 1 || dims[0] != ck.input_size)
            refuse("input_shape", "must be (n,) or (C, H, W) holding the checkpoint's " + std::to_string(ck.input_size) + " inputs");
        } else {
          const std::string dataset = ck.config.value("dataset", "");
          if (dataset == "fmnist" || dataset == "mnist") shape = {1, 28, 28};
          else if (dataset == "cifar10" || dataset == "cifar100" || dataset == "imagenet32") shape = {3, 32, 32};
          else if (dataset == "imagenet64") shape = {3, 64, 64};
        }
        if (shape.c > 0 && shape.c * shape.h * shape.w != ck.input_size)
          refuse("input_shape", "does not hold the checkpoint's " + std::to_string(ck.input_size) + " inputs");
        PyModel pm;
        pm.model.net = compile(parse_architecture(ck.architecture, path, ck.input_size, ck.classes, shape), path);
        pm.model.activation = parse_activation(ck.config.value("activation", "sigmoid"), path);
        pm.model.loss = parse_loss(ck.config.value("loss", "xent"), path);
        py::dict d;
        d["model"] = py::cast(std::move(pm));
        d["theta"] = vector_out(std::move(ck.theta));
        d["config"] = to_python(ck.config);
        d["epoch"] = ck.epoch;
        d["mid_epoch"] = ck.mid_epoch;
        d["optimizer_steps"] = ck.optimizer_steps;
        return d;
      },
      py::arg("path"), py::arg("input_shape") = py::none(),
      "A run's checkpoint (DIR/checkpoint.h5): {'model', 'theta' (float64), 'config', 'epoch', 'mid_epoch',\n"
      "'optimizer_steps'}; the model takes the run's dataset's image shape unless input_shape is given.");
  m.def(
      "set_threads", [](int threads) { return tools::set_threads(threads); }, py::arg("threads"),
      "The threads of the library's calls, like the CLI's --threads (0: all cores); returns the number set.\n"
      "OpenMP runs hepsim's own chunks on them and Eigen its products (on at most the cores). The subcommands'\n"
      "threads= applies to that command only.");
  m.def("help", &tools::command_help, py::arg("command"), "The CLI's help text of a subcommand (its flags).");
}

}  // namespace hepsim::python
