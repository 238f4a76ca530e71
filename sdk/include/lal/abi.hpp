// lal SDK — ABI identity of a plugin.
//
// Every plugin carries two plain values that the host reads *before* it calls anything else in the library:
//
//   * LAL_SDK_ABI_VERSION — bumped whenever a type or virtual function that crosses the plugin boundary changes
//     layout or meaning (Module, Context, the message structs in <lal/messages.hpp>, the service interfaces).
//   * lal::toolchain_tag() — the C++ runtime the plugin was compiled against (standard library and its dual-ABI
//     flag). The SDK passes std::string / std::vector / std::function across the boundary, so a
//     plugin built with an incompatible standard library must be refused, not loaded.
//
// The host refuses a plugin whose ABI version or toolchain tag differs from its own and says which, so a user sees
// "plugin 'x' was built for lal ABI 3, this host speaks ABI 1: rebuild it against this SDK" instead of a crash.
#pragma once

#include <cstdint>

#ifndef LAL_SDK_ABI_VERSION
#define LAL_SDK_ABI_VERSION 3u
#endif

#define LAL_STRINGIFY_DETAIL(x) #x
#define LAL_STRINGIFY(x) LAL_STRINGIFY_DETAIL(x)

#if defined(_GLIBCXX_USE_CXX11_ABI)
#define LAL_TOOLCHAIN_STDLIB "libstdc++/cxx11abi=" LAL_STRINGIFY(_GLIBCXX_USE_CXX11_ABI)
#elif defined(_LIBCPP_VERSION)
#define LAL_TOOLCHAIN_STDLIB "libc++"
#else
#define LAL_TOOLCHAIN_STDLIB "unknown-stdlib"
#endif

namespace lal {

/// The ABI version this translation unit was compiled with.
inline constexpr std::uint32_t kSdkAbiVersion = LAL_SDK_ABI_VERSION;

/// A short string naming the C++ runtime ABI ("libstdc++/cxx11abi=1"). Compared verbatim by the host. The compiler
/// version is deliberately not part of it: libstdc++ keeps its ABI stable across GCC releases.
inline constexpr const char* toolchain_tag() { return LAL_TOOLCHAIN_STDLIB; }

}  // namespace lal
