// Result<T>: a value or an Error. TRY() propagates the error to the caller.
//
//   Result<UniqueFd> open_config(const std::string& path) {
//       int fd = TRY(sys::open(path, O_RDONLY));
//       ...
//   }
#pragma once

#include <cassert>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

#include "vmm/base/error.h"

namespace husk {

template <typename T>
class [[nodiscard]] Result {
public:
    using ValueType = T;

    Result(T value) : m_storage(std::in_place_index<0>, std::move(value)) {}
    Result(Error error) : m_storage(std::in_place_index<1>, std::move(error)) {}
    template <typename U>
        requires(std::is_constructible_v<T, U &&> && !std::is_same_v<std::remove_cvref_t<U>, T> &&
                 !std::is_same_v<std::remove_cvref_t<U>, Error>)
    Result(U&& value) : m_storage(std::in_place_index<0>, T(std::forward<U>(value))) {}

    bool is_error() const { return m_storage.index() == 1; }
    explicit operator bool() const { return !is_error(); }

    T& value() {
        assert(!is_error());
        return std::get<0>(m_storage);
    }
    const T& value() const {
        assert(!is_error());
        return std::get<0>(m_storage);
    }
    const Error& error() const {
        assert(is_error());
        return std::get<1>(m_storage);
    }
    T release_value() { return std::move(value()); }
    Error release_error() { return std::move(std::get<1>(m_storage)); }

    // Adds context to a failure; a success passes through.
    // Returns by value: `TRY(f().context(...))` must not hold a reference to a dead temporary.
    Result context(std::string_view what) && {
        if (is_error()) std::get<1>(m_storage).with_context(what);
        return std::move(*this);
    }

private:
    std::variant<T, Error> m_storage;
};

template <>
class [[nodiscard]] Result<void> {
public:
    using ValueType = void;

    Result() = default;
    Result(Error error) : m_error(std::move(error)) {}

    bool is_error() const { return m_error.has_value(); }
    explicit operator bool() const { return !is_error(); }
    const Error& error() const {
        assert(is_error());
        return *m_error;
    }
    void release_value() {}
    Error release_error() { return std::move(*m_error); }

    Result context(std::string_view what) && {
        if (m_error) m_error->with_context(what);
        return std::move(*this);
    }

private:
    std::optional<Error> m_error;
};

}  // namespace husk

// Evaluates a Result; on error returns it from the enclosing function, else yields the value.
// A GNU statement expression (as in SerenityOS' TRY) keeps call sites to one line.
#define TRY(expression)                                             \
    __extension__({                                                 \
        auto&& _husk_result = (expression);                         \
        if (_husk_result.is_error()) [[unlikely]]                   \
            return _husk_result.release_error();                    \
        _husk_result.release_value();                               \
    })

// As TRY, but wraps a failure in one more layer of context.
#define TRY_CTX(expression, ctx)                                    \
    __extension__({                                                 \
        auto&& _husk_result = (expression);                         \
        if (_husk_result.is_error()) [[unlikely]]                   \
            return _husk_result.release_error().with_context(ctx);  \
        _husk_result.release_value();                               \
    })
