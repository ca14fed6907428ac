#include "tools/config.hpp"

#include <CLI/CLI.hpp>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "sim/error.hpp"
#include "sim/json_strict.hpp"
#include "tools/cli.hpp"

namespace hepsim::tools {

const nlohmann::json& train_defaults() {
  static const nlohmann::json d = {
      {"dataset", "fmnist"},      // fmnist, mnist, cifar10, cifar100, imagenet32, imagenet64, h5
      {"data-dir", ""},           // "" = the dataset's standard place
      {"arch", "mlp_2-256"},      // built-in name or JSON file
      {"algo", "hep"},            // hep, rbp, bp
      {"N", 2},                   // hep: 0 exact response, 1, 2, ≥ 3 holomorphic; online: phase points
      {"periods", 3},             // online: periods of the rotation (the first is discarded)
      {"beta", 0.05},             // |β|
      {"T1", 150},                // free-phase steps
      {"T2", 20},                 // nudged-phase steps (rbp / bp / N = 0: iterations)
      {"solver", "map"},          // map, rk4, dopri5, anderson
      {"anderson-m", 5},          // anderson: memory (1..16)
      {"stall-window", 5000.0},   // a phase above its tolerance that does not halve its residual within this time is stalled (0: never)
      {"warm-start", "off"},      // on: free phases start from the sample's previous free state (needs tol > 0)
      {"tol", 0.0},               // stop a phase early at this residual (0: fixed steps)
      {"report-tol", 1e-4},       // a free phase above this residual counts as not converged
      {"dt", 0.0},                // time step: map damping (0: 1, the paper's map), rk4 step / dopri5 first step (0: 0.5)
      {"activation", "sigmoid"},  // sigmoid, dsilu
      {"loss", "xent"},           // xent, mse
      {"homeostasis", 0.0},       // λ of the Jacobian-homeostasis penalty (0: off)
      {"homeo-draws", 5},         // Gaussian probes per sample and step
      {"homeo-mode", "hutchinson"},  // hutchinson or exact
      {"homeo-samples", 0},       // the batch's samples that carry the probes (0: all)
      {"angle", 90.0},            // initial feedback/forward angle (degrees)
      {"optimizer", "sgd"},       // sgd, adamw
      {"lr", 0.01},
      {"momentum", 0.9},
      {"wd", 0.0},
      {"schedule", "constant"},   // constant, cosine
      {"lr-mult", nlohmann::json::object()},  // {"in-l1": 25, "readout": 5, …}
      {"wd-mult", nlohmann::json::object()},
      {"epochs", 5},
      {"batch-size", 50},
      {"seed", 0},
      {"threads", 0},             // 0 = all cores
      {"train-limit", 0},         // use the first n training samples (0 = all)
      {"test-limit", 0},
      {"probe-size", 100},        // fixed probe batch of the alignment metrics
      {"eval-chunk", 500},
      {"on-diverge", "skip"},     // skip or abort
      {"augment", "auto"},        // auto (the dataset's default), on, off
      {"noise", 0.0},             // σ of the Gaussian state noise (0: off; map and rk4 take Euler–Maruyama steps)
      {"mismatch", 0.0},          // c: device weights θ ⊙ (1 + c ξ), fixed per run (0: off)
      {"weight-bits", 0},         // b: the dynamics see 2^b levels on [-w, w] (0: full precision)
      {"weight-clip", 0.0},       // w: the range of the levels (needed with weight-bits)
      {"tau", nlohmann::json::object()},  // per-layer time constants of the ODE solvers {"l1": 2, …}
      {"settle", 0.0},            // physical-time budget of each phase (0: the step budgets only)
      {"precision", "float"},     // float or double
      {"out", "runs/train"},
      {"checkpoint-every", "30m"},  // mid-epoch checkpoints: a wall time (90s, 30m, 2h), a step count (500steps) or off
  };
  return d;
}

bool added_after_0_1_0(const std::string& key) {
  static const std::set<std::string> added = {"stall-window", "homeo-samples", "noise", "mismatch",
                                              "weight-bits",  "weight-clip",   "tau",   "settle", "periods",
                                              "checkpoint-every"};
  return added.count(key) > 0;
}

void migrate_config(nlohmann::json& config, const std::string& written_by) {
  if (!config.is_object() || !config.contains("dt")) return;
  bool old = written_by == "0.1.0";
  if (written_by.empty()) {
    old = !config.contains("stall-window");
    for (const auto& [key, value] : train_defaults().items())  // keys added since are not evidence
      if (!added_after_0_1_0(key) && !config.contains(key)) old = false;
  }
  const std::string solver = config.value("solver", std::string("map"));
  if (old && (solver == "map" || solver == "anderson")) config["dt"] = 0.0;
}

const std::map<std::string, std::pair<long long, long long>>& integer_bounds() {
  // Every integer key's range, checked (from a flag or a file alike) before any narrowing: a
  // typo then ends in one line naming the key, not in a wrapped value (4294967296 threads was 0,
  // "all cores") or an allocation of terabytes.
  static const std::map<std::string, std::pair<long long, long long>> b = {
      {"N", {0, kMaxContourPoints}},
      {"T1", {1, 1'000'000'000}},         // steps: time, not memory (bp's T2 is bounded by memory below)
      {"T2", {1, 1'000'000'000}},
      {"anderson-m", {1, 16}},
      {"periods", {2, 1'000'000}},
      {"homeo-draws", {1, 1024}},        // probes per sample and step: draws × batch state columns
      {"homeo-samples", {0, 1'000'000}},  // 0: every sample of the batch
      {"epochs", {1, 1'000'000}},
      {"batch-size", {1, 1'000'000}},
      {"seed", {0, std::numeric_limits<long long>::max()}},
      {"threads", {0, kMaxThreads}},     // 0: all cores (tools/cli.hpp)
      {"train-limit", {0, 1LL << 40}},   // 0: all
      {"test-limit", {0, 1LL << 40}},
      {"probe-size", {0, 1'000'000}},
      {"eval-chunk", {1, 1'000'000}},
      {"weight-bits", {0, 16}},          // 0: full precision
  };
  return b;
}

CheckpointEvery parse_checkpoint_every(const std::string& text, const std::string& where) {
  CheckpointEvery every;
  if (text == "off") return every;
  const auto bad = [&] {
    return InputError(where, "'" + text + "' is not a wall time (90s, 30m, 2h), a step count (500steps) or off");
  };
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    throw bad();
  }
  const std::string unit = text.substr(used);
  if (used == 0 || !std::isfinite(value) || value <= 0 || !std::isdigit(static_cast<unsigned char>(text[0])))
    throw bad();
  if (unit == "steps") {
    if (value != std::floor(value) || value > 1e12) throw bad();
    every.steps = static_cast<long>(value);
  } else if (unit == "s" || unit == "m" || unit == "h") {
    every.seconds = value * (unit == "s" ? 1 : unit == "m" ? 60 : 3600);
    if (every.seconds > 1e9) throw bad();
  } else {
    throw bad();
  }
  return every;
}

ConfigBuilder::ConfigBuilder() : cfg_(train_defaults()) {}

void ConfigBuilder::merge(const nlohmann::json& obj, const std::string& where) {
  if (!obj.is_object()) throw InputError(where, "a configuration must be a JSON object");
  for (const auto& [key, value] : obj.items()) {
    if (!cfg_.contains(key)) throw InputError(where, "unknown key '" + key + "'");
    const nlohmann::json& def = train_defaults()[key];
    const bool ok = (def.is_string() && value.is_string()) || (def.is_object() && value.is_object()) ||
                    (def.is_number_integer() && value.is_number_integer()) ||
                    (def.is_number_float() && value.is_number());
    if (!ok)
      throw InputError(where, "key '" + key + "' must be " +
                                  (def.is_number_integer() ? std::string("an integer") : std::string(def.type_name())));
    // An integer above 2^63 − 1 (stored unsigned) would wrap when read as a signed integer.
    if (value.is_number_unsigned() && value.get<unsigned long long>() > static_cast<unsigned long long>(
                                                                          std::numeric_limits<long long>::max()))
      throw InputError(where, "key '" + key + "' is out of range");
    cfg_[key] = def.is_number_float() ? nlohmann::json(value.get<double>()) : value;
    source_[key] = where + ": " + key;  // "run.json: lr"
  }
}

void ConfigBuilder::merge_file(const std::string& path) {
  // The whole file is one JSON object: a second object or trailing text after it, or a key given
  // twice, is an error naming the file and key (reading only the first value ignored the rest).
  nlohmann::json j = parse_json_strict(read_small_input(path, "a configuration file"), path);
  migrate_config(j, "");  // a config.json of a 0.1.0 run reused as --config
  merge(j, path);
}

namespace {


// "in-l1=25,readout=5" or a JSON object.
nlohmann::json parse_multipliers(const std::string& text, const std::string& flag) {
  if (!text.empty() && text.front() == '{') return parse_json_strict(text, flag);
  nlohmann::json j = nlohmann::json::object();
  // Item by item, an empty one too: '', 'a=1,' and 'a=1,,b=2' are errors (getline dropped the last).
  for (std::size_t from = 0;;) {
    const std::size_t comma = text.find(',', from);
    const std::string item = text.substr(from, comma == std::string::npos ? std::string::npos : comma - from);
    if (item.empty())
      throw InputError(flag, text.empty() ? std::string("is empty (give name=value pairs or a JSON object)")
                                          : "an empty item in '" + text + "'");
    const auto eq = item.find('=');
    if (eq == std::string::npos) throw InputError(flag, "expected name=value pairs, got '" + item + "'");
    const std::string name = item.substr(0, eq);
    if (j.contains(name)) throw InputError(flag, "'" + name + "' is given twice");
    j[name] = parse_real(item.substr(eq + 1), flag);
    if (comma == std::string::npos) break;
    from = comma + 1;
  }
  return j;
}

}  // namespace

void ConfigBuilder::set_flag(const std::string& key, const std::string& text) {
  const std::string flag = "--" + key;
  const nlohmann::json& def = train_defaults().at(key);
  if (def.is_string()) {
    cfg_[key] = text;
  } else if (def.is_object()) {
    cfg_[key] = parse_multipliers(text, flag);
  } else if (def.is_number_integer()) {
    // Decimal digits only, like in a configuration file, within the key's own range.
    const auto bound = integer_bounds().find(key);
    cfg_[key] = bound != integer_bounds().end()
                    ? parse_integer(text, flag, bound->second.first, bound->second.second)
                    : parse_integer(text, flag, std::numeric_limits<long long>::min(), std::numeric_limits<long long>::max());
  } else {
    cfg_[key] = parse_real(text, flag);
  }
  source_[key] = flag;
}

std::string ConfigBuilder::where(const std::string& key) const {
  const auto it = source_.find(key);
  return it == source_.end() ? "--" + key : it->second;
}

void FlagTable::add_to(CLI::App& cmd) {
  for (const auto& [key, def] : train_defaults().items()) {
    std::string help = "default " + def.dump();
    cmd.add_option("--" + key, values[key], help)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
}

void FlagTable::apply(CLI::App& cmd, ConfigBuilder& b) const {
  for (const auto& [key, text] : values)
    if (cmd.count("--" + key) > 0) b.set_flag(key, text);
}

RunSetup make_setup(const ConfigBuilder& b) {
  const nlohmann::json& c = b.json();
  auto where = [&](const char* key) { return b.where(key); };
  auto num = [&](const char* key) { return c.at(key).get<double>(); };
  auto integer = [&](const char* key) { return c.at(key).get<long long>(); };
  auto str = [&](const char* key) { return c.at(key).get<std::string>(); };
  auto positive = [&](const char* key) {
    if (!(num(key) > 0)) throw InputError(where(key), "must be positive");
    return num(key);
  };
  auto nonneg = [&](const char* key) {
    if (!(num(key) >= 0)) throw InputError(where(key), "must be ≥ 0");
    return num(key);
  };
  // An integer key within its bounds (integer_bounds), as any integer type.
  auto bounded = [&](const char* key) {
    const auto [lo, hi] = integer_bounds().at(key);
    const long long v = integer(key);
    if (v < lo || v > hi)
      throw InputError(where(key), "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + " (got " +
                                       std::to_string(v) + ")");
    return v;
  };

  RunSetup s;
  s.config = c;
  s.kind = parse_dataset_kind(str("dataset"), where("dataset"));
  s.data_dir = str("data-dir").empty() ? default_data_dir(s.kind) : str("data-dir");
  if (s.data_dir.empty()) throw InputError("--data-dir", std::string("required for dataset ") + to_string(s.kind));
  s.train_limit = bounded("train-limit");
  s.test_limit = bounded("test-limit");
  s.arch = str("arch");
  s.arch_source = where("arch");
  s.angle = require_angle(num("angle"), where("angle"));
  s.activation = parse_activation(str("activation"), where("activation"));
  s.loss = parse_loss(str("loss"), where("loss"));
  s.precision = str("precision");
  if (s.precision != "float" && s.precision != "double") throw InputError(where("precision"), "must be float or double");
  s.out = str("out");
  if (s.out.empty()) throw InputError(where("out"), "must name a directory");
  s.checkpoint_every = parse_checkpoint_every(str("checkpoint-every"), where("checkpoint-every"));

  TrainConfig& t = s.train;
  t.algo = parse_algo(str("algo"), where("algo"));
  t.N = static_cast<int>(bounded("N"));
  t.beta = positive("beta");
  if (t.algo == Algo::hep && t.N >= 1) {
    // The estimate divides a difference of nudged states by β: within 1000 rounding units of the
    // state it is noise (1e-20 in float made the weights blow up, blamed on --lr).
    const bool single = s.precision == "float";
    const double floor = 1e3 * (single ? std::numeric_limits<float>::epsilon() : std::numeric_limits<double>::epsilon());
    if (t.beta < floor) {
      std::ostringstream msg;
      msg << "below what " << s.precision << " resolves (" << floor
          << ": the estimate divides a difference of nudged states by it, which would be rounding noise)"
          << (single ? "; use a larger --beta or --precision double" : "");
      throw InputError(where("beta"), msg.str());
    }
  }
  t.free.solver = parse_solver(str("solver"), where("solver"));
  t.free.max_steps = bounded("T1");
  t.free.tol = nonneg("tol");
  t.free.report_tol = positive("report-tol");
  t.free.dt = nonneg("dt");  // 0: the solver's default
  t.free.anderson_m = static_cast<int>(bounded("anderson-m"));
  t.free.stall_window = nonneg("stall-window");
  const std::string warm = str("warm-start");
  if (warm != "on" && warm != "off") throw InputError(where("warm-start"), "must be on or off");
  t.warm_start = warm == "on";
  if (t.warm_start && !(t.free.tol > 0))
    throw InputError(where("warm-start"),
                     "needs a residual tolerance (--tol > 0): with a fixed T1 the state after T1 steps depends "
                     "on where it started, so a warm start would change the model, not only its cost");
  t.nudged = t.free;
  t.nudged.max_steps = bounded("T2");
  t.periods = bounded("periods");
  if (t.algo == Algo::online) {
    if (t.N < 2) throw InputError(where("N"), "online hEP needs at least 2 phase points per period (got " + std::to_string(t.N) + ")");
    if (t.warm_start) throw InputError(where("warm-start"), "online hEP has no free phase to start warm");
  }
  t.homeostasis = nonneg("homeostasis");
  t.homeo.draws = static_cast<int>(bounded("homeo-draws"));
  t.homeo.samples = bounded("homeo-samples");
  const std::string hm = str("homeo-mode");
  if (hm == "hutchinson") t.homeo.mode = HomeoMode::hutchinson;
  else if (hm == "exact") t.homeo.mode = HomeoMode::exact;
  else throw InputError(where("homeo-mode"), "must be hutchinson or exact");
  OptimizerConfig& o = t.optimizer;
  o.kind = parse_optimizer(str("optimizer"), where("optimizer"));
  o.lr = positive("lr");
  o.momentum = nonneg("momentum");
  if (o.momentum >= 1) throw InputError(where("momentum"), "must be < 1");
  o.wd = nonneg("wd");
  o.schedule = parse_schedule(str("schedule"), where("schedule"));
  o.lr_mult_source = where("lr-mult");
  o.wd_mult_source = where("wd-mult");
  for (const auto& [k, v] : c.at("lr-mult").items()) {
    if (!v.is_number()) throw InputError(where("lr-mult"), "'" + k + "' must map to a number");
    o.lr_mult[k] = v.get<double>();
  }
  for (const auto& [k, v] : c.at("wd-mult").items()) {
    if (!v.is_number()) throw InputError(where("wd-mult"), "'" + k + "' must map to a number");
    o.wd_mult[k] = v.get<double>();
  }
  t.epochs = bounded("epochs");
  t.batch_size = bounded("batch-size");
  t.seed = static_cast<std::uint64_t>(bounded("seed"));
  t.probe_size = bounded("probe-size");
  t.eval_chunk = bounded("eval-chunk");
  t.on_diverge = parse_divergence_policy(str("on-diverge"), where("on-diverge"));
  t.threads = set_threads(static_cast<int>(bounded("threads")));

  // The analog substrate (sim/analog/substrate.hpp).
  const double noise = nonneg("noise");
  if (noise > 0) {
    if (t.free.solver == Solver::dopri5 || t.free.solver == Solver::anderson)
      throw InputError(where("noise"), std::string("needs a fixed-step solver (map or rk4, which take Euler–Maruyama "
                                                   "steps), not ") + to_string(t.free.solver) + " (" + where("solver") + ")");
    if (t.free.tol > 0)
      throw InputError(where("tol"), "per-sample stopping needs deterministic relaxations: with noise every phase "
                                     "runs its budget (T1, T2, settle); leave tol at 0");
    for (RelaxConfig* rc : {&t.free, &t.nudged}) {
      rc->noise.sigma = noise;
      rc->noise.seed = t.seed;
    }
  }
  t.device.mismatch = nonneg("mismatch");
  t.device.weight_bits = static_cast<int>(bounded("weight-bits"));
  t.device.weight_clip = nonneg("weight-clip");
  t.device.seed = t.seed;
  if (t.device.weight_bits > 0 && !(t.device.weight_clip > 0))
    throw InputError(where("weight-clip"), "must be > 0 with weight-bits (the 2^b levels span [-w, w])");
  if (t.device.weight_bits == 0 && t.device.weight_clip > 0)
    throw InputError(where("weight-clip"), "only applies with weight-bits (full-precision weights are not clipped)");
  const double settle = nonneg("settle");
  if (settle > 0 && t.free.solver != Solver::dopri5 && settle < t.free.step())
    throw InputError(where("settle"), "is shorter than one step of the solver (dt " +
                                          std::to_string(t.free.step()) + ")");
  t.free.max_time = t.nudged.max_time = settle;
  for (const auto& [k, v] : c.at("tau").items()) {
    if (!v.is_number()) throw InputError(where("tau"), "'" + k + "' must map to a number");
    s.tau.emplace_back(k, v.get<double>());
  }
  s.tau_source = where("tau");
  if (!s.tau.empty() && (t.free.solver == Solver::map || t.free.solver == Solver::anderson))
    throw InputError(where("tau"), std::string("time constants apply to the ODE solvers (rk4, dopri5), not to ") +
                                       to_string(t.free.solver) + " (" + where("solver") + ")");
  const std::string aug = str("augment");
  if (aug != "auto" && aug != "on" && aug != "off") throw InputError(where("augment"), "must be auto, on or off");
  return s;
}

void set_data_defaults(RunSetup& s) {
  // hepsim's own HDF5 files remember the dataset they were converted from.
  const DatasetKind source = s.kind == DatasetKind::h5 ? h5_source_kind(s.data_dir + "/test.h5") : s.kind;
  s.train.norm = default_normalization(source);
  const std::string aug = s.config.at("augment").get<std::string>();
  s.train.augment = aug == "off" ? Augmentation{} : default_augmentation(source);
  if (aug == "on" && !s.train.augment.flip && s.train.augment.pad == 0) s.train.augment = Augmentation{true, 2};
}

DatasetSplits load_data(RunSetup& s) {
  DatasetSplits d = load_dataset(s.kind, s.data_dir, s.train_limit, s.test_limit);
  if (d.train.classes != d.test.classes || d.train.dim() != d.test.dim())
    throw InputError(s.data_dir, "the train and test splits differ in shape or classes");
  // Both splits' names are checked against their images' channels (the test split's source sets
  // the normalisation below).
  if (s.kind == DatasetKind::h5) (void)h5_source_kind(s.data_dir + "/train.h5");
  set_data_defaults(s);
  return d;
}

void set_time_constants(RunSetup& s, const Network& net) {
  s.train.free.rate = time_constant_rates(net, s.tau, s.tau_source);
  s.train.nudged.rate = s.train.free.rate;
}

Model make_model(const RunSetup& s, Index input_size, Index classes, MapShape image) {
  Model m;
  try {
    m.net = compile(load_architecture(s.arch, input_size, classes, image));
  } catch (const InputError& e) {
    // The loader names the flag; the name may have come from a configuration file's key.
    if (e.where() != "--arch" || s.arch_source == "--arch") throw;
    const std::string what = e.what();
    throw InputError(s.arch_source, what.substr(std::min(what.size(), e.where().size() + 2)));
  }
  m.activation = s.activation;
  m.loss = s.loss;
  check_loss(m.net, m.loss);
  return m;
}

}  // namespace hepsim::tools
