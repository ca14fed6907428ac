#include "tools/cli.hpp"
#include "tools/signals.hpp"
#include "ep/parallel/mpi_team.hpp"
#include "sim/blocking.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <sstream>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <charconv>
#include <filesystem>
#include <cstdio>
#include <limits>
#include <iostream>
#include <new>
#include <stdexcept>
#include <string>
#include <omp.h>
#include <unistd.h>

namespace hepsim::tools {

long long parse_integer(const std::string& text, const std::string& flag, long long lo, long long hi) {
  long long v = 0;
  const char* end = text.data() + text.size();
  const auto [p, ec] = std::from_chars(text.data(), end, v);  // decimal only; no '+', spaces or hex
  const std::string range = "between " + std::to_string(lo) + " and " + std::to_string(hi);
  if (text.empty() || p != end || (ec != std::errc() && ec != std::errc::result_out_of_range))
    throw InputError(flag, "must be an integer " + range + " (got '" + text + "')");
  if (ec == std::errc::result_out_of_range || v < lo || v > hi)
    throw InputError(flag, "must be " + range + " (got " + text + ")");
  return v;
}

int set_threads(int threads) {
  // libgomp aborts with its own message when it cannot create the threads (each reserves a stack:
  // 1024 of them failed under an 8 GB address-space limit); 256 is far beyond any core count this
  // runs on and still reproduces a run made with that many threads.
  if (threads < 0 || threads > kMaxThreads)
    throw InputError("--threads", "must be between 0 (all cores) and " + std::to_string(kMaxThreads));
  const int procs = omp_get_num_procs();
  const int n = threads == 0 ? procs : threads;
  omp_set_num_threads(n);
  // hepsim's own chunks follow n (results depend on the chunking, not on the cores); Eigen's
  // internal parallel products (the metrics' dense solves) never get more threads than cores:
  // oversubscribed, their spinning teams slowed a run of 8 threads on 2 cores 30-fold.
  Eigen::setNbThreads(std::min(n, procs));
  return n;
}

namespace {
// Plain decimal notation: an optional '-', digits with at most one '.' (a digit on at least one
// side), an optional exponent e/E[sign]digits. No spaces, '+', hex floats, inf or nan (std::stod
// takes all of those).
bool decimal_syntax(const std::string& t) {
  std::size_t i = 0;
  const auto digits = [&] {
    const std::size_t from = i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
    return i - from;
  };
  if (i < t.size() && t[i] == '-') ++i;
  std::size_t mantissa = digits();
  if (i < t.size() && t[i] == '.') {
    ++i;
    mantissa += digits();
  }
  if (mantissa == 0) return false;
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    if (digits() == 0) return false;
  }
  return i == t.size();
}
}  // namespace

double parse_real(const std::string& text, const std::string& flag) {
  if (!decimal_syntax(text))
    throw InputError(flag, "'" + text + "' is not a decimal number (digits, '.', e: no spaces, '+' or hex)");
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::out_of_range&) {
    throw InputError(flag, "'" + text + "' is outside the range of double precision");
  } catch (const std::exception&) {
    throw InputError(flag, "'" + text + "' is not a number");
  }
  if (used != text.size()) throw InputError(flag, "'" + text + "' is not a number");
  if (!std::isfinite(v)) throw InputError(flag, "must be a finite number");
  return v;
}

std::uint64_t parse_seed(const std::string& text, const std::string& flag) {
  // The range of "seed" in train's configuration (a JSON integer read as signed): one range everywhere.
  return static_cast<std::uint64_t>(parse_integer(text, flag, 0, std::numeric_limits<long long>::max()));
}

double require_angle(double degrees, const std::string& flag) {
  if (!(degrees >= 0 && degrees <= 180)) throw InputError(flag, "must be between 0 and 180 degrees");
  return degrees;
}

TestSamples load_test_samples(const std::string& dataset, const std::string& data_dir, long samples,
                              const std::string& count_flag) {
  const DatasetKind kind = parse_dataset_kind(dataset);
  const std::string dir = data_dir.empty() ? default_data_dir(kind) : data_dir;
  if (dir.empty()) throw InputError("--data-dir", std::string("required for dataset ") + to_string(kind));
  // An HDF5 file converted from a known dataset is normalised like it (train does the same); a
  // name that claims another source than the images' channel count is refused here too.
  TestSamples t{kind, load_test_split(kind, dir, samples),
                kind == DatasetKind::h5 ? h5_source_kind(dir + "/test.h5") : kind};
  if (t.test.n < samples)
    throw InputError(count_flag, "the test set has only " + std::to_string(t.test.n) + " samples");
  return t;
}

