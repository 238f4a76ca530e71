// A small SQLite layer for the persistent memory tiers: opening a database file with every check done up front,
// prepared statements, transactions, and errors that name the file and say what to do.
//
// Opening (Database::open) does, in order:
//   1. expand a leading `~` to $HOME and create the parent directories (not when read-only);
//   2. open with a busy timeout, so a database another program holds waits `busy_timeout_ms` and then fails as
//      `locked` instead of failing at once;
//   3. `PRAGMA quick_check`: a file that is not SQLite or is damaged is refused *before* anything is written to
//      it, so a corrupt file is never made worse and can still be rescued;
//   4. switch to WAL (readers never block the writer; a crash mid-write leaves the last commit intact) with
//      synchronous=NORMAL (or FULL by config): committed transactions survive a crash of the process; with NORMAL a
//      power cut may lose the last few commits but never corrupts the file.
// A database that cannot be written (file or directory read-only, `read_only` asked for) opens read-only: reads
// work, writes are refused by the caller. A read-only WAL database in a read-only directory cannot create its
// `-shm` index, so it is opened `immutable` (nobody can be writing it: a writer would need that directory).
//
// Threading: one Database per module, used from that module's strand only.
#pragma once

#include <sqlite3.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "lal/config.hpp"

namespace lal::memory {

/// Why a database operation failed, for callers that react differently (and for tests).
enum class DbErrorKind { locked, corrupt, read_only, cannot_open, full, other };

class DbError : public std::runtime_error {
 public:
  DbError(DbErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  DbErrorKind kind() const { return kind_; }

 private:
  DbErrorKind kind_;
};

/// How to open a database (a tier fills it from its config keys: lal/memory/db_settings.hpp).
struct DbOptions {
  std::string path;               ///< file name; a leading `~` is the home directory
  std::string owner = "memory";   ///< who opens it, for messages ("long_term memory database")
  bool read_only = false;         ///< open read-only even when the file is writable
  int busy_timeout_ms = 2000;     ///< how long to wait for another connection's lock before failing as locked
  bool quick_check = true;        ///< run PRAGMA quick_check at open
  bool synchronous_full = false;  ///< fsync every commit (survives power loss) instead of at checkpoints
};

/// `~` and `~/...` → $HOME/...; everything else unchanged.
inline std::string expand_home(const std::string& path) {
  if (path.empty() || path[0] != '~' || (path.size() > 1 && path[1] != '/')) return path;
  const char* home = std::getenv("HOME");
  if (!home || !*home)
    throw DbError(DbErrorKind::cannot_open,
                  "cannot expand '~' in memory database path '" + path + "': $HOME is not set; give an absolute path");
  return std::string(home) + path.substr(1);
}

class Statement;

class Database {
 public:
  explicit Database(DbOptions options) : options_(std::move(options)) {
    // A constructor that throws runs no destructor: close the connection a refused file left open (LeakSanitizer
    // found it leaked for every corrupt or locked database).
    try {
      open();
    } catch (...) {
      close();
      throw;
    }
  }
  ~Database() { close(); }
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  const std::string& path() const { return path_; }
  bool read_only() const { return read_only_; }
  /// Why the database is read-only, when it is ("asked for by config", or SQLite's reason).
  const std::string& read_only_reason() const { return read_only_reason_; }
  sqlite3* handle() const { return db_; }

  /// Close now (also done by the destructor). Idempotent.
  void close() {
    if (db_) {
      sqlite3_close_v2(db_);
      db_ = nullptr;
    }
  }

  /// Run SQL without results; throws DbError naming the file.
  void exec(const std::string& sql, const char* what) {
    char* err = nullptr;
    const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      throw error(rc, what, msg);
    }
  }

