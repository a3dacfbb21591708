#include "checks.hpp"

#include <stdarg.h>

#include "print.hpp"

namespace guest {
namespace {

uint32_t passed;
uint32_t failed;

void report(const char* name, const char* verdict, const char* detail_format, va_list arguments) {
    print("CHECK %s %s", name, verdict);
    if (detail_format[0] != '\0') {
        print(" ");
        vprint(detail_format, arguments);
    }
    print("\n");
}

}  // namespace

void check_ok(const char* name, const char* detail_format, ...) {
    ++passed;
    va_list arguments;
    va_start(arguments, detail_format);
    report(name, "ok", detail_format, arguments);
    va_end(arguments);
}

void check_fail(const char* name, const char* detail_format, ...) {
    ++failed;
    va_list arguments;
    va_start(arguments, detail_format);
    report(name, "FAIL", detail_format, arguments);
    va_end(arguments);
}

uint32_t checks_passed() { return passed; }
uint32_t checks_failed() { return failed; }

}  // namespace guest