namespace {
// After writing to std::cout (errno cleared before): "" when it was written, else one line's
// reason (a full disk names ENOSPC).
std::string stdout_failure(const std::string& what) {
  const int err = errno;
  std::cout.flush();
  if (std::cout.good()) return {};
  std::cout.clear();
  return "standard output: cannot write " + what +
         (err == ENOSPC ? ": No space left on device (ENOSPC)" : err != 0 ? std::string(": ") + std::strerror(err) : "");
}
}  // namespace

void print_json(const nlohmann::json& j) {
  if (const CommandHooks* hooks = command_hooks(); hooks && hooks->result) {
    *hooks->result = j;
    return;
  }
  // The result is the output: a write that fails (a full disk) is an error, not exit 0.
  errno = 0;
  std::cout << j.dump() << std::endl;
  if (const std::string failure = stdout_failure("the result"); !failure.empty()) throw std::runtime_error(failure);
}

double machine_memory() {
  const double physical = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGESIZE));
  // HEPSIM_MEMORY_LIMIT (bytes, or with a K, M or G suffix): a smaller budget than the physical
  // memory, for a machine shared with other work.
  const char* limit = std::getenv("HEPSIM_MEMORY_LIMIT");
  if (limit == nullptr) return physical;
  const std::string text = limit;
  std::size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  const std::string suffix = text.substr(digits);
  const double unit = suffix.empty() ? 1 : suffix == "K" ? 1e3 : suffix == "M" ? 1e6 : suffix == "G" ? 1e9 : -1;
  if (digits == 0 || digits > 15 || unit < 0)
    throw InputError("HEPSIM_MEMORY_LIMIT", "must be a number of bytes, optionally with K, M or G (e.g. 8G), not '" +
                                                text + "'");
  return std::min(physical, std::stod(text.substr(0, digits)) * unit);
}

namespace {
// The process's resident memory now (the program, its libraries, the loaded data), or -1.
double resident_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return -1;
  long size = 0, resident = 0;
  const bool ok = std::fscanf(f, "%ld %ld", &size, &resident) == 2;
  std::fclose(f);
  return ok ? static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)) : -1;
}
}  // namespace

void check_memory(const std::vector<MemoryPart>& parts, double already, const std::string& already_where) {
  // What the process holds already counts too (the program alone is about 13 MB): the loaded data
  // are in it; without /proc, the data and a program's size.
  constexpr double kProgramBytes = 16e6;
  const double resident = resident_bytes();
  const double held = resident >= 0 ? std::max(resident, already) : already + kProgramBytes;
  double total = held;
  const MemoryPart* largest = nullptr;
  for (const MemoryPart& p : parts) {
    total += p.bytes;
    if (!largest || p.bytes > largest->bytes) largest = &p;
  }
  // The loaded data, when they are the largest part (blamed on what sets their size; the program's
  // own resident memory is no one's flag).
  const MemoryPart data{"the loaded data", already_where, already};
  if (!already_where.empty() && already > 0 && (!largest || already > largest->bytes)) largest = &data;
  const double have = machine_memory();
  if (total <= have || !largest) return;
  auto size = [](double bytes) {  // GB, or MB below one
    char text[32];
    std::snprintf(text, sizeof text, bytes >= 1e9 ? "%.1f GB" : "%.0f MB", bytes >= 1e9 ? bytes / 1e9 : bytes / 1e6);
    return std::string(text);
  };
  throw InputError(largest->where, "the run needs about " + size(total) + ", more than this machine's " + size(have) +
                                       (std::getenv("HEPSIM_MEMORY_LIMIT") ? " (HEPSIM_MEMORY_LIMIT)" : "") +
                                       "; the largest part is " + largest->what + " (" + size(largest->bytes) + ")");
}

void check_network_memory(const Network& net, double columns, const std::string& columns_flag,
                          std::vector<MemoryPart> extra) {
  extra.push_back({"the parameters (" + std::to_string(net.n_params) + ")", "--arch", 4.0 * 8 * static_cast<double>(net.n_params)});
  extra.push_back({"the relaxing states (" + std::to_string(static_cast<long long>(columns)) + " columns of " +
                       std::to_string(net.neurons) + " neurons)",
                   columns_flag, 16.0 * 16 * static_cast<double>(net.neurons) * columns});
  extra.push_back({"the convolutions' im2col buffers", "--arch", omp_get_max_threads() * conv_work_bytes(net, 16)});
  check_memory(extra, 0);  // the loaded data (jacobian, gradcheck: a batch) are in the resident memory
}

