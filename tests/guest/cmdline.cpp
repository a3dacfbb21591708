#include "cmdline.hpp"

namespace guest {

bool cmdline_value(const char* cmdline, const char* key, Str& value) {
    size_t key_length = string_length(key);
    const char* p = cmdline;
    while (*p != '\0') {
        while (*p == ' ') ++p;
        const char* word = p;
        while (*p != '\0' && *p != ' ') ++p;
        Str token{word, static_cast<size_t>(p - word)};
        if (token.size > key_length && token.starts_with(key) && token.data[key_length] == '=') {
            value = Str{token.data + key_length + 1, token.size - key_length - 1};
            return true;
        }
    }
    return false;
}

bool cmdline_number(const char* cmdline, const char* key, uint64_t& value) {
    Str text;
    return cmdline_value(cmdline, key, text) && text.to_u64(value);
}

bool cmdline_flag(const char* cmdline, const char* key) {
    Str text;
    return cmdline_value(cmdline, key, text) && text.equals("1");
}

}  // namespace guest
