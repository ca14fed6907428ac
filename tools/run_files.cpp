#include "tools/run_files.hpp"

#include <limits>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "datasets/h5_io.hpp"
#include "sim/error.hpp"
#include "sim/hash.hpp"
#include "tools/config.hpp"

namespace hepsim::tools {
namespace {

// An existing HDF5 file opened read-only; what = "log" or "checkpoint" for the messages.
h5::Id open_for_reading(const std::string& path, const std::string& what) {
  h5::silence_errors();
  if (!std::filesystem::exists(path)) throw InputError(path, "no such " + what + " file");
  // HDF5 needs a seekable file; opening a FIFO would wait for a writer for ever.
  if (!std::filesystem::is_regular_file(path)) throw InputError(path, "not a regular file (a " + what + " is an HDF5 file)");
  if (H5Fis_hdf5(path.c_str()) <= 0) throw InputError(path, "not an HDF5 file");
  h5::Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.valid()) throw InputError(path, "cannot open the " + what);
  return file;
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// tmp → path by rename (atomic on POSIX), then the directory entry is synced too.
void commit(const std::string& tmp, const std::string& path) {
  fsync_path(tmp);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error("cannot rename " + tmp + " to " + path);
  const auto dir = std::filesystem::path(path).parent_path();
  fsync_path(dir.empty() ? "." : dir.string());
}

// The one-line message of a failed write: the failing call's errno and, on a full filesystem,
// that fact by name (HDF5 does not always leave errno at ENOSPC).
std::string write_failure(const std::string& path, const std::string& what, int err) {
  std::string msg = path + ": cannot write " + what;
  const auto parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? "." : parent.string();
  struct statvfs vfs {};
  const bool full = err == ENOSPC || (::statvfs(dir.c_str(), &vfs) == 0 &&
                                      static_cast<double>(vfs.f_bavail) * static_cast<double>(vfs.f_frsize) < 1 << 20);
  if (full)
    msg += ": No space left on device (ENOSPC); the last finished epoch's files are intact (a new run that had "
           "not finished one keeps none): free space, then --resume (or start the new run again)";
  else if (err != 0)
    msg += std::string(": ") + std::strerror(err);
  return msg;
}

void require(bool ok, const std::string& path, const std::string& what) {
  if (!ok) throw std::runtime_error(write_failure(path, what, errno));
}

// Runs `write` (which creates `tmp`); on any failure removes the partial tmp file, so that a full
// disk keeps only the last valid files, and rethrows.
template <class F>
void write_or_clean(const std::string& tmp, F&& write) {
  try {
    write();
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

// The scalar columns of /epochs: name and accessor.
struct Column {
  const char* name;
  double EpochRecord::*field;
  bool required = true;  // false: added after logs were first written; NaN when an older log lacks it
};
constexpr Column kColumns[] = {
    {"train_loss", &EpochRecord::train_loss},   {"train_acc", &EpochRecord::train_acc},
    {"test_loss", &EpochRecord::test_loss},     {"test_acc", &EpochRecord::test_acc},
    {"test_top5", &EpochRecord::test_top5},     {"seconds", &EpochRecord::seconds},
    {"homeo_loss", &EpochRecord::homeo_loss},   {"jac_sym", &EpochRecord::jac_sym},
    {"weight_angle_deg", &EpochRecord::weight_angle_deg}, {"residual_log10", &EpochRecord::residual_log10},
    {"lr", &EpochRecord::lr},                   {"examples_per_s", &EpochRecord::examples_per_s},
    {"train_seconds", &EpochRecord::train_seconds},
    {"free_steps", &EpochRecord::free_steps, false},
};
struct IntColumn {
  const char* name;
  long EpochRecord::*field;
  bool required = true;  // false: added after logs were first written; 0 when an older log lacks it
};
constexpr IntColumn kIntColumns[] = {
    {"epoch", &EpochRecord::epoch},       {"not_converged", &EpochRecord::not_converged},
    {"diverged", &EpochRecord::diverged}, {"cycling", &EpochRecord::cycling, false},
    {"stalled", &EpochRecord::stalled, false}, {"nudged_cycling", &EpochRecord::nudged_cycling, false}};

}  // namespace

nlohmann::json TrainLog::record_json(const EpochRecord& r) const {
  nlohmann::json j;
  for (const Column& c : kColumns) j[c.name] = r.*c.field;
  for (const IntColumn& c : kIntColumns) j[c.name] = r.*c.field;
  j["cos_grad_total"] = r.cos_grad_total;
  nlohmann::json mean = nlohmann::json::object(), sd = nlohmann::json::object();
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    if (l < r.cos_delta_mean.size()) mean[layers_[l]] = r.cos_delta_mean[l];
    if (l < r.cos_delta_std.size()) sd[layers_[l]] = r.cos_delta_std[l];
  }
  j["cos_delta_mean"] = mean;
  j["cos_delta_std"] = sd;
  return j;
}

namespace {
constexpr const char* kLockName = ".hepsim.lock";

// hepsim's lock file holds the pid of the run that took it (or nothing, if it was killed between
// truncating and writing): a regular file of at most 20 digits. Anything else of that name is a
// user's file.
bool lock_is_ours(const std::filesystem::path& lock) {
  std::error_code ec;
  const auto st = std::filesystem::symlink_status(lock, ec);
  if (ec || st.type() != std::filesystem::file_type::regular) return false;
  const auto size = std::filesystem::file_size(lock, ec);
  if (ec || size > 20) return false;
  std::ifstream f(lock, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return std::all_of(text.begin(), text.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

// The files of a run directory, each replaced atomically through its .tmp twin.
constexpr const char* kRunFiles[] = {"config.json", "log.h5", "checkpoint.h5"};

// What a run killed before its first checkpoint leaves: its lock file and its config.json (a
// complete hepsim configuration), its first epoch's log, and the .tmp file of a write the kill
// interrupted. None of these without our lock beside it is known to be ours (a config.json of a
// user's, say).
bool leftover_of_unstarted_run(const std::filesystem::path& entry, bool locked) {
  const std::string name = entry.filename().string();
  if (name == kLockName) return locked;
  if (!locked) return false;
  std::error_code ec;
  const bool regular = std::filesystem::is_regular_file(std::filesystem::symlink_status(entry, ec));
  if (name == "log.h5" || name == "config.json.tmp" || name == "log.h5.tmp" || name == "checkpoint.h5.tmp")
    return regular;
  if (name != "config.json") return false;
  try {
    std::ifstream f(entry);
    const nlohmann::json j = nlohmann::json::parse(f);
    if (!j.is_object()) return false;
    for (const auto& [key, value] : train_defaults().items())  // a config.json of any version
      if (!j.contains(key) && !added_after_0_1_0(key)) return false;
    return true;
  } catch (const std::exception&) {
    return false;
  }
}
}  // namespace

bool run_is_live(const std::string& dir) {
  const std::string lock = dir + "/" + kLockName;
  const int fd = ::open(lock.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // releases the shared lock if it was taken
  return held;
}

RunDirectory::RunDirectory(std::string dir, bool resume) : dir_(std::move(dir)), resume_(resume) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string flag = resume_ ? "--resume" : "--out";
  const std::string lock = dir_ + "/" + kLockName;
  // A run that holds the directory: nothing else about it matters.
  auto take_lock = [&] {
    // Never through a symlink (it would write our pid into whatever file it names).
    lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (lock_fd_ < 0 && errno == ELOOP) throw InputError(flag, lock + " is a symlink, not hepsim's lock: remove it");
    if (lock_fd_ < 0) throw InputError(flag, "cannot create " + lock + ": " + std::strerror(errno));
    struct stat st {};
    if (::fstat(lock_fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(lock_fd_);
      lock_fd_ = -1;
      throw InputError(flag, lock + " is not a regular file, not hepsim's lock: remove it");
    }
    if (st.st_nlink > 1) {  // a hard link: writing our pid would change the other name's file
      ::close(lock_fd_);
      lock_fd_ = -1;
      throw InputError(flag, lock + " is a hard link to another file, not hepsim's lock: remove it");
    }
    if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      char pid[32] = {0};
      const ssize_t n = ::pread(lock_fd_, pid, sizeof pid - 1, 0);
      ::close(lock_fd_);
      lock_fd_ = -1;
      throw InputError(flag, dir_ + " is in use by another hepsim run" +
                                 (n > 0 ? " (process " + std::string(pid, static_cast<std::size_t>(n)) + ")"
                                        : std::string()));
    }
    const std::string me = std::to_string(::getpid());
    if (::ftruncate(lock_fd_, 0) == 0 && ::pwrite(lock_fd_, me.data(), me.size(), 0) < 0) {
      // The pid only helps the message of a second run; the lock holds without it.
    }
  };
  try {
    // Not inside another run's directory (a live one, or one that may be resumed; every run
    // leaves its lock file): a directory belongs to one run.
    fs::path self = fs::weakly_canonical(fs::absolute(dir_, ec), ec);  // symlinks resolved, no trailing '/'
    if (self.filename().empty()) self = self.parent_path();
    for (fs::path p = self.parent_path(); !p.empty(); p = p.parent_path()) {
      if (lock_is_ours(p / kLockName))
        throw InputError(flag, dir_ + " is inside the run directory " + p.string() + ": choose another " + flag);
      if (p == p.parent_path()) break;
    }
    if (fs::exists(dir_, ec)) {
      if (!fs::is_directory(dir_, ec)) throw InputError(flag, dir_ + " exists and is not a directory");
      // hepsim's own file names must be free for files: a directory or FIFO at one of them would
      // fail the first write after an epoch of work.
      for (const char* name : kRunFiles)
        for (const std::string& path : {dir_ + "/" + name, dir_ + "/" + name + ".tmp"}) {
          const auto st = fs::status(path, ec);
          const std::string advice = "remove it" + (resume_ ? std::string() : " or choose another --out");
          if (fs::exists(st) && !fs::is_regular_file(st)) throw InputError(flag, path + " is not a regular file: " + advice);
          // A stale .tmp is rewritten by the next write: through a symlink or a hard link that
          // would change a file outside this run.
          if (path.size() > 4 && path.compare(path.size() - 4, 4, ".tmp") == 0) {
            if (fs::is_symlink(fs::symlink_status(path, ec)))
              throw InputError(flag, path + " is a symlink, not a file of this run: " + advice);
            if (fs::exists(st) && fs::hard_link_count(path, ec) > 1)
              throw InputError(flag, path + " is a hard link to another file, not a file of this run: " + advice);
          }
        }
      const bool locked = fs::exists(fs::symlink_status(lock, ec));
      if (locked && !lock_is_ours(lock))
        throw InputError(flag, lock + (fs::is_symlink(fs::symlink_status(lock, ec))
                                           ? " is a symlink, not hepsim's lock: remove it"
                                           : " is not hepsim's lock (a file of that name that holds no process id): "
                                             "remove it or choose another " + flag));
      if (locked) take_lock();
      if (!resume_) {
        if (fs::exists(dir_ + "/checkpoint.h5"))
          throw InputError(flag, dir_ + " already holds a run; continue it with --resume " + dir_ +
                                     " or choose another --out");
        // Killed between the first log and checkpoint writes: beside hepsim's lock the log's one
        // epoch is ours to redo; without the lock the log is not known to be ours.
        if (fs::exists(dir_ + "/log.h5") && (!locked || !fs::is_regular_file(fs::symlink_status(dir_ + "/log.h5", ec))))
          throw InputError(flag, dir_ + " holds a log but no checkpoint (a run stopped in its first epoch); "
                                        "delete it or choose another --out");
        // Only a log of the first epoch is what a run killed before its first checkpoint leaves:
        // a longer one (its checkpoint removed) or an unreadable one is someone's record.
        if (fs::exists(dir_ + "/log.h5")) {
          const long epochs = TrainLog::last_epoch(dir_ + "/log.h5");
          if (epochs < 0 || epochs > 1)
            throw InputError(flag, dir_ + " holds a log" +
                                       (epochs < 0 ? std::string(" that is not a readable hepsim log")
                                                   : " of " + std::to_string(epochs) + " epochs") +
                                       " but no checkpoint: it is no run that stopped in its first epoch; move "
                                       "the log away or choose another --out");
        }
        // Everything is checked before anything is removed: a refused directory stays untouched.
        for (const auto& entry : fs::directory_iterator(dir_, ec))
          if (!leftover_of_unstarted_run(entry.path(), locked))
            throw InputError(flag, dir_ + " is not empty and holds no hepsim run (it has '" +
                                       entry.path().filename().string() + "'): choose another --out");
        for (const char* name : {"log.h5", "config.json.tmp", "log.h5.tmp", "checkpoint.h5.tmp"})
          fs::remove(dir_ + "/" + name, ec);
      }
    } else {
      // The directories this run creates (the leaf first), removed again if it never starts.
      // An entry that exists in any form (a dangling or looping symlink too) is not ours to remove.
      for (fs::path p = fs::absolute(dir_, ec); !p.empty() && !fs::exists(fs::symlink_status(p, ec));
           p = p.parent_path()) {
        created_.push_back(p.string());
        if (p == p.parent_path()) break;
      }
      fs::create_directories(dir_, ec);
      if (ec || !fs::is_directory(dir_)) throw InputError(flag, "cannot create directory " + dir_);
    }
    if (lock_fd_ < 0) take_lock();
  } catch (...) {
    if (created_.empty()) keep_ = true;  // refused an existing directory: touch nothing in it
    release();
    throw;
  }
}

void RunDirectory::release() {
  if (!keep_ && !resume_) {  // a new run that never wrote its first checkpoint: leave nothing behind
    std::error_code ec;
    // Its log too: a log without a checkpoint could not be resumed (the first epoch's log is
    // written before its checkpoint, and the disk may fill in between).
    for (const char* name : kRunFiles)
      for (const std::string& path : {dir_ + "/" + name, dir_ + "/" + name + ".tmp"})
        if (lock_fd_ >= 0) std::filesystem::remove(path, ec);
    if (lock_fd_ >= 0) std::filesystem::remove(dir_ + "/" + kLockName, ec);  // ours: we hold it
    for (const std::string& d : created_) std::filesystem::remove(d, ec);  // only if empty: never a user's file
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
  lock_fd_ = -1;
}

RunDirectory::~RunDirectory() { release(); }

namespace {

// Writes `size` bytes to `path` (created or truncated) and syncs them; a failure names errno.
void write_bytes_atomic(const std::string& path, const char* data, std::size_t size) {
  const std::string tmp = path + ".tmp";
  write_or_clean(tmp, [&] {
    // A fresh file, never an existing one: a stale tmp (or a symlink or hard link in its place)
    // loses its name here, and what it pointed to is not written.
    if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) throw std::runtime_error(write_failure(tmp, "the old file", errno));
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error(write_failure(tmp, "the file", errno));
    std::size_t done = 0;
    int err = 0;
    while (done < size && err == 0) {
      const ssize_t n = ::write(fd, data + done, size - done);
      if (n > 0)
        done += static_cast<std::size_t>(n);
      else if (n < 0 && errno != EINTR)
        err = errno;
    }
    if (err == 0 && ::fsync(fd) != 0) err = errno;
    if (::close(fd) != 0 && err == 0) err = errno;
    if (err != 0) throw std::runtime_error(write_failure(tmp, "the file", err));
  });
  commit(tmp, path);
}

// A file built in memory by `fill` (which writes into the open HDF5 file), then written to
// `path` atomically in one plain write.
template <class F>
void write_h5_atomic(const std::string& path, const std::string& what, F&& fill) {
  h5::silence_errors();
  std::vector<char> image;
  {
    h5::MemoryFile file;
    if (!file.valid()) throw std::runtime_error(write_failure(path, what + " (HDF5 could not create it in memory)", 0));
    fill(file.get());  // every group and dataset is closed inside `fill`
    image = file.finish();
    if (image.empty()) throw std::runtime_error(write_failure(path, what + " (HDF5 could not complete it in memory)", 0));
  }
  write_bytes_atomic(path, image.data(), image.size());
}

}  // namespace

void write_text_atomic(const std::string& path, const std::string& text) {
  write_bytes_atomic(path, text.data(), text.size());
}

TrainLog::TrainLog(std::string path, nlohmann::json config, std::vector<std::string> layers)
    : path_(std::move(path)), config_(std::move(config)), layers_(std::move(layers)) {}

void TrainLog::write() const {
  write_h5_atomic(path_, "the log", [&](hid_t file) {
    {
      require(h5::write_string_attribute(file, "config", config_.dump()), path_, "attribute config");
      require(h5::write_string_attribute(file, "layers", nlohmann::json(layers_).dump()), path_, "attribute layers");
      require(h5::write_string_attribute(file, "hepsim_version", HEPSIM_VERSION), path_, "attribute hepsim_version");
      if (!stops_.empty()) require(h5::write_string_attribute(file, "stops", stops_.dump()), path_, "attribute stops");
      h5::Id epochs = h5::create_group(file, "epochs");
      require(epochs.valid(), path_, "/epochs");
      for (const IntColumn& c : kIntColumns) {
        std::vector<std::int64_t> v;
        for (const EpochRecord& r : records_) v.push_back(r.*(c.field));
        require(h5::write_vector(epochs.get(), c.name, v), path_, std::string("/epochs/") + c.name);
      }
      for (const Column& c : kColumns) {
        std::vector<double> v;
        for (const EpochRecord& r : records_) v.push_back(r.*(c.field));
        require(h5::write_vector(epochs.get(), c.name, v), path_, std::string("/epochs/") + c.name);
      }
      h5::Id align = h5::create_group(file, "alignment");
      h5::Id mean = h5::create_group(align.get(), "cos_delta_mean");
      h5::Id sd = h5::create_group(align.get(), "cos_delta_std");
      require(align.valid() && mean.valid() && sd.valid(), path_, "/alignment");
      for (std::size_t l = 0; l < layers_.size(); ++l) {
        std::vector<double> m, s;
        for (const EpochRecord& r : records_) {
          m.push_back(l < r.cos_delta_mean.size() ? r.cos_delta_mean[l] : std::nan(""));
          s.push_back(l < r.cos_delta_std.size() ? r.cos_delta_std[l] : std::nan(""));
        }
        require(h5::write_vector(mean.get(), layers_[l].c_str(), m), path_, "/alignment/cos_delta_mean/" + layers_[l]);
        require(h5::write_vector(sd.get(), layers_[l].c_str(), s), path_, "/alignment/cos_delta_std/" + layers_[l]);
      }
      std::vector<double> g;
      for (const EpochRecord& r : records_) g.push_back(r.cos_grad_total);
      require(h5::write_vector(align.get(), "cos_grad_total", g), path_, "/alignment/cos_grad_total");
    }
  });
}

nlohmann::json TrainLog::read_stops(const std::string& path) {
  try {
    const h5::Id file = open_for_reading(path, "log");
    const nlohmann::json stops = nlohmann::json::parse(h5::read_string_attribute(file.get(), "stops"));
    if (stops.is_array()) return stops;
  } catch (const std::exception&) {  // none (an empty attribute) or unreadable: nothing to keep
  }
  return nlohmann::json::array();
}

nlohmann::json TrainLog::read_config(const std::string& path) {
  const h5::Id file = open_for_reading(path, "log");
  try {
    return nlohmann::json::parse(h5::read_string_attribute(file.get(), "config"));
  } catch (const nlohmann::json::exception&) {
    throw InputError(path, "the log has no valid config attribute");
  }
}

long TrainLog::last_epoch(const std::string& path) {
  try {
    const std::vector<EpochRecord> recs = read_records(path, std::numeric_limits<long>::max());
    return recs.empty() ? 0 : recs.back().epoch;
  } catch (const std::exception&) {
    return -1;
  }
}

std::vector<EpochRecord> TrainLog::read_records(const std::string& path, long keep_epochs) {
  const h5::Id file = open_for_reading(path, "log");
  std::vector<std::string> layers;
  try {
    layers = nlohmann::json::parse(h5::read_string_attribute(file.get(), "layers")).get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception&) {
    throw InputError(path, "the log has no valid layers attribute");
  }
  std::vector<double> epoch;
  if (!h5::read_vector(file.get(), "epochs/epoch", epoch)) throw InputError(path, "no /epochs/epoch dataset");
  std::vector<EpochRecord> recs(epoch.size());
  for (std::size_t i = 0; i < epoch.size(); ++i) recs[i].epoch = static_cast<long>(epoch[i]);
  auto column = [&](const std::string& name, std::vector<double>& v) {
    if (!h5::read_vector(file.get(), name.c_str(), v) || v.size() != recs.size())
      throw InputError(path, "dataset " + name + " is missing or has the wrong length");
  };
  std::vector<double> v;
  for (const IntColumn& c : kIntColumns) {
    if (!c.required && !h5::read_vector(file.get(), (std::string("epochs/") + c.name).c_str(), v))
      v.assign(recs.size(), 0.0);
    else
      column(std::string("epochs/") + c.name, v);
    for (std::size_t i = 0; i < recs.size(); ++i) recs[i].*(c.field) = static_cast<long>(v[i]);
  }
  for (const Column& c : kColumns) {
    if (!c.required && !h5::read_vector(file.get(), (std::string("epochs/") + c.name).c_str(), v))
      v.assign(recs.size(), std::numeric_limits<double>::quiet_NaN());
    else
      column(std::string("epochs/") + c.name, v);
    for (std::size_t i = 0; i < recs.size(); ++i) recs[i].*(c.field) = v[i];
  }
  column("alignment/cos_grad_total", v);
  for (std::size_t i = 0; i < recs.size(); ++i) recs[i].cos_grad_total = v[i];
  for (const std::string& l : layers) {
    std::vector<double> m, s;
    column("alignment/cos_delta_mean/" + l, m);
    column("alignment/cos_delta_std/" + l, s);
    for (std::size_t i = 0; i < recs.size(); ++i) {
      recs[i].cos_delta_mean.push_back(m[i]);
      recs[i].cos_delta_std.push_back(s[i]);
    }
  }
  std::vector<EpochRecord> kept;
  for (EpochRecord& r : recs)
    if (r.epoch <= keep_epochs) kept.push_back(std::move(r));
  return kept;
}

namespace {
// A double in JSON: a number (finite doubles round-trip exactly), or "nan", "inf", "-inf" (JSON
// has no such numbers: an epoch's loss sum is non-finite once a diverged sample's score is).
nlohmann::json exact(double x) {
  if (std::isfinite(x)) return x;
  return std::isnan(x) ? "nan" : x > 0 ? "inf" : "-inf";
}

double exact_value(const nlohmann::json& j) {
  if (j.is_number()) return j.get<double>();
  const std::string s = j.get<std::string>();  // throws for other types
  if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
  if (s == "inf") return HUGE_VAL;
  if (s == "-inf") return -HUGE_VAL;
  throw std::invalid_argument(s);
}

// A mid-epoch checkpoint's position as JSON and back.
nlohmann::json position_json(const EpochPosition& p) {
  return {{"epoch", p.epoch},
          {"batch", p.batch},
          {"train_seconds", p.train_seconds},
          {"seen", p.seen},
          {"loss_sum", exact(p.loss_sum)},
          {"log_residual", exact(p.log_residual)},
          {"free_steps", exact(p.free_steps)},
          {"correct", p.correct},
          {"residual_samples", p.residual_samples},
          {"not_converged", p.not_converged},
          {"diverged", p.diverged},
          {"free_diverged", p.free_diverged},
          {"cycling", p.cycling},
          {"stalled", p.stalled},
          {"nudged_cycling", p.nudged_cycling}};
}

EpochPosition read_position(const std::string& text, const std::string& path, long epoch) {
  EpochPosition p;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    const auto integer = [&](const char* key) {
      const long v = j.at(key).get<long>();
      if (!j.at(key).is_number_integer() || v < 0) throw std::invalid_argument(key);
      return v;
    };
    const auto real = [&](const char* key) { return exact_value(j.at(key)); };
    p.epoch = integer("epoch");
    p.batch = integer("batch");
    p.seen = integer("seen");
    p.correct = integer("correct");
    p.residual_samples = integer("residual_samples");
    p.not_converged = integer("not_converged");
    p.diverged = integer("diverged");
    p.free_diverged = integer("free_diverged");
    p.cycling = integer("cycling");
    p.stalled = integer("stalled");
    p.nudged_cycling = integer("nudged_cycling");
    p.train_seconds = real("train_seconds");
    p.loss_sum = real("loss_sum");
    p.log_residual = real("log_residual");
    p.free_steps = real("free_steps");
    if (!std::isfinite(p.train_seconds) || p.train_seconds < 0 || !(p.free_steps >= 0))
      throw std::invalid_argument("out of range");
  } catch (const std::exception&) {
    throw InputError(path, "its mid-epoch position is not valid");
  }
  if (p.epoch != epoch + 1 || p.batch < 1 || p.seen < p.batch || p.correct > p.seen || p.diverged > p.seen)
    throw InputError(path, "its mid-epoch position (epoch " + std::to_string(p.epoch) + ", batch " +
                               std::to_string(p.batch) + ") does not follow its epoch " + std::to_string(epoch));
  return p;
}

// The checksum of a checkpoint's θ, m and v (hex), stored beside them: a bit flipped on disk in
// the raw data (which HDF5 does not check) is found when the checkpoint is read.
std::string parameter_checksum(const Checkpoint& c) {
  std::uint64_t h = kHashSeed;
  for (const Vec<double>* v : {&c.theta, &c.m, &c.v})
    h = hash_bytes(v->data(), static_cast<std::size_t>(v->size()) * sizeof(double), hash_mix(h, static_cast<std::uint64_t>(v->size())));
  char text[20];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
  return text;
}
}  // namespace

void write_checkpoint(const std::string& path, const Checkpoint& c, const Network& net) {
  write_h5_atomic(path, "the checkpoint", [&](hid_t file) {
    {
      require(h5::write_string_attribute(file, "config", c.config.dump()) &&
                  h5::write_string_attribute(file, "architecture", c.architecture) &&
                  h5::write_string_attribute(file, "hepsim_version", HEPSIM_VERSION) &&
                  h5::write_int_attribute(file, "input_size", c.input_size) &&
                  h5::write_int_attribute(file, "classes", c.classes) &&
                  h5::write_int_attribute(file, "epoch", c.epoch) &&
                  h5::write_int_attribute(file, "optimizer_steps", c.optimizer_steps) &&
                  h5::write_string_attribute(file, "data_fingerprint", c.data_fingerprint) &&
                  h5::write_string_attribute(file, "checksum", parameter_checksum(c)) &&
                  (!c.mid_epoch || h5::write_string_attribute(file, "position", position_json(c.position).dump())),
              path, "attributes");
      auto vec = [](const Vec<double>& x) { return std::vector<double>(x.data(), x.data() + x.size()); };
      require(h5::write_vector(file, "theta", vec(c.theta)), path, "/theta");
      h5::Id opt = h5::create_group(file, "optimizer");
      require(opt.valid() && h5::write_vector(opt.get(), "m", vec(c.m)) && h5::write_vector(opt.get(), "v", vec(c.v)),
              path, "/optimizer");
      h5::Id params = h5::create_group(file, "params");
      require(params.valid(), path, "/params");
      const Vec<float> th = c.theta.cast<float>();
      for (const ParamBlock& b : net.blocks)
        require(h5::write_matrix(params.get(), b.name.c_str(), th.data() + b.offset, static_cast<std::size_t>(b.rows),
                                 static_cast<std::size_t>(b.cols)),
                path, "/params/" + b.name);
    }
  });
}

Checkpoint read_checkpoint(const std::string& path) {
  const h5::Id file = open_for_reading(path, "checkpoint");
  Checkpoint c;
  try {
    c.config = nlohmann::json::parse(h5::read_string_attribute(file.get(), "config"));
  } catch (const nlohmann::json::exception&) {
    throw InputError(path, "the checkpoint has no valid config attribute");
  }
  migrate_config(c.config, h5::read_string_attribute(file.get(), "hepsim_version"));
  c.architecture = h5::read_string_attribute(file.get(), "architecture");
  if (c.architecture.empty()) throw InputError(path, "the checkpoint has no architecture attribute");
  c.input_size = h5::read_int_attribute(file.get(), "input_size", 0);
  c.classes = h5::read_int_attribute(file.get(), "classes", 0);
  c.epoch = h5::read_int_attribute(file.get(), "epoch", -1);
  c.optimizer_steps = h5::read_int_attribute(file.get(), "optimizer_steps", -1);
  c.data_fingerprint = h5::read_string_attribute(file.get(), "data_fingerprint");
  if (c.input_size <= 0 || c.classes <= 0 || c.epoch < 0 || c.optimizer_steps < 0)
    throw InputError(path, "the checkpoint lacks input_size / classes / epoch / optimizer_steps");
  const std::string position = h5::read_string_attribute(file.get(), "position");
  if (!position.empty()) {
    c.mid_epoch = true;
    c.position = read_position(position, path, c.epoch);
  }
  auto load = [&](const char* name, Vec<double>& out) {
    // HDF5 converts integer data to double silently: parameters stored as integers are not ours.
    if (H5Lexists(file.get(), name, H5P_DEFAULT) > 0) {
      h5::Id set(H5Dopen2(file.get(), name, H5P_DEFAULT), H5Dclose);
      h5::Id type(set.valid() ? H5Dget_type(set.get()) : H5I_INVALID_HID, H5Tclose);
      if (!type.valid() || H5Tget_class(type.get()) != H5T_FLOAT)
        throw InputError(path, std::string("/") + name + " is not a floating-point dataset");
    }
    std::vector<double> v;
    if (!h5::read_vector(file.get(), name, v)) throw InputError(path, std::string("no dataset /") + name);
    out = Eigen::Map<const Vec<double>>(v.data(), static_cast<Index>(v.size()));
    if (!out.allFinite()) throw InputError(path, std::string("/") + name + " holds non-finite values");
  };
  load("theta", c.theta);
  load("optimizer/m", c.m);
  load("optimizer/v", c.v);
  // Checkpoints of 0.2.0 and later carry the checksum of their parameters.
  const std::string checksum = h5::read_string_attribute(file.get(), "checksum");
  if (!checksum.empty() && checksum != parameter_checksum(c))
    throw InputError(path, "its parameters do not match their checksum: the file is corrupt");
  return c;
}

}  // namespace hepsim::tools
