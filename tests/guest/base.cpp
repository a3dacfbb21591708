// The few library functions the compiler may call, and Str.
#include "base.hpp"

extern "C" {

void* memcpy(void* destination, const void* source, size_t size) {
    auto* to = static_cast<unsigned char*>(destination);
    const auto* from = static_cast<const unsigned char*>(source);
    for (size_t i = 0; i < size; ++i) to[i] = from[i];
    return destination;
}

void* memmove(void* destination, const void* source, size_t size) {
    auto* to = static_cast<unsigned char*>(destination);
    const auto* from = static_cast<const unsigned char*>(source);
    if (to < from) {
        for (size_t i = 0; i < size; ++i) to[i] = from[i];
    } else {
        for (size_t i = size; i > 0; --i) to[i - 1] = from[i - 1];
    }
    return destination;
}

void* memset(void* destination, int value, size_t size) {
    auto* to = static_cast<unsigned char*>(destination);
    for (size_t i = 0; i < size; ++i) to[i] = static_cast<unsigned char>(value);
    return destination;
}

int memcmp(const void* left, const void* right, size_t size) {
    const auto* a = static_cast<const unsigned char*>(left);
    const auto* b = static_cast<const unsigned char*>(right);
    for (size_t i = 0; i < size; ++i) {
        if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
    }
    return 0;
}

}  // extern "C"

namespace guest {

size_t string_length(const char* text) {
    size_t length = 0;
    while (text[length] != '\0') ++length;
    return length;
}

Str make_str(const char* text) { return Str{text, text ? string_length(text) : 0}; }

bool Str::equals(const char* text) const {
    size_t length = string_length(text);
    return length == size && memcmp(data, text, size) == 0;
}

bool Str::starts_with(const char* prefix) const {
    size_t length = string_length(prefix);
    return length <= size && memcmp(data, prefix, length) == 0;
}

bool Str::to_u64(uint64_t& value) const {
    if (empty()) return false;
    uint64_t result = 0;
    for (size_t i = 0; i < size; ++i) {
        if (data[i] < '0' || data[i] > '9') return false;
        result = result * 10 + static_cast<uint64_t>(data[i] - '0');
    }
    value = result;
    return true;
}

}  // namespace guest
