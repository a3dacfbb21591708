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

bool parse_ipv4(Str text, uint32_t& address) {
    uint32_t result = 0;
    for (int part = 0; part < 4; ++part) {
        uint64_t value;
        if (!parse_number(text, value) || value > 255) return false;
        result = result << 8 | static_cast<uint32_t>(value);
        if (part < 3) {
            if (text.empty() || text.data[0] != '.') return false;
            text = Str{text.data + 1, text.size - 1};
        }
    }
    address = result;
    return text.empty();
}

bool parse_number(Str& text, uint64_t& value) {
    unsigned base = 10;
    size_t i = 0;
    if (text.size > 2 && text.data[0] == '0' && (text.data[1] == 'x' || text.data[1] == 'X')) {
        base = 16;
        i = 2;
    }
    size_t first_digit = i;
    uint64_t result = 0;
    for (; i < text.size; ++i) {
        char c = text.data[i];
        unsigned digit;
        if (c >= '0' && c <= '9') digit = static_cast<unsigned>(c - '0');
        else if (base == 16 && c >= 'a' && c <= 'f') digit = static_cast<unsigned>(c - 'a' + 10);
        else if (base == 16 && c >= 'A' && c <= 'F') digit = static_cast<unsigned>(c - 'A' + 10);
        else break;
        result = result * base + digit;
    }
    if (i == first_digit) return false;
    value = result;
    text = Str{text.data + i, text.size - i};
    return true;
}

bool cmdline_hex(const char* cmdline, const char* key, uint64_t& value) {
    Str text;
    return cmdline_value(cmdline, key, text) && parse_number(text, value) && text.empty();
}

bool cmdline_flag(const char* cmdline, const char* key) {
    Str text;
    return cmdline_value(cmdline, key, text) && text.equals("1");
}

}  // namespace guest