  /// A DbError for result code `rc` while doing `what`, with the file name and the fix.
  DbError error(int rc, const std::string& what, const std::string& sqlite_message = {}) const {
    const int primary = rc & 0xFF;
    const std::string detail =
        sqlite_message.empty() ? (db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc)) : sqlite_message;
    const std::string head = options_.owner + " database '" + path_ + "': " + what + " failed (" + detail + "): ";
    switch (primary) {
      case SQLITE_BUSY:
      case SQLITE_LOCKED:
        return DbError(DbErrorKind::locked, head + "the file is locked by another connection and stayed locked for " +
                                                std::to_string(options_.busy_timeout_ms) +
                                                " ms; close the other program using it, or raise busy_timeout_ms");
      case SQLITE_CORRUPT:
      case SQLITE_NOTADB:
        return DbError(DbErrorKind::corrupt,
                       head +
                           "the file is not a SQLite database or is damaged; nothing was written to it. Move it "
                           "aside (or restore a backup) and start again to begin an empty memory");
      case SQLITE_READONLY:
        return DbError(DbErrorKind::read_only,
                       head +
                           "the file or its directory is read-only; make both writable, or set read_only: true to "
                           "recall without storing");
      case SQLITE_CANTOPEN:
      case SQLITE_PERM:
      case SQLITE_AUTH:
        return DbError(DbErrorKind::cannot_open,
                       head + "cannot open the file; check that the directory exists and is accessible");
      case SQLITE_FULL:
        return DbError(DbErrorKind::full, head + "the disk is full; free space, the memory was not changed");
      default: return DbError(DbErrorKind::other, head + "see the SQLite message");
    }
  }

  inline Statement prepare(const char* sql) const;

  /// BEGIN IMMEDIATE ... COMMIT; rolls back in the destructor unless committed. IMMEDIATE takes the write lock at
  /// the start, so a locked database fails here, before any work, rather than at COMMIT.
  class Transaction {
   public:
    explicit Transaction(Database& db) : db_(db) { db_.exec("BEGIN IMMEDIATE", "starting a write transaction"); }
    ~Transaction() {
      if (!done_) sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
    void commit() {
      db_.exec("COMMIT", "committing a write transaction");
      done_ = true;
    }
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;

   private:
    Database& db_;
    bool done_ = false;
  };

  /// True when a table of that name exists.
  inline bool has_table(const char* name) const;

 private:
  void open() {
    path_ = expand_home(options_.path);
    if (path_.empty()) throw DbError(DbErrorKind::cannot_open, options_.owner + " database: `path` is empty");
    namespace fs = std::filesystem;
    const fs::path parent = fs::path(path_).parent_path();
    if (!options_.read_only && !parent.empty()) {
      std::error_code ec;
      fs::create_directories(parent, ec);
      if (ec && !fs::is_directory(parent))
        throw DbError(DbErrorKind::cannot_open, options_.owner + " database '" + path_ +
                                                    "': cannot create its directory '" + parent.string() +
                                                    "': " + ec.message());
    }
    if (options_.read_only) read_only_reason_ = "read_only: true in the config";
    open_connection(options_.read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE), path_);
    if (!options_.read_only && sqlite3_db_readonly(db_, "main") == 1) {
      // SQLite falls back to read-only when the file is not writable.
      read_only_reason_ = "the file is not writable";
    }
    read_only_ = !read_only_reason_.empty();
    try {
      check();
    } catch (const DbError& e) {
      // SQLite reports the missing -shm as CANTOPEN or READONLY(_CANTINIT/_DIRECTORY), depending on the files.
      if (!read_only_ || (e.kind() != DbErrorKind::cannot_open && e.kind() != DbErrorKind::read_only)) throw;
      // A WAL database in a directory we cannot write: no -shm can be created, so open it immutable.
      close();
      open_connection(SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, "file:" + uri_escape(path_) + "?immutable=1");
      read_only_reason_ += " (its directory is read-only too; opened immutable)";
      check();
    }
    if (!read_only_) {
      // Switching a rollback-journal file to WAL takes an exclusive lock, and SQLite answers "locked" at once,
      // without its busy handler, while another connection reads the file (several processes opening a new or
      // version-1 file together). Wait for it as for any other lock: up to busy_timeout_ms.
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.busy_timeout_ms);
      for (;;) {
        try {
          exec("PRAGMA journal_mode=WAL", "switching to WAL journal mode");
          break;
        } catch (const DbError& e) {
          if (e.kind() == DbErrorKind::locked && std::chrono::steady_clock::now() < give_up) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            continue;
          }
          if (e.kind() != DbErrorKind::read_only) throw;
          read_only_ = true;
          read_only_reason_ = e.what();
          break;
        }
      }
    }
    if (!read_only_)
      exec(options_.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", "setting synchronous");
  }

  void open_connection(int flags, const std::string& name) {
    const int rc = sqlite3_open_v2(name.c_str(), &db_, flags, nullptr);
    if (rc != SQLITE_OK) {
      const std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      close();
      throw error(rc, "opening", msg);
    }
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, options_.busy_timeout_ms);
  }

  // quick_check reads every page: garbage, truncation and damaged b-trees are found here, before any write.
  inline void check();

  static std::string uri_escape(const std::string& p) {
    std::string out;
    for (char c : p) {
      if (c == '%' || c == '?' || c == '#') {
        char buf[4];
        std::snprintf(buf, sizeof buf, "%%%02X", static_cast<unsigned char>(c));
        out += buf;
      } else {
        out += c;
      }
    }
    return out;
  }

  DbOptions options_;
  std::string path_;
  sqlite3* db_ = nullptr;
  bool read_only_ = false;
  std::string read_only_reason_;
};

