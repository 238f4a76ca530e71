// lal::train — what a long run shows people: a progress bar with rate and ETA, and a loss-curve picture.
//
// Torch-free. Debian packages no C++ progress-bar library (apt-cache search: only Go/Perl ones), so this is a
// small one. ProgressBar redraws one stderr line at most every 200 ms when stderr is a terminal; otherwise it logs
// a plain line every 10 % (CI logs stay readable). Not thread-safe: one owner thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace lal::train {

class ProgressBar {
 public:
  /// `label` prefixes the line; `unit` names what is counted ("ex", "step"); `enabled` false makes it silent.
  ProgressBar(std::string label, std::int64_t total, std::string unit, bool enabled = true, std::int64_t start_at = 0);
  ~ProgressBar();
  /// Advance to `done` (absolute), with an extra text such as "loss 2.31 lr 1.2e-4".
  void update(std::int64_t done, const std::string& extra = "");
  void finish(const std::string& extra = "");
  /// "1h02m", "4m05s", "12s"
  static std::string format_duration(double seconds);
  /// The line that would be drawn (for tests): "label [####    ] 40/100 ex 2.5 ex/s ETA 24s extra"
  std::string render(std::int64_t done, double elapsed_seconds, const std::string& extra) const;

 private:
  std::string label_, unit_;
  std::int64_t total_, start_at_, last_logged_decile_ = -1;
  bool enabled_, tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

struct CurveSeries {
  std::string name;
  std::string color;                              ///< SVG color, e.g. "#1f77b4"
  std::vector<std::pair<double, double>> points;  ///< (step, value)
};

/// A self-contained SVG line chart (axes, ticks, legend), log-scaled y when `log_y`. Written atomically.
void write_curve_svg(const std::string& path, const std::string& title, const std::vector<CurveSeries>& series,
                     bool log_y = false);

}  // namespace lal::train
