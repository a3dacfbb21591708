// Running a helper program (mkfs.ext4, mkfs.erofs) from ember.
#pragma once

#include <string>
#include <vector>

namespace ember {

// Runs a program with stdin and stdout on /dev/null; returns its exit status (-1 if it could not
// be started or died by a signal) and puts the last line of its stderr in `diagnostics`.
int run_quietly(const std::vector<std::string>& argv, std::string& diagnostics);

}  // namespace ember