namespace {
constexpr RelaxStatus kStatuses[] = {RelaxStatus::converged, RelaxStatus::max_steps, RelaxStatus::diverged,
                                     RelaxStatus::cycling, RelaxStatus::stalled};

long count_status(const std::vector<RelaxStatus>& status, RelaxStatus s) {
  return static_cast<long>(std::count(status.begin(), status.end(), s));
}
}  // namespace

CLI::Option* add_real(CLI::App* cmd, const std::string& flag, double& target, const std::string& help) {
  std::ostringstream shown;
  shown << target;
  return cmd
      ->add_option_function<std::string>(
          flag, [&target, flag](const std::string& text) { target = parse_real(text, flag); }, help)
      ->default_str(shown.str());
}

void add_stall_window(CLI::App* cmd, double& value) {
  add_real(cmd, "--stall-window", value,
           "Time (map steps at dt 1) within which a phase must halve its residual, else it is stalled (0: never)");
}

double require_stall_window(double v, const std::string& flag) {
  if (!(v >= 0) || !std::isfinite(v)) throw InputError(flag, "must be a finite number ≥ 0 (0: never stall)");
  return v;
}

bool settled(RelaxStatus s, bool truncated) {
  return s == RelaxStatus::converged || (truncated && s == RelaxStatus::max_steps);
}

nlohmann::json status_json(const std::vector<RelaxStatus>& status, bool truncated) {
  nlohmann::json j;
  for (RelaxStatus s : kStatuses) j[to_string(s)] = count_status(status, s);
  nlohmann::json samples = nlohmann::json::array(), names = nlohmann::json::array();
  for (std::size_t i = 0; i < status.size(); ++i)
    if (!settled(status[i], truncated)) {
      samples.push_back(i);
      names.push_back(to_string(status[i]));
    }
  j["not_settled"] = {{"count", samples.size()}, {"samples", samples}, {"status", names}};
  return j;
}

std::string settle_advice(const std::vector<RelaxStatus>& status) {
  std::string advice;
  auto add = [&](const std::string& a) { advice += (advice.empty() ? "" : "; ") + a; };
  if (count_status(status, RelaxStatus::cycling) > 0)
    add("cycling samples settle with a damped map (--dt 0.5) or an ODE solver (--solver dopri5)");
  if (count_status(status, RelaxStatus::stalled) > 0)
    add("stalled samples need a longer --stall-window (the time in which the residual must halve), a larger --tol, "
        "another --solver or, in float, --precision double");
  if (count_status(status, RelaxStatus::max_steps) > 0) add("a larger --max-steps or --solver anderson");
  if (count_status(status, RelaxStatus::diverged) > 0) add("diverged samples need a smaller --dt or another --solver");
  return advice;
}

void check_settled(const std::string& command, const std::vector<RelaxStatus>& status, const std::string& phase,
                   const std::string& consequence, bool truncated) {
  const long n = static_cast<long>(status.size());
  const long good = static_cast<long>(std::count_if(status.begin(), status.end(), [&](RelaxStatus s) { return settled(s, truncated); }));
  if (good == n) return;
  std::string counts, list;
  for (RelaxStatus s : kStatuses)
    if (!settled(s, truncated) && count_status(status, s) > 0)
      counts += (counts.empty() ? "" : ", ") + std::to_string(count_status(status, s)) + " " + to_string(s);
  if (2 * good < n) {
    const bool budget = count_status(status, RelaxStatus::max_steps) == n - good;
    const bool stalled = count_status(status, RelaxStatus::stalled) == n - good;  // ended by the stall test
    throw InputError(budget ? "--max-steps" : stalled ? "--tol/--stall-window" : "--dt/--solver",
                     "only " + std::to_string(good) + " of " + std::to_string(n) + " samples settled in " + phase +
                         " (" + counts + "): " + settle_advice(status));
  }
  for (std::size_t i = 0; i < status.size(); ++i) {
    if (settled(status[i], truncated)) continue;
    if (list.size() > 200) {
      list += ", …";
      break;
    }
    list += (list.empty() ? "" : ", ") + std::to_string(i) + " (" + to_string(status[i]) + ")";
  }
  std::fprintf(stderr, "hepsim %s: %ld of %ld samples did not settle in %s and %s: %s; %s\n", command.c_str(),
               n - good, n, phase.c_str(), consequence.c_str(), list.c_str(), settle_advice(status).c_str());
}

