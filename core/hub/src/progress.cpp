#include "progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>

namespace lal::hub::detail {

std::string human_bytes(std::uint64_t bytes) {
  static const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1000.0 && u < 4) v /= 1000.0, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

namespace {

std::string clock_text(double seconds) {
  if (!(seconds >= 0) || seconds > 360000) return "--:--";
  const long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

int terminal_width() {
  winsize w{};
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &w) == 0 && w.ws_col >= 40) return w.ws_col;
  return 100;
}

}  // namespace

ProgressBoard::ProgressBoard(ProgressMode mode) {
  if (mode == ProgressMode::automatic) mode = isatty(STDERR_FILENO) ? ProgressMode::bars : ProgressMode::lines;
  bars_ = mode == ProgressMode::bars;
  quiet_ = mode == ProgressMode::quiet;
}

std::size_t ProgressBoard::start(const std::string& name, std::uint64_t total, std::uint64_t already) {
  std::lock_guard<std::mutex> lock(mutex_);
  File f;
  f.name = name;
  f.total = total;
  f.already = f.have = already;
  f.started = std::chrono::steady_clock::now();
  files_.push_back(f);
  redraw_locked(true);
  return files_.size() - 1;
}

void ProgressBoard::update(std::size_t slot, std::uint64_t have) {
  std::lock_guard<std::mutex> lock(mutex_);
  files_[slot].have = have;
  redraw_locked(false);
}

void ProgressBoard::finish(std::size_t slot, bool ok) {
  std::lock_guard<std::mutex> lock(mutex_);
  File& f = files_[slot];
  f.active = false;
  if (!bars_) return;
  // Replace the live block by this file's final line, then draw the remaining bars below it.
  std::string line = render(f, terminal_width());
  if (!ok) line += "  (failed)";
  if (lines_drawn_) std::cerr << "\x1b[" << lines_drawn_ << "F\x1b[J";
  std::cerr << line << '\n';
  lines_drawn_ = 0;
  redraw_locked(true);
}

void ProgressBoard::note(const std::string& line) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (quiet_) return;
  if (bars_ && lines_drawn_) std::cerr << "\x1b[" << lines_drawn_ << "F\x1b[J";
  std::cerr << "hub: " << line << std::endl;
  lines_drawn_ = 0;
  if (bars_) redraw_locked(true);
}

std::string ProgressBoard::render(const File& f, int width) const {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - f.started).count();
  const double rate = elapsed > 0.05 ? double(f.have - f.already) / elapsed : 0.0;
  const double fraction = f.total ? double(f.have) / double(f.total) : 1.0;
  char pct[8];
  std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(fraction * 100.0));
  std::string tail = " " + human_bytes(f.have) + "/" + human_bytes(f.total) + "  " +
                     (rate > 0 ? human_bytes(static_cast<std::uint64_t>(rate)) + "/s" : "--") + "  ";
  tail += f.active ? "ETA " + clock_text(rate > 0 ? double(f.total - f.have) / rate : -1) : clock_text(elapsed);
  std::string name = f.name;
  const int name_width = std::max(12, std::min(40, width / 3));
  if (static_cast<int>(name.size()) > name_width) name = "..." + name.substr(name.size() - name_width + 3);
  name.resize(name_width, ' ');
  const int bar_width = std::max(5, width - name_width - static_cast<int>(tail.size()) - 10);
  const int filled = static_cast<int>(fraction * bar_width);
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.resize(static_cast<std::size_t>(bar_width), '.');
  return name + " " + pct + " [" + bar + "]" + tail;
}

void ProgressBoard::redraw_locked(bool force) {
  if (!bars_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const int width = terminal_width();
  std::string out;
  if (lines_drawn_) out += "\x1b[" + std::to_string(lines_drawn_) + "F";
  std::size_t drawn = 0;
  for (const auto& f : files_)
    if (f.active) out += "\x1b[2K" + render(f, width) + "\n", ++drawn;
  out += "\x1b[J";
  lines_drawn_ = drawn;
  std::cerr << out << std::flush;
}

}  // namespace lal::hub::detail
