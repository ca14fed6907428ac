#pragma once
// hepsim/tools — the command-line front end: flags -> config -> library call -> output.
// Every subcommand registers itself on the CLI11 app; errors follow SPEC 9: one line on stderr
// naming the offending file or flag, exit code 2 for bad input, 1 for any other failure.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "datasets/dataset.hpp"
#include "ep/train.hpp"
#include "sim/error.hpp"
#include "sim/relax.hpp"

namespace hepsim::tools {

// Registers `hepsim relax`.
void register_relax(CLI::App& app);
// Registers `hepsim gradcheck`.
void register_gradcheck(CLI::App& app);
// Registers `hepsim train` and `hepsim eval`.
void register_train(CLI::App& app);
void register_eval(CLI::App& app);
// Registers `hepsim bench`.
void register_bench(CLI::App& app);
// Registers `hepsim jacobian`.
void register_jacobian(CLI::App& app);

// ---- subcommands run inside another program (the Python module, tools/python) ------------------
// What the host receives besides the effects of the command.
struct CommandHooks {
  nlohmann::json* result = nullptr;  // the JSON object the command prints (then not printed)
  // `hepsim train`: each epoch's record (the log's /epochs columns, cos_delta_mean/std per
  // layer) once it is logged and checkpointed; an exception thrown here ends the run there.
  std::function<void(const nlohmann::json&)> on_epoch;
};
// Runs `hepsim <args...>` (args[0] is the subcommand) in this process, one command at a time (a
// command started from a hook of another, e.g. from on_epoch, is refused: InputError).
// Nothing is printed on stdout; errors are thrown, not turned into exit codes: InputError for bad
// input (CLI11's parse errors too, with the CLI's text, "hepsim: …"), RunStopped for a run that
// stopped on a signal with its checkpoint, Interrupted (sim/interrupt.hpp) for an interrupt. When a
// command prints its result and then refuses it (e.g. too few samples settled), `result` holds it.
void run_command(const std::vector<std::string>& args, const CommandHooks& hooks);
// Whether `flag` ("--quiet") of `subcommand` is a switch taking no value (false for options with a
// value and for names the subcommand does not have: its parser reports those).
bool command_flag_is_switch(const std::string& subcommand, const std::string& flag);
// The help text of `hepsim <subcommand> --help` (InputError for an unknown subcommand).
std::string command_help(const std::string& subcommand);
// A path the user named that cannot be resolved (a symlink loop, a missing or unreadable
// directory, a name too long) is bad input; any other filesystem failure is the machine's.
bool is_users_path_error(const std::filesystem::filesystem_error& e);
// The hooks of the command running in this process through run_command (nullptr otherwise).
const CommandHooks* command_hooks();

// Runs the program; returns the process exit code. Under an MPI launcher (mpirun) MPI is
// initialised here and `hepsim train` trains data-parallel over its ranks (ep/parallel/team.hpp).
int run(int argc, char** argv);

// The processes of this launch: MPI_COMM_WORLD under mpirun, else this one alone.
const Team& launch_team();

// The failure being thrown is known to every rank (they agreed on it): no MPI_Abort for it.
void failure_is_agreed();

// Ends a rank quietly with `code`: another rank reports the reason (the same refusal, or a stop).
struct QuietExit {
  int code;
};

// Sets the number of threads used by OpenMP and Eigen (0 = all cores); returns that number.
int set_threads(int threads);

// Integers from flags and configuration values: plain decimal digits with an optional '-' (no
// '+', spaces, hex, fraction or exponent), within [lo, hi], checked before any narrowing; anything
// else is an InputError naming `flag`.
long long parse_integer(const std::string& text, const std::string& flag, long long lo, long long hi);
// A finite decimal number (the whole text); InputErrors name `flag` (malformed, out of range).
double parse_real(const std::string& text, const std::string& flag);
// An integer option read through parse_integer (CLI11 would cap 2^64 at the type's maximum and
// read "" as 0).
template <class T>
CLI::Option* add_integer(CLI::App* cmd, const std::string& flag, T& target, long long lo, long long hi,
                         const std::string& help) {
  return cmd
      ->add_option_function<std::string>(
          flag, [&target, flag, lo, hi](const std::string& text) { target = static_cast<T>(parse_integer(text, flag, lo, hi)); },
          help + " (" + std::to_string(lo) + " .. " + std::to_string(hi) + ")")
      ->default_str(std::to_string(target));
}
// A real option read through parse_real, like the train flags (CLI11 would read "" and 1e-400 as 0).
CLI::Option* add_real(CLI::App* cmd, const std::string& flag, double& target, const std::string& help);
// --threads: 0 (all cores) .. kMaxThreads.
constexpr long long kMaxThreads = 256;

// Validation helpers that throw InputError naming the flag.
// A seed given as text: a plain decimal integer from 0 to 2^64 − 1 (CLI11 2.1 reads integer flags
// with strtoull and no range check: "-1" would wrap to 2^64 − 1, "010" would be octal).
std::uint64_t parse_seed(const std::string& text, const std::string& flag = "--seed");
// SPEC 5 mixes K_fb ← sin(α) K_fb + cos(α) K_ffᵀ: α in [0, 180] degrees reaches every weight
// angle once (sin α ≥ 0); outside it a setting repeats under another name, and a typo such as
// -720 or 1e300 would silently run some other setting.
double require_angle(double degrees, const std::string& flag);

inline double require_finite(double v, const std::string& flag) {
  if (!std::isfinite(v)) throw InputError(flag, "must be a finite number");
  return v;
}
inline long require_range(long v, long lo, long hi, const std::string& flag) {
  if (v < lo || v > hi)
    throw InputError(flag, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + " (got " +
                               std::to_string(v) + ")");
  return v;
}
// Contour points of the holomorphic estimators (train --N, gradcheck --N).
constexpr int kMaxContourPoints = 64;
inline long require_positive(long v, const std::string& flag) {
  if (v <= 0) throw InputError(flag, "must be positive (got " + std::to_string(v) + ")");
  return v;
}

// The first `samples` test images of dataset `dataset` (a --dataset name) from `data_dir`
// (--data-dir; empty: the dataset's standard place). InputError naming the flag (`count_flag`
// when the test set is smaller than `samples`) or the file.
struct TestSamples {
  DatasetKind kind;
  Dataset test;
  DatasetKind source;  // kind, or for hepsim's HDF5 files the dataset they were converted from
};
TestSamples load_test_samples(const std::string& dataset, const std::string& data_dir, long samples,
                              const std::string& count_flag = "--samples");

// Prints one JSON object on stdout.
void print_json(const nlohmann::json& j);

// The machine's physical memory in bytes.
double machine_memory();
// InputError naming the largest part's flag when the parts (ep/train.hpp train_memory) plus
// what the process holds already (at least `already` bytes: the loaded dataset) exceed the
// machine's memory; the message gives the estimate.
// `already_where` (when given) names what sets the size of `already` (the loaded data), blamed
// when they are the largest part.
void check_memory(const std::vector<MemoryPart>& parts, double already, const std::string& already_where = "");
// The same for relax, jacobian and gradcheck, before θ is allocated: the parameters and their
// working copies (about four θ-sized vectors, named --arch) and `columns` relaxing state columns
// of about 16 state-sized double matrices (complex: twice; named `columns_flag`).
void check_network_memory(const Network& net, double columns, const std::string& columns_flag,
                          std::vector<MemoryPart> extra = {});

// body(i) for i = 0 … n − 1 on the OpenMP threads (dynamic schedule: the items may differ in
// cost); the first exception thrown by any item is rethrown once all have finished (an exception
// must not leave an OpenMP region).
template <class F>
void parallel_items(long n, F&& body) {
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1)
  for (long i = 0; i < n; ++i) {
    try {
      body(i);
    } catch (...) {
#pragma omp critical(hepsim_parallel_items)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

// ---- relaxations that do not settle (relax, gradcheck, jacobian) --------------------------------
// A sample settled when its phase converged; with `truncated` (a phase run for a fixed number of
// steps on purpose) also when it only ran out of steps: then only cycling, stalled and diverged
// samples did not settle.
bool settled(RelaxStatus s, bool truncated = false);
// The statuses of one phase, one per sample: a count per status (converged, max_steps, diverged,
// cycling, stalled) and not_settled = {count, samples: the indices of the samples that did not
// settle, status: their statuses}.
nlohmann::json status_json(const std::vector<RelaxStatus>& status, bool truncated = false);
// What a not-settled sample's status asks the user to change ("--dt 0.5 or --solver dopri5", …).
std::string settle_advice(const std::vector<RelaxStatus>& status);
// --stall-window (RelaxConfig::stall_window): the time (map steps at dt = 1) within which a phase
// above its tolerance must halve its residual, else it ends as stalled; 0 never ends one.
void add_stall_window(CLI::App* cmd, double& value);
double require_stall_window(double v, const std::string& flag = "--stall-window");
// InputError naming --dt/--solver (or --max-steps) when fewer than half the samples converged in
// `phase` ("the free phase"); otherwise, when some did not, one line on stderr saying which
// samples `consequence` ("are left out of the metrics").
void check_settled(const std::string& command, const std::vector<RelaxStatus>& status, const std::string& phase,
                   const std::string& consequence, bool truncated = false);

}  // namespace hepsim::tools
