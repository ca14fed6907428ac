#pragma once
// Internal (not part of the public API; include only from .cpp files, it pulls in nlohmann/json):
// the one reader for everything a user writes as JSON — architecture files, configuration files,
// --lr-mult objects. A file is exactly one JSON value: trailing content after it (a second object,
// stray text, anything after a NUL byte), a key repeated within one object (nlohmann keeps the
// last silently) and nesting deeper than 512 levels are InputErrors naming `where` and the key, as
// are syntax errors and numbers out of range.
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sim/error.hpp"

namespace hepsim {

inline nlohmann::json parse_json_strict(const std::string& text, const std::string& where) {
  // nlohmann's lexer takes a NUL for the end of the input: what follows it would be ignored.
  if (text.find('\0') != std::string::npos)
    throw InputError(where, "contains a NUL byte (at offset " + std::to_string(text.find('\0')) + "): not a JSON text");
  constexpr int kMaxDepth = 512;  // far beyond any configuration; deep nesting exhausts the stack
  std::vector<std::set<std::string>> keys;  // the keys seen in each open object
  const auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (depth > kMaxDepth) throw InputError(where, "nested deeper than " + std::to_string(kMaxDepth) + " levels");
    switch (event) {
      case E::object_start: keys.emplace_back(); break;
      case E::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case E::key: {
        const std::string key = parsed.get<std::string>();
        if (!keys.empty() && !keys.back().insert(key).second)
          throw InputError(where, "key '" + key + "' appears twice in one object (a JSON object's keys must be unique)");
        break;
      }
      default: break;
    }
    return true;
  };
  try {
    // parse() of a whole string rejects anything but whitespace after the first value.
    return nlohmann::json::parse(text, callback);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(where, std::string("invalid JSON: ") + e.what());
  }
}

// The whole text of a small input file (an architecture, a configuration): a regular file, or a
// pipe or FIFO that delivers its data (process substitution, <(…)) — waiting at most 10 s for
// each piece, so a FIFO nobody writes to is an error instead of a hang — and at most 16 MB, so
// /dev/zero is an error instead of exhausting memory. Directories and devices are refused.
inline std::string read_small_input(const std::string& path, const std::string& what) {
  constexpr std::size_t kMaxBytes = 16u << 20;
  constexpr int kWaitMs = 10000;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw InputError(path, "cannot open " + what + ": " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw InputError(path, "is a directory, not " + what);
  const bool stream = S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode);
  if (!S_ISREG(st.st_mode) && !stream) throw InputError(path, "is a device, not " + what + " (a regular file or a pipe)");
  if (S_ISREG(st.st_mode) && static_cast<std::size_t>(st.st_size) > kMaxBytes)
    throw InputError(path, "is larger than 16 MB: not " + what);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (stream ? O_NONBLOCK : 0));
  if (fd < 0) throw InputError(path, "cannot open " + what + ": " + std::strerror(errno));
  std::string text;
  char buf[65536];
  for (;;) {
    if (stream) {
      pollfd p{fd, POLLIN, 0};
      const int ready = ::poll(&p, 1, kWaitMs);
      if (ready == 0) {
        ::close(fd);
        throw InputError(path, "no data arrived within 10 s (a FIFO nobody writes to?)");
      }
    }
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) break;  // end of file (or the writer closed its end)
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw InputError(path, "cannot read " + what + ": " + std::strerror(err));
    }
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > kMaxBytes) {
      ::close(fd);
      throw InputError(path, "is larger than 16 MB: not " + what);
    }
  }
  ::close(fd);
  return text;
}

}  // namespace hepsim
