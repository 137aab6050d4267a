// toml++ for husk: its internal assertions are off, so a malformed file is
// always a parse error. toml++ 3.3 asserts on some invalid keys (e.g. the
// table header "[+a]") before it reports them: with assert() that aborts the
// program, and under NDEBUG it becomes an optimiser assumption. With
// TOML_ASSERT empty (and NDEBUG out of the way while toml++ is read) the
// parser goes on to its own error.
#pragma once

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
