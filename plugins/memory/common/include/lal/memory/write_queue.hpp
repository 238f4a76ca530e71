// Writes that are never silently dropped: a bounded in-process queue in front of the memory database.
//
// Every write (an episode with its facts, a journal entry, the uses a recall records) is queued and applied in
// order. A write that fails because the database is busy (another process holds the write lock past
// busy_timeout_ms) or temporarily unwritable is retried `retries` times with a growing pause (50, 100, 200 ms …), then
// left queued and retried before the next write and at shutdown. While writes are queued, the queue logs a warning
// once; when it is full (`capacity`, config key `write_queue`), new writes wait, retrying, up to `full_wait_ms`. The
// numbers are WriteQueueSettings', written once for every tier.
//
// A write that still cannot be applied at shutdown (or whose queue stays full) is not lost: each memory it carries
// (the episode) is appended to the *pending file* next to the database, `<db>.pending.jsonl`, one JSON object a
// line; the next process that opens the database for writing stores them (recover_pending) and removes the file.
// The failure is reported (an error log naming both files; `lal chat` exits non-zero when a pending file exists
// after its pipeline stopped). Use updates (rehearsal statistics, not memories) that cannot be written are counted
// and logged, never silently dropped.
//
// Threading: one queue per module, used from that module's strand.
#pragma once

#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "lal/memory/store.hpp"
#include "lal/options.hpp"

namespace lal::memory {

/// How a tier's WriteQueue holds and retries writes. A tier nests it in its options (`o.nested(&Options::writes)`):
/// `capacity` is its config key `write_queue`; the rest are fixed here, for every tier.
struct WriteQueueSettings {
  std::int64_t capacity = 256;
  int retries = 3;               ///< retries of a failed write, after pauses of 50, 100, 200 ms …
  int full_wait_ms = 10000;      ///< a write waits this long for room in a full queue
  int shutdown_wait_ms = 10000;  ///< stop() retries this long before keeping what is left in the pending file

  static void declare(lal::Options<WriteQueueSettings>& o) {
    o.field("write_queue", &WriteQueueSettings::capacity, "writes held in memory while the database is busy").min(1);
  }
};

/// The file where memories that could not be written wait for the next start.
inline std::string pending_file_of(const std::string& db_path) { return db_path + ".pending.jsonl"; }

/// One queued write.
struct PendingWrite {
  enum Kind { episode, journal, uses, forget_journal } kind = episode;
  EpisodeInput input;                                     ///< episode, journal
  bool extract_facts = true;                              ///< episode
  std::string session;                                    ///< journal
  std::vector<std::pair<std::int64_t, UseHistory>> used;  ///< uses
  /// journal: set to the entry's id once written; episode / forget_journal: the entry this write replaces (0 = none).
  std::shared_ptr<std::int64_t> journal_id;
};

inline nlohmann::json episode_to_json(const EpisodeInput& e, bool extract_facts) {
  return {{"user", e.user},
          {"user_text", e.user_text},
          {"answer", e.answer},
          {"importance", e.importance},
          {"strategy", to_string(e.strategy)},
          {"emotion", e.emotion},
          {"created_ns", e.created_ns},
          {"extract_facts", extract_facts}};
}

/// Store what an earlier process left in the pending file (see the file comment). Returns how many episodes were
/// stored; a line that is not a valid episode is kept in `<pending>.rejected` and reported through `log`.
inline std::size_t recover_pending(MemoryStore& store, const std::function<void(const std::string&)>& log) {
  namespace fs = std::filesystem;
  if (store.read_only()) return 0;
  const std::string pending = pending_file_of(store.path());
  std::error_code ec;
  if (!fs::exists(pending, ec)) return 0;
  // Claim the file first: of two processes starting together, one stores it.
  const std::string claimed = pending + "." + std::to_string(::getpid()) + ".recovering";
  if (std::rename(pending.c_str(), claimed.c_str()) != 0) return 0;
  std::ifstream in(claimed);
  std::string line;
  std::size_t stored = 0, line_no = 0;
  std::vector<std::string> rejected;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      const auto j = nlohmann::json::parse(line);
      EpisodeInput e;
      e.user = j.at("user").get<std::string>();
      e.user_text = j.at("user_text").get<std::string>();
      e.answer = j.value("answer", std::string());
      e.importance = j.value("importance", 0.5);
      e.strategy = parse_optional_enum<Strategy>(j.value("strategy", std::string()), "\"strategy\"");
      e.emotion = j.value("emotion", std::string());
      e.created_ns = j.value("created_ns", std::int64_t{0});
      store.store_episode(e, j.value("extract_facts", true));
      ++stored;
    } catch (const DbError&) {
      // Still cannot write: put the file back (with what was not stored yet) for the next start.
      std::ofstream back(pending, std::ios::app);
      back << line << "\n";
      while (std::getline(in, line)) back << line << "\n";
      break;
    } catch (const std::exception& e) {
      rejected.push_back(line);
      log(pending + ":" + std::to_string(line_no) + ": not a pending memory (" + e.what() + "); kept in " + pending +
          ".rejected");
    }
  }
  in.close();
  if (!rejected.empty()) {
    std::ofstream rej(pending + ".rejected", std::ios::app);
    for (const auto& r : rejected) rej << r << "\n";
  }
  fs::remove(claimed, ec);
  if (stored)
    log("stored " + std::to_string(stored) + " memories that an earlier run could not write (from " + pending + ")");
  return stored;
}

