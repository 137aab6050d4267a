// toml++ for husk: its internal assertions are off, so a malformed file is
// always a parse error. toml++ 3.3 asserts on some invalid keys (e.g. the
// table header "[+a]") before it reports them: with assert() that aborts the
// program, and under NDEBUG it becomes an optimiser assumption. With
// TOML_ASSERT empty (and NDEBUG out of the way while toml++ is read) the
// parser goes on to its own error.
//
// toml++ 3.3 also reaches __builtin_unreachable() (undefined behaviour) when
// it asks whether some non-ASCII characters are whitespace (U+00A1-U+0499,
// for one): check_ascii() refuses those files before toml++ sees them.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#ifdef NDEBUG
#define HUSK_TOML_HAD_NDEBUG
#undef NDEBUG
#endif
#define TOML_ASSERT(expr) static_assert(true)
#include <toml++/toml.h>
#ifdef HUSK_TOML_HAD_NDEBUG
#define NDEBUG
#undef HUSK_TOML_HAD_NDEBUG
#endif

namespace husk {

// husk's TOML files are ASCII outside comments (TOML's bare keys are ASCII
// anyway). Returns "LINE:COLUMN: ..." for the first non-ASCII byte outside a
// comment, or nothing.
inline std::optional<std::string> check_ascii(std::string_view text) {
    enum { Normal, Comment, Basic, Literal, MultiBasic, MultiLiteral } state = Normal;
    size_t line = 1, column = 1;
    for (size_t i = 0; i < text.size(); ++i, ++column) {
        unsigned char c = static_cast<unsigned char>(text[i]);
        std::string_view rest = text.substr(i);
        if (c == '\n') {
            ++line;
            column = 0;
            if (state == Comment || state == Basic || state == Literal) state = Normal;
            continue;
        }
        if (c >= 0x80) {
            if (state == Comment) continue;
            return std::to_string(line) + ":" + std::to_string(column) +
                   ": a non-ASCII character outside a comment (husk reads its TOML files as ASCII)";
        }
        switch (state) {
            case Normal:
                if (c == '#') {
                    state = Comment;
                } else if (rest.substr(0, 3) == "\"\"\"") {
                    state = MultiBasic;
                    i += 2, column += 2;
                } else if (rest.substr(0, 3) == "'''") {
                    state = MultiLiteral;
                    i += 2, column += 2;
                } else if (c == '"') {
                    state = Basic;
                } else if (c == '\'') {
                    state = Literal;
                }
                break;
            case Basic:
            case MultiBasic:
                if (c == '\\') {
                    ++i, ++column;  // an escape: the next byte is not a delimiter
                    if (i < text.size() && text[i] == '\n') ++line, column = 0;
                } else if (state == Basic && c == '"') {
                    state = Normal;
                } else if (state == MultiBasic && rest.substr(0, 3) == "\"\"\"") {
                    state = Normal;
                    i += 2, column += 2;
                }
                break;
            case Literal:
                if (c == '\'') state = Normal;
                break;
            case MultiLiteral:
                if (rest.substr(0, 3) == "'''") {
                    state = Normal;
                    i += 2, column += 2;
                }
                break;
            case Comment:
                break;
        }
    }
    return std::nullopt;
}

}  // namespace husk
