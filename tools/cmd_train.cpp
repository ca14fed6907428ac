// `hepsim train` and `hepsim eval` (SPEC 9): flags -> config -> Trainer -> log, checkpoint, JSON.
#include <chrono>
#include <cmath>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>

#include "tools/cli.hpp"
#include "tools/config.hpp"
#include "tools/progress.hpp"
#include "tools/run_files.hpp"
#include "tools/signals.hpp"
#include "sim/hash.hpp"

namespace hepsim::tools {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> layer_names(const Network& net) {
  std::vector<std::string> names;
  for (const Layer& l : net.layers) names.push_back(l.name);
  return names;
}

// The current time, UTC, ISO 8601.
std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

nlohmann::json summary(const RunSetup& s, const Network& net, const std::vector<EpochRecord>& records) {
  nlohmann::json j;
  j["out"] = s.out;
  j["epochs"] = records.empty() ? 0 : records.back().epoch;
  if (records.empty()) return j;
  const EpochRecord& r = records.back();
  j["test_acc"] = r.test_acc;
  j["test_top5"] = r.test_top5;
  j["test_loss"] = r.test_loss;
  j["train_acc"] = r.train_acc;
  j["jac_sym"] = r.jac_sym;
  j["homeo_loss"] = r.homeo_loss;
  j["weight_angle_deg"] = r.weight_angle_deg;
  j["cos_grad_total"] = r.cos_grad_total;
  nlohmann::json align;
  for (std::size_t l = 0; l < net.layers.size() && l < r.cos_delta_mean.size(); ++l)
    align[net.layers[l].name] = r.cos_delta_mean[l];
  j["cos_delta_mean"] = align;
  double seconds = 0;
  for (const EpochRecord& e : records) seconds += e.seconds;
  j["seconds"] = seconds;
  j["examples_per_s"] = r.examples_per_s;
  return j;
}

// What defines the model, its data and what the log's columns measure: a resumed run may not
// change these, or the log's epochs would be incomparable (training hyper-parameters may change).
// The optimizer's moments are in the checkpoint; mismatch and the quantizer are the run's device.
constexpr const char* kFixedOnResume[] = {"dataset",    "arch",       "activation", "loss",        "precision",
                                          "seed",       "angle",      "batch-size", "train-limit", "test-limit",
                                          "probe-size", "report-tol", "optimizer",  "mismatch",    "weight-bits",
                                          "weight-clip"};

// The checkpoint's parameters must be those of `net` and representable in the training precision
// (θ = 1e300 is finite in double but infinite in float).
void check_parameters(const Checkpoint& ck, const Network& net, const std::string& where, bool single) {
  if (ck.input_size != net.input_size || ck.classes != net.classes)
    throw InputError(where, "its network has " + std::to_string(ck.input_size) + " inputs and " +
                                std::to_string(ck.classes) + " classes; the run's has " +
                                std::to_string(net.input_size) + " and " + std::to_string(net.classes));
  if (ck.theta.size() != net.n_params) throw InputError(where, "its parameters do not fit its architecture");
  const double limit = single ? static_cast<double>(std::numeric_limits<float>::max()) : HUGE_VAL;
  for (const Vec<double>* v : {&ck.theta, &ck.m, &ck.v})
    if (v->size() > 0 && v->cwiseAbs().maxCoeff() > limit)
      throw InputError(where, "its parameters or optimizer state overflow float precision");
  if (ck.theta.size() > 0 && ck.theta.cwiseAbs().maxCoeff() > kMaxParameter)
    throw InputError(where, "its parameters exceed 1e15: the run that wrote it had blown up");
}

// A resumed run must continue the run its log records: the same run (the keys a resume may not
// change agree), the same network, and a log that reaches the checkpoint's epoch (it may be one
// epoch ahead after a kill between the two writes: that epoch is dropped and trained again).
std::vector<EpochRecord> resumed_history(const RunSetup& s, const Network& net, const Checkpoint& ck) {
  const std::string log_path = s.out + "/log.h5", ckpt_path = s.out + "/checkpoint.h5";
  nlohmann::json saved_arch;
  try {
    saved_arch = nlohmann::json::parse(ck.architecture);
  } catch (const nlohmann::json::exception&) {
    throw InputError(ckpt_path, "its architecture attribute is not valid JSON");
  }
  if (saved_arch != nlohmann::json::parse(to_json(net)))
    throw InputError(ckpt_path, "its architecture is not the network of the run's configuration");
  check_parameters(ck, net, ckpt_path, s.precision == "float");
  if (ck.m.size() != net.n_params || (s.train.optimizer.kind == OptimizerKind::adamw && ck.v.size() != net.n_params))
    throw InputError(ckpt_path, "its optimizer state does not fit the optimizer");
  if (!fs::exists(log_path)) throw InputError(log_path, "missing: a resumed run appends to its run's log");
  const nlohmann::json log_config = TrainLog::read_config(log_path);
  // A key the log's configuration lacks was written before it existed: it had its default.
  for (const char* key : kFixedOnResume)
    if (log_config.value(key, train_defaults().at(key)) != s.config.at(key))
      throw InputError(log_path, std::string("it belongs to another run than checkpoint.h5 (they differ in '") +
                                     key + "')");
  std::vector<EpochRecord> history = TrainLog::read_records(log_path, std::numeric_limits<long>::max());
  // One epoch beyond the checkpoint is a kill between the two writes (dropped and trained again);
  // more means the checkpoint is older than the log (a restored copy?): dropping logged epochs
  // silently would lose them.
  if (!history.empty() && history.back().epoch > ck.epoch + 1)
    throw InputError(ckpt_path, "it is at epoch " + std::to_string(ck.epoch) + " but log.h5 records epochs up to " +
                                    std::to_string(history.back().epoch) + ": the checkpoint is older than the log");
  while (!history.empty() && history.back().epoch > ck.epoch) history.pop_back();
  for (std::size_t i = 0; i < history.size(); ++i)
    if (history[i].epoch != static_cast<long>(i) + 1)
      throw InputError(log_path, "its epochs are not 1, 2, … (epoch " + std::to_string(history[i].epoch) +
                                     " at position " + std::to_string(i + 1) + ")");
  if (static_cast<long>(history.size()) != ck.epoch)
    throw InputError(log_path, "it ends at epoch " + std::to_string(history.size()) +
                                   " but checkpoint.h5 is at epoch " + std::to_string(ck.epoch));
  return history;
}

// The fingerprints of both splits: a resumed run must see the data it was trained on, wherever
// that data lives now.
std::string data_fingerprint(const DatasetSplits& d) {
  char text[40];
  std::snprintf(text, sizeof text, "%016llx-%016llx", static_cast<unsigned long long>(fingerprint(d.train)),
                static_cast<unsigned long long>(fingerprint(d.test)));
  return text;
}

// The checkpoint's own architecture compiled for `data`'s image shape. It compiled for the run's
// own data, so shapes that do not fit now (images of the checkpoint's input size but another
// channels x height x width, which a conv network cannot take) are the data's: named by
// `data_where` (its directory or flag).
Network checkpoint_network(const Checkpoint& ck, const std::string& ckpt_path, const Dataset& data,
                           const std::string& data_where) {
  const MapShape shape{data.channels, data.height, data.width};
  const Architecture arch = parse_architecture(ck.architecture, ckpt_path, ck.input_size, ck.classes, shape);
  try {
    return compile(arch, ckpt_path);
  } catch (const InputError& e) {
    const std::string what = e.what();
    throw InputError(data_where, "its images are " + std::to_string(shape.c) + "x" + std::to_string(shape.h) + "x" +
                                     std::to_string(shape.w) + ", which the checkpoint's network does not take (" +
                                     what.substr(std::min(what.size(), e.where().size() + 2)) + ")");
  }
}

// A resumed run's model: the checkpoint's own architecture (a relative --arch path need not
// resolve from where the run is resumed), on data of the checkpoint's shape.
Model checkpoint_model(const RunSetup& s, const Checkpoint& ck, const std::string& ckpt_path, const Dataset& train) {
  Model m;
  m.net = checkpoint_network(ck, ckpt_path, train, s.data_dir);
  m.activation = s.activation;
  m.loss = s.loss;
  check_loss(m.net, m.loss);
  if (train.dim() != ck.input_size || train.classes != ck.classes)
    throw InputError(s.data_dir, "its images have " + std::to_string(train.dim()) + " inputs and " +
                                     std::to_string(train.classes) + " classes; the run's network (" + ckpt_path +
                                     ") has " + std::to_string(ck.input_size) + " and " + std::to_string(ck.classes));
  return m;
}

template <class R>
nlohmann::json train(RunSetup& s, const DatasetSplits& data, const Model& model, const Checkpoint* resume,
                     const std::vector<EpochRecord>& history, const std::string& fingerprint, bool quiet,
                     std::optional<RunDirectory>& dir) {
  const Team& team = s.train.team ? *s.train.team : solo_team();
  const bool writer = dir.has_value();  // rank 0: the log, the checkpoint, the progress
  const Network& net = model.net;
  Vec<R> theta = resume ? Vec<R>(resume->theta.cast<R>()) : init_params<R>(net, s.train.seed, s.angle);
  Trainer<R> trainer(model, s.train, theta);
  EpochPosition from;  // the first batch of epoch 1, of the epoch after the checkpoint's, or where it stopped
  const std::string log_path = s.out + "/log.h5", ckpt_path = s.out + "/checkpoint.h5";
  TrainLog log(log_path, s.config, layer_names(net));
  if (resume) {
    trainer.optimizer().m() = resume->m.cast<R>();
    if (resume->v.size()) trainer.optimizer().v() = resume->v.cast<R>();
    trainer.optimizer().steps() = resume->optimizer_steps;
    trainer.set_moved();  // the checkpoint's weights were learned
    from.epoch = resume->epoch + 1;
    if (resume->mid_epoch) from = resume->position;
    log.set_stops(TrainLog::read_stops(log_path));
  }
  for (const EpochRecord& r : history) log.append(r);
  Progress progress(s.train.epochs, quiet);
  using Clock = std::chrono::steady_clock;
  auto last_save = Clock::now();
  long steps_since_save = 0;
  // The log first (see run_files.hpp; a mid-epoch checkpoint of epoch 1 needs a log to resume
  // with), then the checkpoint: after epoch `epoch`, or at `pos` inside the next one.
  const auto save = [&](long epoch, const EpochPosition* pos) {
    if (!writer) return;
    log.write();
    Checkpoint c;
    c.config = s.config;
    c.architecture = to_json(net);
    c.input_size = net.input_size;
    c.classes = net.classes;
    c.epoch = epoch;
    c.optimizer_steps = trainer.optimizer().steps();
    c.theta = trainer.theta().template cast<double>();
    c.m = trainer.optimizer().m().template cast<double>();
    c.v = trainer.optimizer().v().template cast<double>();
    c.data_fingerprint = fingerprint;
    c.mid_epoch = pos != nullptr;
    if (pos) c.position = *pos;
    write_checkpoint(ckpt_path, c, net);
    dir->keep();  // the run's first checkpoint is on disk: the directory is a run now
    last_save = Clock::now();
    steps_since_save = 0;
  };
  int stopped = 0;
  EpochPosition stopped_at;
  const CheckpointEvery every = s.checkpoint_every;
  trainer.run(
      data.train, data.test, from, [&](const BatchProgress& p) { progress.batch(p); },
      [&](const EpochRecord& r) {
        progress.epoch(r);
        log.append(r);
        save(r.epoch, nullptr);
        if (const CommandHooks* hooks = command_hooks(); hooks && hooks->on_epoch && writer) hooks->on_epoch(log.record_json(r));
      },
      [&](const EpochPosition& p) {
        int signal = StopSignals::received();
        if (team.size() > 1) {  // a signal to any rank stops them all at this step
          std::vector<int> all(static_cast<std::size_t>(team.size()));
          team.allgather(&signal, sizeof signal, all.data());
          const auto any = std::find_if(all.begin(), all.end(), [](int x) { return x != 0; });
          signal = any == all.end() ? 0 : *any;
        }
        if (p.batch > 0) {  // inside an epoch (batch 0: its start, just after the previous epoch's checkpoint)
          ++steps_since_save;
          const bool due = (every.steps > 0 && steps_since_save >= every.steps) ||
                           (every.seconds > 0 &&
                            std::chrono::duration<double>(Clock::now() - last_save).count() >= every.seconds);
          if (signal != 0 || due) save(p.epoch - 1, &p);
        }
        if (signal == 0) return false;
        stopped = signal;
        stopped_at = p;
        return true;
      });
  nlohmann::json out = summary(s, net, log.records());
  if (stopped != 0) {
    progress.finish();
    const long batches = (data.train.n + s.train.batch_size - 1) / s.train.batch_size;
    const long epoch = stopped_at.batch > 0 ? stopped_at.epoch : stopped_at.epoch - 1;
    const long batch = stopped_at.batch > 0 ? stopped_at.batch : batches;
    log.add_stop({{"signal", StopSignals::name(stopped)},
                  {"epoch", epoch},
                  {"batch", batch},
                  {"batches", batches},
                  {"time", utc_now()}});
    if (writer) log.write();
    out["stopped"] = {{"signal", StopSignals::name(stopped)}, {"epoch", epoch}, {"batch", batch}};
  }
  return out;
}

}  // namespace

