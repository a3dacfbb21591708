// Check reporting: every check prints one line `CHECK <name> ok[ detail]` or `CHECK <name> FAIL <detail>`.
#pragma once

#include <stdint.h>

namespace guest {

void check_ok(const char* name, const char* detail_format = "", ...) __attribute__((format(printf, 2, 3)));
void check_fail(const char* name, const char* detail_format, ...) __attribute__((format(printf, 2, 3)));
uint32_t checks_passed();
uint32_t checks_failed();

}  // namespace guest