namespace {
// "rank 1: " before a failure of one rank of several ("" in one process).
std::string rank_prefix(const Team& team) {
  return team.size() > 1 ? "rank " + std::to_string(team.rank()) + " of " + std::to_string(team.size()) + ": " : "";
}

// The exit code of a command whose output is the text it printed (--help, --version): 1 with one
// line when that text could not be written (a full disk), as for the JSON results.
int printed(int code) {  // errno: as the printing left it
  const std::string failure = stdout_failure("the text");
  if (failure.empty()) return code;
  std::fprintf(stderr, "hepsim: error: %s\n", failure.c_str());
  return 1;
}
}  // namespace

namespace {
const Team* g_team = nullptr;
bool g_agreed = false;

// The program on this rank. `unexpected` is set for failures that are this rank's alone (not bad
// input that every rank sees): under MPI they end the whole job.
int run_app(int argc, char** argv, const Team& team, bool& unexpected);
}  // namespace

const Team& launch_team() { return g_team ? *g_team : solo_team(); }

void failure_is_agreed() { g_agreed = true; }

int run(int argc, char** argv) {
  fix_product_blocking();
  std::unique_ptr<MpiSession> mpi;
  try {
    mpi = std::make_unique<MpiSession>();
  } catch (const std::exception& e) {
    std::cerr << "hepsim: error: " << e.what() << "\n";
    return 1;
  }
  g_team = &mpi->team();
  bool unexpected = false;
  const int code = run_app(argc, argv, *g_team, unexpected);
  // A failure of this rank alone: the other ranks would wait for it (an agreed one ends them all).
  if (unexpected && !g_agreed && g_team->size() > 1) g_team->abort(code);
  g_team = nullptr;
  return code;
}

namespace {
// The application with every subcommand registered.
void register_all(CLI::App& app) {
  app.set_version_flag("--version", std::string("hepsim ") + HEPSIM_VERSION);
  app.require_subcommand(1);
  register_relax(app);
  register_jacobian(app);
  register_gradcheck(app);
  register_train(app);
  register_eval(app);
  register_bench(app);
}
constexpr const char* kAppTitle = "hepsim: equilibrium propagation on simulated neuromorphic and analog substrates";

// The subcommand `name` of `app`; InputError naming it when there is none.
const CLI::App* require_subcommand(const CLI::App& app, const std::string& name) {
  std::string names;
  for (const CLI::App* sub : app.get_subcommands({})) {
    if (sub->get_name() == name) return sub;
    names += (names.empty() ? "" : ", ") + sub->get_name();
  }
  throw InputError(name, "unknown subcommand (expected one of: " + names + ")");
}

// One line: CLI11's messages may span several.
std::string one_line(std::string msg) {
  for (auto& c : msg)
    if (c == '\n') c = ' ';
  return msg;
}

int run_app(int argc, char** argv, const Team& team, bool& unexpected) {
  // What every rank sees alike (flags, --help) is printed by rank 0 alone.
  // (A build without MPI under mpirun: every process is a team of one; the launcher's rank 0 speaks.)
  const bool speaker = team.rank() == 0 && (mpi_available() || launched_rank() == 0);
  CLI::App app{kAppTitle};
  register_all(app);
  try {
    if (!mpi_available() && launched_by_mpi() && launched_ranks() > 1)
      throw InputError("mpirun", "this hepsim was built without MPI (HEPSIM_MPI off or MPI not found when it was "
                                 "configured): install it with tools/deps.sh and rebuild, or run without mpirun");
    if (team.size() > 1 && (argc < 2 || std::string(argv[1]) != "train"))
      throw InputError("mpirun", "only hepsim train runs on several ranks (the other subcommands use one process)");
    if (argc > 1 && argv[1][0] != '-') require_subcommand(app, argv[1]);
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    errno = 0;
    return speaker ? printed(app.exit(e)) : 0;
  } catch (const CLI::CallForAllHelp& e) {
    errno = 0;
    return speaker ? printed(app.exit(e)) : 0;
  } catch (const CLI::CallForVersion& e) {
    errno = 0;
    return speaker ? printed(app.exit(e)) : 0;
  } catch (const CLI::ParseError& e) {
    // One line naming the flag (CLI11's messages do), exit 2.
    if (speaker) std::cerr << "hepsim: " << one_line(e.what()) << "\n";
    return 2;
  } catch (const QuietExit& e) {
    return e.code;
  } catch (const InputError& e) {
    // Thrown before the command (every rank alike: rank 0 prints it) or agreed by the ranks
    // (printed by the one that found it).
    if (speaker || e.where() != "mpirun") std::cerr << e.what() << "\n";
    return 2;
  } catch (const RunStopped& e) {
    std::cerr << e.what() << "\n";
    return kExitStopped;
  } catch (const std::filesystem::filesystem_error& e) {
    const bool users = is_users_path_error(e);
    const std::string path = e.path1().empty() ? std::string("hepsim") : e.path1().string();
    std::cerr << rank_prefix(team) << InputError(path, e.code().message()).what() << "\n";
    unexpected = true;
    return users ? 2 : 1;
  } catch (const std::bad_alloc&) {
    // The sizes that scale memory are bounded where they are read, so this is a request that is
    // plausible but too big for this machine: still the input's fault, not a defect.
    std::cerr << rank_prefix(team) << "hepsim: out of memory: the requested sizes (batch, layers, probes, samples) do not fit\n";
    unexpected = true;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << rank_prefix(team) << "hepsim: error: " << e.what() << "\n";
    unexpected = true;
    return 1;
  }
  return 0;
}
}  // namespace

