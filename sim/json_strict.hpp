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
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sim/error.hpp"

namespace hepsim {

namespace detail {
// One SAX pass over a user's JSON text that checks what the DOM parse does not: a key repeated in
// one object, nesting deeper than kMaxDepth, and a number written with nonzero digits that lands
// below double's normal range (1e-400 reads as 0, 1e-320 as a denormal) and would silently change
// what the file says. (Not nlohmann's parser callback: its end_object scans the whole enclosing
// array, which made an architecture of 10^5 edges take minutes to read.)
struct StrictCheck : nlohmann::json_sax<nlohmann::json> {
  static constexpr int kMaxDepth = 512;  // far beyond any configuration; deep nesting exhausts the stack
  explicit StrictCheck(const std::string& w) : where(w) {}
  const std::string& where;
  std::string syntax_error;
  std::vector<std::set<std::string>> keys;  // the keys seen in each open object (none for arrays)
  std::vector<bool> is_object;              // the open containers, innermost last

  bool open(bool object) {
    if (is_object.size() >= static_cast<std::size_t>(kMaxDepth))
      throw InputError(where, "nested deeper than " + std::to_string(kMaxDepth) + " levels");
    is_object.push_back(object);
    if (object) keys.emplace_back();
    return true;
  }
  bool close() {
    if (!is_object.empty() && is_object.back()) keys.pop_back();
    if (!is_object.empty()) is_object.pop_back();
    return true;
  }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t v, const string_t& text) override {
    const std::size_t mantissa_end = text.find_first_of("eE");
    const bool nonzero = text.substr(0, mantissa_end).find_first_of("123456789") != std::string::npos;
    if (nonzero && std::abs(v) < std::numeric_limits<double>::min())
      throw InputError(where, "the number " + text + " is outside the range of double precision");
    return true;
  }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return open(true); }
  bool key(string_t& key) override {
    if (!keys.empty() && !keys.back().insert(key).second)
      throw InputError(where, "key '" + key + "' appears twice in one object (a JSON object's keys must be unique)");
    return true;
  }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(false); }
  bool end_array() override { return close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    syntax_error = e.what();
    return false;
  }
};
}  // namespace detail

inline nlohmann::json parse_json_strict(const std::string& text, const std::string& where) {
  // nlohmann's lexer takes a NUL for the end of the input: what follows it would be ignored.
  if (text.find('\0') != std::string::npos)
    throw InputError(where, "contains a NUL byte (at offset " + std::to_string(text.find('\0')) + "): not a JSON text");
  // The checks first (in the text's order, with syntax errors), then the DOM of a valid text.
  // sax_parse and parse of a whole string reject anything but whitespace after the first value.
  detail::StrictCheck check(where);
  if (!nlohmann::json::sax_parse(text, &check))
    throw InputError(where, "invalid JSON: " + check.syntax_error);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(where, std::string("invalid JSON: ") + e.what());
  }
}

// The whole text of a small input file (an architecture, a configuration): a regular file, or a
// pipe or FIFO that delivers its data (process substitution, <(…)) — within 10 s in all, so a
// FIFO nobody writes to, or a writer that never closes its end, is an error instead of a hang —
// and at most 16 MB, so /dev/zero is an error instead of exhausting memory. Directories and
// devices are refused.
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
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kWaitMs);
  for (;;) {
    if (stream) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{fd, POLLIN, 0};
      const int ready = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
      if (ready == 0) {
        ::close(fd);
        throw InputError(path, text.empty() ? "no data arrived within 10 s (a FIFO nobody writes to?)"
                                            : "did not end within 10 s (" + std::to_string(text.size()) +
                                                  " bytes arrived; a writer that never closes its end?)");
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