// Everything `hepsim train` prepares before its first step: the same on every rank, except the
// run directory, which rank 0 alone holds.
struct Prepared {
  std::unique_ptr<Checkpoint> ck;
  RunSetup s;
  std::optional<RunDirectory> dir;
  DatasetSplits data;
  std::string fingerprint;
  Model model;
  std::vector<EpochRecord> history;
};

// Runs `prepare` on every rank of `team` and agrees on the outcome: when it failed somewhere, the
// lowest failing rank rethrows its error (printed as usual) and every other rank exits quietly
// with code 2, instead of waiting for the failed rank in the first collective.
template <class F>
void agree(const Team& team, F&& prepare) {
  std::exception_ptr error;
  try {
    prepare();
  } catch (...) {
    if (team.size() == 1) throw;
    error = std::current_exception();
  }
  if (team.size() == 1) return;
  const int failed = error != nullptr;
  std::vector<int> all(static_cast<std::size_t>(team.size()));
  team.allgather(&failed, sizeof failed, all.data());
  const auto first = std::find(all.begin(), all.end(), 1);
  if (first == all.end()) return;
  failure_is_agreed();
  if (first - all.begin() == team.rank()) std::rethrow_exception(error);
  throw QuietExit(2);
}

void register_train(CLI::App& app) {
  auto flags = std::make_shared<FlagTable>();
  auto config_path = std::make_shared<std::string>();
  auto resume_dir = std::make_shared<std::string>();
  auto quiet = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("train", "Train a network; writes DIR/log.h5, DIR/checkpoint.h5, DIR/config.json");
  cmd->add_option("--config", *config_path, "JSON file setting any of the keys below (flags override it)");
  cmd->add_option("--resume", *resume_dir, "Continue the run in DIR from its checkpoint, appending to its log");
  cmd->add_flag("--quiet", *quiet, "No progress output on stderr");
  flags->add_to(*cmd);
  cmd->callback([cmd, flags, config_path, resume_dir, quiet] {
    const Team& team = launch_team();
    // From the start: a signal while the data load is noted, and the run stops after its first step.
    const StopSignals signals(command_hooks() != nullptr);
    Prepared p;
    // Every rank prepares the run (its own copy of the data and checkpoint); a refusal on any
    // rank ends all of them: the lowest refusing rank prints its line, the others exit quietly.
    agree(team, [&] {
      ConfigBuilder b;
      std::unique_ptr<Checkpoint>& ck = p.ck;
      if (cmd->count("--resume") > 0 && resume_dir->empty()) throw InputError("--resume", "must name a run directory");
      if (cmd->count("--config") > 0 && config_path->empty()) throw InputError("--config", "must name a file");
      if (!resume_dir->empty()) {
        if (!config_path->empty()) throw InputError("--config", "cannot be combined with --resume (the run's config is used)");
        // A run killed in its first epoch (before its first checkpoint) has nothing to resume from;
        // one still in its first epoch holds the directory.
        if (!fs::exists(*resume_dir + "/checkpoint.h5") && fs::exists(*resume_dir + "/config.json")) {
          if (run_is_live(*resume_dir))
            throw InputError("--resume", *resume_dir + " is in use by another hepsim run (in its first epoch)");
          const long logged = fs::exists(*resume_dir + "/log.h5") ? TrainLog::last_epoch(*resume_dir + "/log.h5") : 0;
          if (logged < 0 || logged > 1)  // not what a run killed in its first epoch leaves
            throw InputError(*resume_dir + "/checkpoint.h5",
                             "missing, but " + *resume_dir + "/log.h5 " +
                                 (logged < 0 ? std::string("is there (not a readable log)")
                                             : "records " + std::to_string(logged) + " epochs") +
                                 ": the checkpoint was removed and the run cannot continue without it");
          throw InputError(*resume_dir + "/checkpoint.h5",
                           "missing: the run stopped before its first checkpoint; start it again with --out " +
                               *resume_dir + " --config " + *resume_dir + "/config.json");
        }
        ck = std::make_unique<Checkpoint>(read_checkpoint(*resume_dir + "/checkpoint.h5"));
        b.merge(ck->config, *resume_dir + "/checkpoint.h5");
        const nlohmann::json saved = b.json();
        flags->apply(*cmd, b);
        for (const char* key : kFixedOnResume)
          if (b.json().at(key) != saved.at(key))
            throw InputError("--" + std::string(key), "cannot change when resuming (the run used " + saved.at(key).dump() + ")");
        if (cmd->count("--out") > 0 && fs::weakly_canonical(b.json().at("out").get<std::string>()) !=
                                           fs::weakly_canonical(*resume_dir))
          throw InputError("--out", "a resumed run continues in its own directory " + *resume_dir);
        b.set_flag("out", *resume_dir);
      } else {
        if (!config_path->empty()) b.merge_file(*config_path);
        flags->apply(*cmd, b);
      }
      // The CNN built-ins run dsilu unless an activation is asked for (SPEC 2.2).
      if (!b.given("activation")) b.set_default("activation", default_activation(b.json().at("arch").get<std::string>()));
      // Stored absolute: a resume from another working directory finds the same data.
      const std::string given_dir = b.json().at("data-dir").get<std::string>();
      if (!given_dir.empty() && (!ck || cmd->count("--data-dir") > 0))
        b.set_flag("data-dir", fs::absolute(given_dir).lexically_normal().string());
      p.s = make_setup(b);
      RunSetup& s = p.s;
      s.train.team = &team;
      if (team.size() > 1 && s.train.warm_start)  // a sample's free state would live on the rank that last relaxed it
        throw InputError(b.where("warm-start"), "is not available with more than one MPI rank");
      // Rank 0 owns the run directory: it alone writes the log, the checkpoint and config.json.
      if (team.rank() == 0) p.dir.emplace(s.out, ck != nullptr);  // refuses foreign or busy directories; locked from here on
      p.data = load_data(s);
      const DatasetSplits& data = p.data;
      p.fingerprint = data_fingerprint(data);
      const std::string& fingerprint = p.fingerprint;
      if (ck && !ck->data_fingerprint.empty() && ck->data_fingerprint != fingerprint)
        throw InputError(cmd->count("--data-dir") > 0 ? "--data-dir" : s.data_dir,
                         "holds other data than the run was trained on (" + s.data_dir +
                             ": its fingerprint differs from the checkpoint's); give the run's data with --data-dir");
      p.model = ck ? checkpoint_model(s, *ck, s.out + "/checkpoint.h5", data.train)
                             : make_model(s, data.train.dim(), data.train.classes,
                                          MapShape{data.train.channels, data.train.height, data.train.width});
      const Model& model = p.model;
      set_time_constants(s, model.net);
      // Before anything of the run's size is allocated: refused with the estimate, naming the flag.
      check_memory(train_memory(model.net, s.train, data.train.n, data.test.n, s.precision == "double" ? 8 : 4),
                   static_cast<double>(data.train.images.size() + data.test.images.size()), "--train-limit");
      // Checked before anything in the directory changes: a refused resume leaves the run as it was.
      p.history = ck ? resumed_history(s, model.net, *ck) : std::vector<EpochRecord>{};
      if (ck && ck->mid_epoch) {  // its place must be one of this run's batches
        const Index B = s.train.batch_size, n = data.train.n;
        const long batches = static_cast<long>((n + B - 1) / B);
        if (ck->position.batch > batches || ck->position.seen != std::min<Index>(ck->position.batch * B, n))
          throw InputError(s.out + "/checkpoint.h5", "its mid-epoch position (batch " + std::to_string(ck->position.batch) +
                                                         ", " + std::to_string(ck->position.seen) +
                                                         " samples) is not a place in the run's " + std::to_string(batches) +
                                                         " batches of " + std::to_string(B));
      }
      // A resume with nothing left to train (--epochs at or below the finished ones) changes nothing.
    });
    const RunSetup& s = p.s;
    const bool writer = team.rank() == 0;
    if (team.size() > 1) {  // the chunks and the sums assume one configuration and one dataset on every rank
      const std::string mine = s.config.dump() + "|" + std::to_string(s.train.threads) + "|" + p.fingerprint;
      const std::uint64_t h = hash_bytes(mine.data(), mine.size(), kHashSeed);
      std::vector<std::uint64_t> all(static_cast<std::size_t>(team.size()));
      team.allgather(&h, sizeof h, all.data());
      for (int r = 1; r < team.size(); ++r)
        if (all[static_cast<std::size_t>(r)] != all[0])
          throw InputError("mpirun", "rank " + std::to_string(r) + " has another configuration, thread count or "
                                     "dataset than rank 0 (every rank must run the same command on the same data)");
    }
    // Only now, with every rank ready: a refused resume leaves the run as it was.
    if (writer && (!p.ck || s.train.epochs > p.ck->epoch))
      write_text_atomic(s.out + "/config.json", s.config.dump(2) + "\n");
    nlohmann::json out;
    // The ranks leave together: none ends (and lets mpirun end the job) while rank 0 still writes.
    const auto together = [&] {
      int token = 0;
      std::vector<int> all(static_cast<std::size_t>(team.size()));
      if (team.size() > 1) team.allgather(&token, sizeof token, all.data());
    };
    try {
      out = s.precision == "double"
                ? train<double>(p.s, p.data, p.model, p.ck.get(), p.history, p.fingerprint, *quiet || !writer, p.dir)
                : train<float>(p.s, p.data, p.model, p.ck.get(), p.history, p.fingerprint, *quiet || !writer, p.dir);
    } catch (const InputError&) {
      // Refusals inside training follow from what every rank shares (the summed statistics, the
      // same parameters): every rank throws the same one, and rank 0 prints it.
      together();
      if (!writer) throw QuietExit(2);
      throw;
    }
    together();
    if (!writer) {
      if (out.contains("stopped")) throw QuietExit(kExitStopped);
      return;
    }
    print_json(out);
    if (out.contains("stopped"))
      throw RunStopped("hepsim train: stopped by " + out["stopped"]["signal"].get<std::string>() + " after batch " +
                       std::to_string(out["stopped"]["batch"].get<long>()) + " of epoch " +
                       std::to_string(out["stopped"]["epoch"].get<long>()) + "; checkpoint written: continue with " +
                       "hepsim train --resume " + s.out);
  });
}

