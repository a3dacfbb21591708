#include "print.hpp"

#include <stdint.h>

#include "uart.hpp"

namespace guest {
namespace {

// Collects formatted text; flushes to the UART when it has no buffer of its own.
class Sink {
public:
    Sink(char* buffer, size_t capacity, bool to_uart) : buffer_(buffer), capacity_(capacity), to_uart_(to_uart) {}

    void put(char c) {
        if (to_uart_ && length_ + 1 >= capacity_) flush();
        if (length_ + 1 < capacity_) buffer_[length_++] = c;
    }

    void flush() {
        if (to_uart_) {
            uart::write(buffer_, length_);
            length_ = 0;
        }
    }

    size_t finish() {
        if (capacity_ > 0) buffer_[length_] = '\0';
        flush();
        return length_;
    }

private:
    char* buffer_;
    size_t capacity_;
    bool to_uart_;
    size_t length_ = 0;
};

// va_list is an array type on x86-64; wrapping it lets helpers take it by reference.
struct Arguments {
    va_list list;
};

struct Spec {
    bool zero_pad = false;
    int width = 0;
    int length = 0;  // number of 'l'/'z' modifiers
};

void put_number(Sink& sink, uint64_t value, unsigned base, bool negative, const Spec& spec) {
    char digits[24];
    int count = 0;
    do {
        unsigned digit = static_cast<unsigned>(value % base);
        digits[count++] = static_cast<char>(digit < 10 ? '0' + digit : 'a' + digit - 10);
        value /= base;
    } while (value != 0);
    int pad = spec.width - count - (negative ? 1 : 0);
    if (!spec.zero_pad) {
        for (; pad > 0; --pad) sink.put(' ');
    }
    if (negative) sink.put('-');
    for (; pad > 0; --pad) sink.put('0');
    while (count > 0) sink.put(digits[--count]);
}

uint64_t take_unsigned(Arguments& arguments, const Spec& spec) {
    if (spec.length >= 1) return va_arg(arguments.list, unsigned long);
    return va_arg(arguments.list, unsigned int);
}

int64_t take_signed(Arguments& arguments, const Spec& spec) {
    if (spec.length >= 1) return va_arg(arguments.list, long);
    return va_arg(arguments.list, int);
}

void format(Sink& sink, const char* format, Arguments& arguments) {
    for (const char* p = format; *p != '\0'; ++p) {
        if (*p != '%') {
            sink.put(*p);
            continue;
        }
        ++p;
        Spec spec;
        if (*p == '0') {
            spec.zero_pad = true;
            ++p;
        }
        bool precision_star = false;
        if (p[0] == '.' && p[1] == '*') {
            precision_star = true;
            p += 2;
        }
        while (*p >= '0' && *p <= '9') spec.width = spec.width * 10 + (*p++ - '0');
        while (*p == 'l' || *p == 'z') {
            ++spec.length;
            ++p;
        }
        switch (*p) {
        case 's': {
            int limit = precision_star ? va_arg(arguments.list, int) : -1;
            const char* text = va_arg(arguments.list, const char*);
            if (text == nullptr) text = "(null)";
            for (int i = 0; text[i] != '\0' && (limit < 0 || i < limit); ++i) sink.put(text[i]);
            break;
        }
        case 'c':
            sink.put(static_cast<char>(va_arg(arguments.list, int)));
            break;
        case 'd': {
            int64_t value = take_signed(arguments, spec);
            put_number(sink, value < 0 ? 0 - static_cast<uint64_t>(value) : static_cast<uint64_t>(value), 10, value < 0, spec);
            break;
        }
        case 'u':
            put_number(sink, take_unsigned(arguments, spec), 10, false, spec);
            break;
        case 'x':
            put_number(sink, take_unsigned(arguments, spec), 16, false, spec);
            break;
        case 'p':
            sink.put('0');
            sink.put('x');
            put_number(sink, reinterpret_cast<uintptr_t>(va_arg(arguments.list, void*)), 16, false, spec);
            break;
        case '%':
            sink.put('%');
            break;
        default:
            sink.put('?');
            if (*p == '\0') return;
        }
    }
}

}  // namespace

void vprint(const char* format_text, va_list arguments) {
    char buffer[128];
    Sink sink(buffer, sizeof(buffer), true);
    Arguments copy;
    va_copy(copy.list, arguments);
    format(sink, format_text, copy);
    va_end(copy.list);
    sink.finish();
}

void print(const char* format_text, ...) {
    va_list arguments;
    va_start(arguments, format_text);
    vprint(format_text, arguments);
    va_end(arguments);
}

size_t format_to(char* buffer, size_t capacity, const char* format_text, ...) {
    Sink sink(buffer, capacity, false);
    Arguments arguments;
    va_start(arguments.list, format_text);
    format(sink, format_text, arguments);
    va_end(arguments.list);
    return sink.finish();
}

}  // namespace guest
