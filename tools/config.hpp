#pragma once
// The training configuration of `hepsim train` (SPEC 9): one table of keys with defaults. A JSON
// --config file may set any key; flags (the same names with "--") override it; unknown keys and
// wrongly typed or non-finite values are InputErrors naming the file or flag. The effective
// configuration is a JSON object written to DIR/config.json and into the log and the checkpoint.
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "datasets/dataset.hpp"
#include "ep/train.hpp"

namespace CLI {
class App;
}

namespace hepsim::tools {

// Every key with its default value (the type of the default is the key's type).
const nlohmann::json& train_defaults();

// The inclusive range of every integer key, checked in make_setup before any narrowing.
const std::map<std::string, std::pair<long long, long long>>& integer_bounds();

// A configuration written by hepsim 0.1.0, in today's terms. Its "dt" was only the ODE solvers'
// step (0.5 unless set): since 0.2.0 it also damps the map and Anderson, so for those it becomes
// 0 (their plain step). `written_by` is the version that wrote it (a checkpoint's attribute),
// or "" when unknown: then a configuration holding every key of 0.1.0 but none added since
// ("stall-window") is taken for a 0.1.0 config.json. Anything else is left as it is.
// Keys that hepsim 0.1.0's configurations do not have (they take their defaults).
bool added_after_0_1_0(const std::string& key);

void migrate_config(nlohmann::json& config, const std::string& written_by);

// Collects a configuration from defaults, a base object (a --config file or a resumed run's
// config.json) and command-line flags, remembering where each value came from.
class ConfigBuilder {
 public:
  ConfigBuilder();
  // Merges a JSON object; `where` names its source (a file path). Unknown keys are errors.
  void merge(const nlohmann::json& obj, const std::string& where);
  void merge_file(const std::string& path);
  // Sets one key from a flag's text, converted to the key's type ("--lr", "0.01").
  void set_flag(const std::string& key, const std::string& text);
  const nlohmann::json& json() const { return cfg_; }
  // Where a key's value came from, for messages: "--lr" (a flag or the default), "run.json: lr".
  std::string where(const std::string& key) const;
  // True when a file or flag set `key` (not the default).
  bool given(const std::string& key) const { return source_.count(key) > 0; }
  // Replaces a default (e.g. the activation a built-in architecture is meant for); not "given".
  void set_default(const std::string& key, const nlohmann::json& value) { cfg_[key] = value; }

 private:
  nlohmann::json cfg_;
  std::map<std::string, std::string> source_;
};

// Registers one string option per key on `cmd`; after parsing, apply_flags copies those given.
struct FlagTable {
  std::map<std::string, std::string> values;
  void add_to(CLI::App& cmd);
  void apply(CLI::App& cmd, ConfigBuilder& b) const;
};

// When a run writes mid-epoch checkpoints (the key "checkpoint-every"): after `seconds` of wall
// time or `steps` training steps since the last checkpoint; neither: at epoch ends only ("off").
struct CheckpointEvery {
  double seconds = 0;
  long steps = 0;
};
// "90s", "30m", "2h", "500steps" or "off"; InputError naming `where` otherwise.
CheckpointEvery parse_checkpoint_every(const std::string& text, const std::string& where = "--checkpoint-every");

// Everything a run needs, validated.
struct RunSetup {
  nlohmann::json config;
  DatasetKind kind = DatasetKind::fmnist;
  std::string data_dir;
  Index train_limit = 0, test_limit = 0;
  std::string arch;
  std::string arch_source = "--arch";  // where `arch` was given ("run.json: arch"), for messages
  double angle = 90;
  Activation activation = Activation::sigmoid;
  Loss loss = Loss::cross_entropy;
  std::string precision = "float";
  std::string out;
  CheckpointEvery checkpoint_every;
  TrainConfig train;  // norm/augment are filled by `load_data`; the time constants by set_time_constants
  std::vector<std::pair<std::string, double>> tau;  // the "tau" key: per-layer time constants
  std::string tau_source = "--tau";
};
RunSetup make_setup(const ConfigBuilder& b);

// Fills the normalisation and augmentation of setup.train from the dataset kind (for h5 files,
// the kind they were converted from) and the "augment" key.
void set_data_defaults(RunSetup& setup);
// Loads the run's dataset splits and calls set_data_defaults.
DatasetSplits load_data(RunSetup& setup);

// The per-neuron rates of the "tau" key for the run's network (InputError naming the key).
void set_time_constants(RunSetup& s, const Network& net);

// The model of a run for a dataset of the given input size and classes.
Model make_model(const RunSetup& setup, Index input_size, Index classes, MapShape image = {0, 0, 0});

}  // namespace hepsim::tools
