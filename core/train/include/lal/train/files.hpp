// lal::train — small crash-safe file helpers (torch-free).
//
// write_file_atomic: temp file in the same directory, fsync, rename, fsync the directory — after a crash the path
// holds the old content or the new one, never a mix. JsonlAppender: appends whole lines and fsyncs per flush, and
// on open drops a torn last line left by a crash (so a reader only ever sees complete records).
// ERRORS: std::runtime_error with the path and errno text.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace lal::train {

void write_file_atomic(const std::string& path, const std::string& content);
std::string read_file(const std::string& path);
void fsync_directory(const std::string& dir);

/// The complete lines of a JSONL file (a torn last line, without '\n', is not returned).
std::vector<std::string> read_complete_lines(const std::string& path);

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
