// What `lal memory` and the chat REPL's /memory search and /forget share: searching a user's long-term memories
// with the recall the long_term plugin uses (lal/memory/recall.hpp), and forgetting. Torch-free.
#pragma once

#include <cstdio>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "lal/memory/recall.hpp"
#include "lal/memory/store.hpp"
#include "lal/memory/write_queue.hpp"

namespace lal::cli {

/// "2026-11-29 14:03" (local time) of a Unix-ns time.
inline std::string local_time_of(std::int64_t ns) {
  const std::time_t t = static_cast<std::time_t>(ns / 1000000000LL);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
  return buf;
}

/// The user's index, loaded from the store.
inline memory::UserIndex load_index(memory::MemoryStore& store, const std::string& user) {
  memory::UserIndex index;
  for (auto& m : store.load(user)) index.add(std::move(m));
  return index;
}

/// Search as the long_term plugin recalls (default settings), without rehearsing: looking is not remembering.
inline std::vector<memory::Recalled> search_memories(const memory::UserIndex& index, const std::string& text,
                                                     std::size_t k) {
  return index.recall(text, k, memory::wall_now_ns(), memory::RecallSettings{});
}

/// One line per recalled memory: rank, id, score and its parts, kind, time, text.
inline void print_recalled(std::ostream& out, const std::vector<memory::Recalled>& found) {
  int rank = 0;
  for (const auto& r : found) {
    std::ostringstream parts;
    parts << std::fixed << std::setprecision(3) << "score " << r.score << " (bm25 " << r.bm25 << ", cos " << r.cosine
          << ", B " << r.activation << (r.in_time_window ? ", in time window" : "") << ")";
    out << ++rank << ". #" << r.memory->row.id << " [" << (r.memory->row.semantic ? "semantic" : "episodic") << ", "
        << local_time_of(r.memory->row.uses.created_ns) << "] " << r.text << "\n   " << parts.str() << "\n";
  }
}

}  // namespace lal::cli
