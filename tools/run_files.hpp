#pragma once
// The files of a training run (SPEC 9), each replaced atomically (written to NAME.tmp, synced,
// renamed) so that a run killed at any moment leaves valid files:
//
// DIR/log.h5
//   attribute  config           the effective configuration (JSON text)
//   attribute  layers           the state layers in neuron order (JSON list)
//   /epochs/   epoch (int64), train_loss, train_acc, test_loss, test_acc, test_top5, seconds,
//              homeo_loss, jac_sym, weight_angle_deg, residual_log10, not_converged (int64),
//              diverged (int64), cycling, stalled, nudged_cycling (int64), lr, examples_per_s,
//              train_seconds, free_steps — one entry per epoch
//   /alignment/cos_delta_mean/<layer>, /alignment/cos_delta_std/<layer>, /alignment/cos_grad_total
//
// DIR/checkpoint.h5
//   attributes config (JSON), architecture (JSON, sim::to_json), input_size, classes, epoch,
//              optimizer_steps, hepsim_version
//   /theta (float64, the flat parameter vector), /optimizer/m, /optimizer/v (AdamW only),
//   /params/<block> (float32 copies of every block, rows x cols, for inspection)
//   attribute  position   a mid-epoch checkpoint's place in epoch `epoch` + 1 (JSON of
//              ep::EpochPosition: batch, the epoch's sums so far, train_seconds); absent at an
//              epoch's end
//
// The log's attribute `stops` (JSON list, kept across resumes) records every run stopped by a
// signal: {"signal", "epoch", "batch", "batches", "time"}.
//
// The log is written before the checkpoint after each epoch: a run killed in between resumes
// from the previous checkpoint and replaces the log's extra epoch, so each epoch appears once.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ep/train.hpp"

namespace hepsim::tools {

class TrainLog {
 public:
  TrainLog(std::string path, nlohmann::json config, std::vector<std::string> layers);
  // The records of an existing log with epoch ≤ keep_epochs (resume). InputError if unreadable.
  static std::vector<EpochRecord> read_records(const std::string& path, long keep_epochs);
  // The configuration the log was written with (its attribute `config`). InputError if unreadable.
  static nlohmann::json read_config(const std::string& path);
  // The last epoch an existing log records (0 when none), or -1 when it is not a readable log.
  static long last_epoch(const std::string& path);

  void append(const EpochRecord& r) { records_.push_back(r); }
  const std::vector<EpochRecord>& records() const { return records_; }
  // Rewrites the whole file atomically. Throws std::runtime_error on I/O failure.
  void write() const;
  // The stops recorded in an existing log (an empty list when none or unreadable).
  static nlohmann::json read_stops(const std::string& path);
  void set_stops(nlohmann::json stops) { stops_ = std::move(stops); }
  void add_stop(const nlohmann::json& stop) { stops_.push_back(stop); }
  // An epoch's record as the log stores it: every /epochs column by its name, and cos_delta_mean
  // and cos_delta_std as {layer: value} (the log's per-layer datasets).
  nlohmann::json record_json(const EpochRecord& r) const;

 private:
  std::string path_;
  nlohmann::json config_;
  std::vector<std::string> layers_;
  std::vector<EpochRecord> records_;
  nlohmann::json stops_ = nlohmann::json::array();
};

struct Checkpoint {
  nlohmann::json config;
  std::string architecture;  // sim::to_json of the network
  Index input_size = 0, classes = 0;
  long epoch = 0;
  long optimizer_steps = 0;
  Vec<double> theta, m, v;
  // The training data's fingerprints (datasets/dataset.hpp), "train-test" in hex; "" in
  // checkpoints written before 0.2.0.
  std::string data_fingerprint;
  // A mid-epoch checkpoint: where in epoch `epoch` + 1 the run stands (position.epoch ==
  // epoch + 1, position.batch ≥ 1); an epoch-end checkpoint has none.
  bool mid_epoch = false;
  EpochPosition position;
};

void write_checkpoint(const std::string& path, const Checkpoint& c, const Network& net);
// InputError naming the file when it is missing, not HDF5, or incomplete. The configuration is
// returned in the current version's terms (a 0.1.0 map or Anderson run's "dt" becomes 0: their
// steps were never damped).
Checkpoint read_checkpoint(const std::string& path);

// Writes `text` to `path` atomically (tmp file, fsync, rename).
void write_text_atomic(const std::string& path, const std::string& text);

// The run directory of one `hepsim train`, owned for the run's lifetime:
//   - a new run needs a directory that does not exist, is empty, or holds only what a run that
//     stopped before its first epoch leaves (its own config.json, the lock file); anything else
//     (a user's files, another run's log or checkpoint) is an InputError naming --out;
//   - the run holds an exclusive lock (flock on DIR/.hepsim.lock) until it ends, so a second run
//     on the same directory is refused instead of mixing two runs' files (released by the kernel
//     even when the process is killed);
//   - a new run that fails before its first epoch is written leaves nothing behind: its
//     config.json and lock file are removed, and the directory too if the run created it.
// Whether a hepsim run holds DIR's lock now (without taking or creating it).
bool run_is_live(const std::string& dir);

class RunDirectory {
 public:
  RunDirectory(std::string dir, bool resume);
  ~RunDirectory();
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;
  // The first epoch is on disk: from now on the directory is a run and stays.
  void keep() { keep_ = true; }

 private:
  void release();  // what the destructor does (also when the constructor fails)

  std::string dir_;
  std::vector<std::string> created_;  // directories this run created, the leaf first
  bool resume_ = false, keep_ = false;
  int lock_fd_ = -1;
};

}  // namespace hepsim::tools
