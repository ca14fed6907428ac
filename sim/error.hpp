#pragma once
// hepsim::InputError — the one exception type for bad input (a file, a flag, a config value).
// STYLE.md "Errors": it carries *where* the problem is (a path, a flag, a config key) and, when it
// applies, the record index; the tool prints `what()` as one line and exits with code 2.
// Numerical outcomes (no convergence, divergence) are never exceptions: they are statuses.
#include <cstdint>
#include <stdexcept>
#include <string>

namespace hepsim {

class InputError : public std::runtime_error {
 public:
  // where: the file path, flag (e.g. "--beta") or config key; record: index of the offending
  // record in a file (image, label, line), or -1 when it does not apply.
  InputError(std::string where, const std::string& message, std::int64_t record = -1)
      : std::runtime_error(format(where, message, record)), where_(std::move(where)), record_(record) {}

  const std::string& where() const noexcept { return where_; }
  std::int64_t record() const noexcept { return record_; }

 private:
  static std::string format(const std::string& where, const std::string& message, std::int64_t record) {
    std::string s = where.empty() ? std::string("input") : where;
    if (record >= 0) s += ": record " + std::to_string(record);
    return one_line(s + ": " + message);
  }
  // The message is printed as one line: control characters that came from the input (a NUL
  // would end it, a newline split it) are shown as \xNN.
  static std::string one_line(const std::string& text) {
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (unsigned char ch : text) {
      if (ch < 0x20 || ch == 0x7f) {
        out += "\\x";
        out += hex[ch >> 4];
        out += hex[ch & 15];
      } else {
        out += static_cast<char>(ch);
      }
    }
    return out;
  }
  std::string where_;
  std::int64_t record_;
};

}  // namespace hepsim
