// Setup errors: thrown while a machine is assembled, caught once in main and printed as one line.
#pragma once

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace ember {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An Error whose message ends with strerror(errno) for the failed system call.
inline Error system_error(const std::string& what, int error_number = errno) {
  return Error(what + ": " + std::strerror(error_number));
}

}  // namespace ember