void register_eval(CLI::App& app) {
  auto checkpoint = std::make_shared<std::string>();
  auto dataset = std::make_shared<std::string>();
  auto data_dir = std::make_shared<std::string>();
  auto test_limit = std::make_shared<std::string>();
  auto threads = std::make_shared<std::string>();
  // The free phase of the evaluation: the run's, or another budget, tolerance or solver (e.g. a
  // network whose run stopped its free phases short of equilibrium, read out at equilibrium).
  auto relaxation = std::make_shared<std::map<std::string, std::string>>();
  CLI::App* cmd = app.add_subcommand("eval", "Evaluate a checkpoint on a test set");
  cmd->add_option("--checkpoint", *checkpoint, "checkpoint.h5 of a run")->required();
  cmd->add_option("--dataset", *dataset, "Dataset (default: the run's)");
  cmd->add_option("--data-dir", *data_dir, "Dataset directory (default: the run's)");
  cmd->add_option("--test-limit", *test_limit, "Evaluate the first n test samples (0 = all)");
  cmd->add_option("--threads", *threads, "Threads (0 = all cores)");
  for (const auto& [key, what] : {std::pair<std::string, std::string>{"T1", "Free-phase steps (default: the run's T1)"},
                                  {"tol", "Free-phase residual tolerance (default: the run's; 0: fixed steps)"},
                                  {"solver", "map, rk4, dopri5 or anderson (default: the run's)"},
                                  {"dt", "The solver's time step (default: the run's; with another --solver, that "
                                         "solver's default)"}})
    cmd->add_option("--" + key, (*relaxation)[key], what);
  cmd->callback([cmd, checkpoint, dataset, data_dir, test_limit, threads, relaxation] {
    if (checkpoint->empty()) throw InputError("--checkpoint", "must name a checkpoint file");
    const Checkpoint ck = read_checkpoint(*checkpoint);
    ConfigBuilder b;
    b.merge(ck.config, *checkpoint);
    if (cmd->count("--dataset") > 0) {
      b.set_flag("dataset", *dataset);
      if (cmd->count("--data-dir") == 0) b.set_flag("data-dir", "");  // the new dataset's standard place
    }
    if (cmd->count("--data-dir") > 0) b.set_flag("data-dir", *data_dir);
    b.set_flag("test-limit", cmd->count("--test-limit") > 0 ? *test_limit : "0");
    if (cmd->count("--threads") > 0) b.set_flag("threads", *threads);
    std::string changed;  // the first flag that changed the run's free phase, for messages
    for (const auto& [key, text] : *relaxation)
      if (cmd->count("--" + key) > 0) {
        b.set_flag(key, text);
        if (changed.empty()) changed = "--" + key;
      }
    // dt means the map's damping, RK4's step or Dormand–Prince's first step: another solver starts
    // from its own default rather than the run's value for the run's solver.
    if (cmd->count("--solver") > 0 && cmd->count("--dt") == 0) b.set_flag("dt", "0");
    b.set_flag("warm-start", "off");  // the evaluation never warm-starts (nor needs the tolerance it would)
    RunSetup s = make_setup(b);
    const Dataset test = load_test_split(s.kind, s.data_dir, s.test_limit);
    set_data_defaults(s);
    Model model;
    if (test.dim() != ck.input_size || test.classes != ck.classes)
      throw InputError(cmd->count("--data-dir") > 0 ? s.data_dir : "--dataset", "its images have " + std::to_string(test.dim()) + " inputs and " +
                                        std::to_string(test.classes) + " classes; the checkpoint's network expects " +
                                        std::to_string(ck.input_size) + " and " + std::to_string(ck.classes));
    model.net = checkpoint_network(ck, *checkpoint, test, cmd->count("--data-dir") > 0 ? s.data_dir : "--dataset");
    model.activation = s.activation;
    model.loss = s.loss;
    // The run's own test set (nothing named, no limit then or now): it must be the data the run
    // was trained with, wherever its directory now points.
    // (The run's fingerprint covers its first test-limit samples, or all of them; without
    // --test-limit eval reads them all.)
    const bool runs_own = cmd->count("--dataset") == 0 && cmd->count("--data-dir") == 0 &&
                          cmd->count("--test-limit") == 0;
    const std::size_t dash = ck.data_fingerprint.find('-');
    if (runs_own && dash != std::string::npos) {
      const Index limit = static_cast<Index>(ck.config.value("test-limit", 0LL));
      Dataset head = test;
      if (limit > 0 && limit < head.n) {
        head.n = limit;
        head.labels.resize(static_cast<std::size_t>(limit));
        head.images.resize(static_cast<std::size_t>(limit * head.dim()));
      }
      char hex[20];
      std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fingerprint(head)));
      if (ck.data_fingerprint.substr(dash + 1) != hex)
        throw InputError(s.data_dir, "holds another test set than the run was trained with (its fingerprint differs "
                                     "from the checkpoint's); name the data to evaluate with --data-dir");
    }
    check_parameters(ck, model.net, *checkpoint, s.precision == "float");
    set_time_constants(s, model.net);
    // Evaluation only: none of training's metrics, homeostasis probes or warm-start states (the
    // run's config may hold any, and their flags are not eval's).
    TrainConfig evaluation = s.train;
    evaluation.probe_size = 0;
    evaluation.homeostasis = 0;
    evaluation.warm_start = false;
    check_memory(eval_memory(model.net, evaluation, test.n, s.precision == "double" ? 8 : 4, *checkpoint),
                 static_cast<double>(test.images.size()), "--test-limit");
    const EvalResult r = s.precision == "double"
                             ? Trainer<double>(model, evaluation, ck.theta).evaluate(test)
                             : Trainer<float>(model, evaluation, ck.theta.cast<float>()).evaluate(test);
    // Scores of diverged (frozen) states are not the network's answers: when most samples
    // diverge, an accuracy would be reported for nothing.
    if (2 * r.diverged > r.samples && !changed.empty())
      throw InputError(changed, std::to_string(r.diverged) + " of " + std::to_string(r.samples) +
                                    " test samples diverged under the evaluation's free phase (solver " +
                                    s.config.at("solver").get<std::string>() + ", step " +
                                    nlohmann::json(s.train.free.step()).dump() + ", T1 " + s.config.at("T1").dump() +
                                    "): the run's own free phase may evaluate it");
    if (2 * r.diverged > r.samples)
      throw InputError(*checkpoint, std::to_string(r.diverged) + " of " + std::to_string(r.samples) +
                                        " test samples diverged under the run's relaxation (solver " +
                                        s.config.at("solver").get<std::string>() + ", step " +
                                        nlohmann::json(s.train.free.step()).dump() +  // shortest form: 0.5, 1e+300
                                        (s.train.free.noise.on()
                                             ? ", noise " + nlohmann::json(s.train.free.noise.sigma).dump() +
                                                   "): the run's state noise drives it away"
                                             : std::string("): its parameters have no stable fixed point there")));
    print_json({{"test_acc", r.top1}, {"test_top5", r.top5}, {"test_loss", r.loss}, {"samples", r.samples},
                {"not_converged", r.not_converged}, {"diverged", r.diverged}, {"epoch", ck.epoch},
                {"batch", ck.mid_epoch ? ck.position.batch : 0},
                {"T1", s.config.at("T1")}, {"tol", s.config.at("tol")}, {"solver", s.config.at("solver")},
                {"dt", s.config.at("dt")}});
  });
}

}  // namespace hepsim::tools