/// A prepared statement. Bind parameters by 1-based index; step() returns true while there is a row.
class Statement {
 public:
  Statement(const Database& db, const char* sql) : db_(&db) {
    const int rc = sqlite3_prepare_v2(db.handle(), sql, -1, &stmt_, nullptr);
    if (rc != SQLITE_OK) throw db.error(rc, std::string("preparing `") + sql + "`");
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(Statement&& o) noexcept : db_(o.db_), stmt_(std::exchange(o.stmt_, nullptr)) {}
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int i, std::int64_t v) { return check_bind(sqlite3_bind_int64(stmt_, i, v)); }
  Statement& bind(int i, double v) { return check_bind(sqlite3_bind_double(stmt_, i, v)); }
  Statement& bind(int i, std::string_view v) {
    return check_bind(sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
  }
  Statement& bind_null(int i) { return check_bind(sqlite3_bind_null(stmt_, i)); }
  Statement& bind_blob(int i, std::string_view v) {
    return check_bind(sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
  }

  /// Advance; true = a row is available. Throws DbError (naming the file) on failure.
  bool step(const char* what) {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    const DbError e = db_->error(rc, what);
    sqlite3_reset(stmt_);
    throw e;
  }
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  std::int64_t column_int(int i) const { return sqlite3_column_int64(stmt_, i); }
  double column_double(int i) const { return sqlite3_column_double(stmt_, i); }
  std::string column_text(int i) const {
    const auto* p = sqlite3_column_text(stmt_, i);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(stmt_, i)))
             : std::string();
  }
  std::pair<const void*, std::size_t> column_blob(int i) const {
    const void* p = sqlite3_column_blob(stmt_, i);
    return {p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, i))};
  }

 private:
  Statement& check_bind(int rc) {
    if (rc != SQLITE_OK) throw db_->error(rc, "binding a parameter");
    return *this;
  }
  const Database* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

inline Statement Database::prepare(const char* sql) const { return Statement(*this, sql); }

inline bool Database::has_table(const char* name) const {
  Statement s(*this, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1");
  s.bind(1, std::string_view(name));
  return s.step("looking up the schema");
}

inline void Database::check() {
  if (!options_.quick_check) {
    Statement s(*this, "SELECT count(*) FROM sqlite_master");  // still reads the header: garbage fails here
    s.step("reading the schema");
    return;
  }
  Statement s(*this, "PRAGMA quick_check");
  std::string problems;
  int n = 0;
  while (s.step("checking the file (PRAGMA quick_check)")) {
    const std::string line = s.column_text(0);
    if (line == "ok") continue;
    if (n++ < 3) problems += (problems.empty() ? "" : "; ") + line;
  }
  if (n > 0)
    throw DbError(DbErrorKind::corrupt, options_.owner + " database '" + path_ +
                                            "' is damaged (PRAGMA quick_check: " + problems + (n > 3 ? "; ..." : "") +
                                            "); nothing was written to it. Move it aside (or restore a backup) and "
                                            "start again to begin an empty memory, or try `sqlite3 FILE .recover`");
}

}  // namespace lal::memory
