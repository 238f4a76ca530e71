// The config keys every database-backed memory tier declares, declared once (lal/options.hpp): a tier nests
// DbSettings in its options struct (`o.nested(&LongTermOptions::db)`), and its member initialiser is where that
// tier's defaults differ (short_term's `path` is empty: an in-process journal).
//
// Threading: plain data, read in the module's start() on its strand.
#pragma once

#include <cstdint>
#include <string>

#include "lal/memory/sqlite.hpp"
#include "lal/options.hpp"

namespace lal::memory {

struct DbSettings {
  std::string path = "~/.local/share/lal/memory.db";
  bool read_only = false;
  std::int64_t busy_timeout_ms = 2000;
  std::string synchronous = "normal";
  bool check_on_open = true;

  static void declare(lal::Options<DbSettings>& o) {
    o.field("path", &DbSettings::path,
            "SQLite file; `~` is the home directory (long_term, short_term and procedural may share one)");
    o.field("read_only", &DbSettings::read_only, "open read-only: recall works, nothing is stored or learned");
    o.field("busy_timeout_ms", &DbSettings::busy_timeout_ms,
            "how long one write waits for another program's lock before a retry")
        .range(0, 600000);
    o.field("synchronous", &DbSettings::synchronous, "normal (fsync at checkpoints) or full (fsync every commit)")
        .one_of({"normal", "full"});
    o.field("check_on_open", &DbSettings::check_on_open,
            "run PRAGMA quick_check when opening (refuses a damaged file)");
  }

  /// What Database opens; `owner` names the tier in messages ("long_term memory (module 'long_term')").
  DbOptions db_options(std::string owner) const {
    DbOptions o;
    o.path = path;
    o.owner = std::move(owner);
    o.read_only = read_only;
    o.busy_timeout_ms = static_cast<int>(busy_timeout_ms);
    o.quick_check = check_on_open;
    o.synchronous_full = synchronous == "full";
    return o;
  }
};

}  // namespace lal::memory
