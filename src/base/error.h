// Errors: every user-facing failure is a whale::Error with a one-line message that names the
// file, tensor, field or request at fault. The CLI prints it and exits 1.
#pragma once
#include <stdexcept>
#include <string>

namespace whale {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws whale::Error(message) unless condition holds.
inline void check(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

}  // namespace whale
