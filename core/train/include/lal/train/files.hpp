// lal::train — small crash-safe file helpers (torch-free).
//
// write_file_atomic: temp file in the same directory, fsync, rename, fsync the directory — after a crash the path
// holds the old content or the new one, never a mix. JsonlAppender: appends whole lines and fsyncs per flush, and
// on open drops a torn last line left by a crash (so a reader only ever sees complete records).
// ERRORS: std::runtime_error with the path and errno text.
#pragma once

#include <cstdint>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

namespace lal::train {

void write_file_atomic(const std::string& path, const std::string& content);
std::string read_file(const std::string& path);
void fsync_directory(const std::string& dir);

/// The complete lines of a JSONL file (a torn last line, without '\n', is not returned).
std::vector<std::string> read_complete_lines(const std::string& path);

/// Indexed records: JSONL lines that are objects with an integer "index" (teacher data, stored top-k). Ranks of a
/// distributed run append theirs to "<path>.rank-R"; rank 0 then folds them into <path>.
/// The indices in `path` (none when it does not exist); a line without one throws, naming path:line.
std::set<std::int64_t> record_indices(const std::string& path);
/// The per-rank files of `path` ("<path>.rank-*", any world size), sorted.
std::vector<std::string> rank_files(const std::string& path);
/// The indices done so far: those in `path` and in its rank files (a run cut short before rank 0 merged them).
std::set<std::int64_t> record_indices_with_rank_files(const std::string& path);
/// Folds the rank files into `path` in index order, keeping the first record of each index, then removes them.
/// Atomic: a kill leaves either the old files or the merged one. Returns the records in `path`, or -1 when there
/// were no rank files (nothing done).
std::int64_t merge_rank_files(const std::string& path);

class JsonlAppender {
 public:
  /// Opens (creating) `path`; truncates a torn last line away first.
  explicit JsonlAppender(const std::string& path);
  ~JsonlAppender();
  JsonlAppender(const JsonlAppender&) = delete;
  JsonlAppender& operator=(const JsonlAppender&) = delete;
  /// Buffer one record (`line` without the newline).
  void add(const std::string& line);
  /// Write the buffered records in one write() and fsync.
  void flush();
  /// Drop every complete line after the first `keep` (used when a resumed run rewinds metrics).
  static void truncate_lines(const std::string& path, std::size_t keep);

 private:
  std::string path_;
  int fd_ = -1;
  std::string pending_;
};

}  // namespace lal::train
