// lal SDK — messages, their header and their stable type names.
//
// A message is any C++ struct that names itself with a stable string:
//
//     struct ThoughtChunk {
//       static constexpr const char* kTypeName = "lal.ThoughtChunk/1";
//       ...
//     };
//
// The name, not typeid, is the type's identity on the bus: RTTI identity is not reliable across shared libraries
// built with hidden visibility. "/1" is the layout version; change the layout, bump the number. Two plugins that
// use the same name must use the same layout (put shared structs in a header both include, such as
// <lal/messages.hpp>).
//
// Ownership: a published message is immutable and shared. The bus hands every subscriber the same
// std::shared_ptr<const T>; nobody copies the payload, nobody may cast the const away.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

namespace lal {

/// Identifies one conversation turn (one user input and everything it causes). 0 means "no turn".
using TurnId = std::uint64_t;

/// Set by the bus on every message. Plugins read it; they choose only `turn`, `user` and the causal parent (by
/// passing the message they are reacting to when they publish).
struct MessageHeader {
  TurnId turn = 0;            ///< the turn this message belongs to (inherited from the causal parent)
  std::string user;           ///< the user this turn speaks for; the unit of memory isolation
  std::uint64_t sequence = 0; ///< bus-wide, strictly increasing in publish order; never 0 once published
  std::int64_t timestamp_ns = 0; ///< steady-clock nanoseconds at publish (monotonic, not wall time)
  std::uint64_t parent = 0;   ///< `sequence` of the message that caused this one, 0 for none
};

/// Steady-clock nanoseconds, the time base of MessageHeader::timestamp_ns.
inline std::int64_t monotonic_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

template <class T, class = void>
struct HasTypeName : std::false_type {};
template <class T>
struct HasTypeName<T, std::void_t<decltype(T::kTypeName)>> : std::true_type {};

/// The stable name of message type T ("lal.ThoughtChunk/1").
template <class T>
constexpr const char* type_name() {
  static_assert(HasTypeName<T>::value,
                "a bus message type needs `static constexpr const char* kTypeName = \"org.Name/1\";`");
  return T::kTypeName;
}

/// What a handler receives: the header and a shared, immutable body. Cheap to copy (one shared_ptr).
template <class T>
struct Delivery {
  MessageHeader header;
  std::shared_ptr<const T> body;

  const T& operator*() const { return *body; }
  const T* operator->() const { return body.get(); }
};

}  // namespace lal