class WriteQueue {
 public:
  /// Called after each write is applied, with the write and (for episodes) what it changed.
  using Applied = std::function<void(const PendingWrite&, const EpisodeWrite*)>;
  using Log = std::function<void(bool error, const std::string&)>;

  WriteQueue(MemoryStore& store, const WriteQueueSettings& settings, Log log)
      : store_(store),
        capacity_(static_cast<std::size_t>(settings.capacity)),
        retries_(settings.retries),
        full_wait_ms_(settings.full_wait_ms),
        shutdown_wait_ms_(settings.shutdown_wait_ms),
        log_(std::move(log)) {}

  std::size_t size() const { return queue_.size(); }
  std::size_t lost_use_updates() const { return lost_uses_; }

  /// Queue `w` and apply what can be applied now.
  void submit(PendingWrite w, const Applied& applied) {
    if (queue_.size() >= capacity_) {
      // Full: wait for the database, retrying; if it stays unavailable, keep the oldest in the pending file.
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(full_wait_ms_);
      while (!flush(applied) && queue_.size() >= capacity_ && std::chrono::steady_clock::now() < give_up)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (queue_.size() >= capacity_) spill(1);
    }
    queue_.push_back(std::move(w));
    flush(applied);
  }

  /// Apply queued writes in order; true when the queue is empty afterwards. `retry` = false tries each once (one
  /// busy_timeout_ms at most): for callers that must answer soon (recall).
  bool flush(const Applied& applied, bool retry = true) {
    while (!queue_.empty()) {
      if (!apply_with_retries(queue_.front(), applied, retry ? retries_ : 0)) {
        if (!warned_)
          log_(false, "memory database '" + store_.path() + "' is busy: " + std::to_string(queue_.size()) +
                          " write(s) queued, retrying (" + last_error_ + ")");
        warned_ = true;
        return false;
      }
      queue_.pop_front();
    }
    if (warned_) log_(false, "memory database '" + store_.path() + "': queued writes stored");
    warned_ = false;
    return true;
  }

  /// At shutdown: flush, retrying up to `shutdown_wait_ms`; what still cannot be written goes to the pending file.
  /// Returns false (and logs an error) when anything had to be kept there.
  bool finish(const Applied& applied) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(shutdown_wait_ms_);
    while (!flush(applied) && std::chrono::steady_clock::now() < give_up)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (queue_.empty()) return lost_uses_ == 0;
    spill(queue_.size());
    return false;
  }

 private:
  bool apply_with_retries(const PendingWrite& w, const Applied& applied, int retries) {
    int pause_ms = 50;
    for (int attempt = 0;; ++attempt) {
      try {
        apply(w, applied);
        return true;
      } catch (const DbError& e) {
        last_error_ = e.what();
        if (attempt >= retries) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
        pause_ms *= 2;
      }
    }
  }

  void apply(const PendingWrite& w, const Applied& applied) {
    switch (w.kind) {
      case PendingWrite::episode: {
        const EpisodeWrite r = store_.store_episode(w.input, w.extract_facts, w.journal_id ? *w.journal_id : 0);
        applied(w, &r);
        return;
      }
      case PendingWrite::journal: {
        const std::int64_t id = store_.journal_add(w.session, w.input);
        if (w.journal_id) *w.journal_id = id;
        applied(w, nullptr);
        return;
      }
      case PendingWrite::forget_journal:
        if (w.journal_id && *w.journal_id) store_.journal_forget(*w.journal_id);
        applied(w, nullptr);
        return;
      case PendingWrite::uses:
        store_.record_uses(w.input.user, w.used);
        applied(w, nullptr);
        return;
    }
  }

  void spill(std::size_t n) {
    const std::string file = pending_file_of(store_.path());
    std::ofstream out(file, std::ios::app);
    std::size_t kept = 0, uses = 0;
    for (std::size_t i = 0; i < n && !queue_.empty(); ++i) {
      const PendingWrite& w = queue_.front();
      if (w.kind == PendingWrite::uses || w.kind == PendingWrite::forget_journal) {
        ++uses;
      } else if (w.kind == PendingWrite::episode && w.journal_id && *w.journal_id) {
        // Its journal entry is in the database: the next start consolidates it from there.
        ++kept;
      } else {
        out << episode_to_json(w.input, w.kind == PendingWrite::episode ? w.extract_facts : true).dump() << "\n";
        ++kept;
      }
      queue_.pop_front();
    }
    out.flush();
    lost_uses_ += uses;
    const bool written = static_cast<bool>(out);
    log_(true, "could not write to memory database '" + store_.path() + "' (" + last_error_ +
                   "): " + std::to_string(kept) + " memories " +
                   (written ? "kept in '" + file + "'; they are stored the next time the database is opened"
                            : "could NOT be saved to '" + file + "' either: they are lost") +
                   (uses ? "; " + std::to_string(uses) + " recall statistics updates were not recorded" : ""));
  }

  MemoryStore& store_;
  std::size_t capacity_;
  int retries_, full_wait_ms_, shutdown_wait_ms_;
  Log log_;
  std::deque<PendingWrite> queue_;
  std::string last_error_;
  bool warned_ = false;
  std::size_t lost_uses_ = 0;
};

}  // namespace lal::memory
