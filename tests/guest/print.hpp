// printf-style output to COM1. Conversions: %s %c %d %u %x %p with flags '0', a width and the
// length modifiers l, ll, z; %.*s prints a counted string.
#pragma once

#include <stdarg.h>
#include <stddef.h>

namespace guest {

void print(const char* format, ...) __attribute__((format(printf, 1, 2)));
void vprint(const char* format, va_list arguments);
// Formats into a buffer (always terminated); returns the length written.
size_t format_to(char* buffer, size_t capacity, const char* format, ...) __attribute__((format(printf, 3, 4)));

}  // namespace guest
