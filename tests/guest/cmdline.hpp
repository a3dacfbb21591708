// Command line parameters: space-separated key=value words.
#pragma once

#include "base.hpp"

namespace guest {

// The value of the first `key=value` word, or false if there is none.
bool cmdline_value(const char* cmdline, const char* key, Str& value);
// A numeric parameter; false if absent or not a number.
bool cmdline_number(const char* cmdline, const char* key, uint64_t& value);
// A number written as 0x<hex> or <decimal>; false if absent or not a number.
bool cmdline_hex(const char* cmdline, const char* key, uint64_t& value);
// Parses 0x<hex> or <decimal> at the start of `text`, advancing it; false if there are no digits.
bool parse_number(Str& text, uint64_t& value);
// A dotted-quad IPv4 address ("10.0.2.2"), most significant byte first; the whole text must match.
bool parse_ipv4(Str text, uint32_t& address);
// True if `key=1` is present.
bool cmdline_flag(const char* cmdline, const char* key);

}  // namespace guest
