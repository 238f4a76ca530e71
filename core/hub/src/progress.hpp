// Download progress on stderr: one bar per file being fetched (bytes, rate, ETA) on a terminal; on anything else
// (a log, a pipe) only a line when the pull starts and one when it ends. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "lal/hub/hub.hpp"

namespace lal::hub::detail {

std::string human_bytes(std::uint64_t bytes);

class ProgressBoard {
 public:
  explicit ProgressBoard(ProgressMode mode);

  /// A file starts; `already` bytes were there from an earlier, interrupted run. Returns its slot.
  std::size_t start(const std::string& name, std::uint64_t total, std::uint64_t already);
  /// `have` bytes of the file are on disk now.
  void update(std::size_t slot, std::uint64_t have);
  /// The file is done (verified and in place) or failed.
  void finish(std::size_t slot, bool ok);
  /// One line, printed above the bars (or alone when bars are off). Printed in every mode but quiet.
  void note(const std::string& line);
  bool bars() const { return bars_; }

 private:
  struct File {
    std::string name;
    std::uint64_t total = 0, already = 0, have = 0;
    std::chrono::steady_clock::time_point started;
    bool active = true;
  };
  std::string render(const File& f, int width) const;
  void redraw_locked(bool force);

  std::mutex mutex_;
  bool bars_ = false, quiet_ = false;
  std::vector<File> files_;
  std::size_t lines_drawn_ = 0;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace lal::hub::detail