bool is_users_path_error(const std::filesystem::filesystem_error& e) {
  const int code = e.code().value();
  const bool input = e.code().category() == std::generic_category() || e.code().category() == std::system_category();
  return input && (code == ELOOP || code == ENOENT || code == ENOTDIR || code == EACCES || code == ENAMETOOLONG ||
                   code == EISDIR || code == EPERM);
}

namespace {
std::mutex g_command_mutex;
const CommandHooks* g_hooks = nullptr;
}  // namespace

const CommandHooks* command_hooks() { return g_hooks; }

void run_command(const std::vector<std::string>& args, const CommandHooks& hooks) {
  // A hook (on_epoch) runs on the command's thread, which holds the lock: a command from there
  // would wait for itself.
  static thread_local bool in_command = false;
  if (in_command)
    throw InputError("hepsim", "a subcommand cannot run inside another one (e.g. from train's on_epoch); the library's "
                               "functions can");
  const std::lock_guard<std::mutex> one_at_a_time(g_command_mutex);
  in_command = true;
  struct Leave {
    ~Leave() { in_command = false; }
  } leave;
  CLI::App app{kAppTitle};
  register_all(app);
  if (args.empty() || args[0].empty() || args[0][0] == '-')
    throw InputError("hepsim", "a subcommand is required");
  require_subcommand(app, args[0]);
  std::vector<std::string> words{"hepsim"};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  // The hooks, and the thread counts the command sets (--threads), for this command only,
  // whatever it throws: the host's own settings come back.
  struct Installed {
    explicit Installed(const CommandHooks& h) { g_hooks = &h; }
    ~Installed() {
      g_hooks = nullptr;
      omp_set_num_threads(omp_threads);
      Eigen::setNbThreads(eigen_threads);
    }
    int omp_threads = omp_get_max_threads(), eigen_threads = Eigen::nbThreads();
  } installed(hooks);
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::CallForHelp&) {
    throw InputError("--help", "the help of a subcommand is hepsim.help('" + args[0] + "')");
  } catch (const CLI::ParseError& e) {
    throw InputError("hepsim", one_line(e.what()));
  } catch (const QuietExit& e) {  // one process: no other rank reports anything
    throw std::runtime_error("hepsim " + args[0] + " ended with code " + std::to_string(e.code));
  }
}

bool command_flag_is_switch(const std::string& subcommand, const std::string& flag) {
  CLI::App app{kAppTitle};
  register_all(app);
  for (const CLI::Option* o : require_subcommand(app, subcommand)->get_options())
    if (o->check_lname(flag.size() > 2 ? flag.substr(2) : flag)) return o->get_expected_min() == 0;
  return false;
}

std::string command_help(const std::string& subcommand) {
  CLI::App app{kAppTitle};
  register_all(app);
  return require_subcommand(app, subcommand)->help();
}

}  // namespace hepsim::tools
