// Errors thrown by the core. The binding maps `code` onto the JS MghfError codes,
// so every failure a user can cause reaches JavaScript typed, never as a crash.
#pragma once
#include <stdexcept>
#include <string>

namespace mghf {

class Error : public std::runtime_error {
 public:
  Error(std::string code, const std::string& message)
      : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

}  // namespace mghf
