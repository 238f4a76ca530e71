#include "lal/train/report.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <sstream>

#include "lal/train/files.hpp"

namespace lal::train {

ProgressBar::ProgressBar(std::string label, std::int64_t total, std::string unit, bool enabled, std::int64_t start_at)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(std::max<std::int64_t>(total, 1)),
      start_at_(start_at),
      enabled_(enabled),
      tty_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_ - std::chrono::seconds(1)) {}

ProgressBar::~ProgressBar() {
  if (!finished_ && enabled_ && tty_) std::cerr << "\n";
}

std::string ProgressBar::format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  const auto t = static_cast<long>(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

std::string ProgressBar::render(std::int64_t done, double elapsed, const std::string& extra) const {
  const int width = 24;
  const double frac = std::clamp(static_cast<double>(done) / static_cast<double>(total_), 0.0, 1.0);
  const int filled = static_cast<int>(frac * width + 1e-9);
  const double rate = elapsed > 0 ? static_cast<double>(done - start_at_) / elapsed : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : std::numeric_limits<double>::infinity();
  std::ostringstream ss;
  ss << label_ << " [" << std::string(filled, '#') << std::string(width - filled, ' ') << "] " << done << "/" << total_
     << " " << unit_ << " ";
  char r[32];
  std::snprintf(r, sizeof r, rate >= 10 ? "%.0f" : "%.2f", rate);
  ss << r << " " << unit_ << "/s ETA " << format_duration(eta) << " elapsed " << format_duration(elapsed);
  if (!extra.empty()) ss << " " << extra;
  return ss.str();
}

void ProgressBar::update(std::int64_t done, const std::string& extra) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  if (tty_) {
    if (now - last_draw_ < std::chrono::milliseconds(200) && done < total_) return;
    last_draw_ = now;
    std::cerr << "\r\033[K" << render(done, elapsed, extra) << std::flush;
  } else {
    const auto decile = done * 10 / total_;
    if (decile == last_logged_decile_) return;
    last_logged_decile_ = decile;
    std::cerr << render(done, elapsed, extra) << "\n";
  }
}

void ProgressBar::finish(const std::string& extra) {
  if (!enabled_ || finished_) return;
  finished_ = true;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::cerr << (tty_ ? "\r\033[K" : "") << render(std::min(total_, std::max(start_at_, total_)), elapsed, extra)
            << "\n";
}

namespace {
std::string num(double v) {
  char b[32];
  if (v != 0 && (std::fabs(v) >= 1e4 || std::fabs(v) < 1e-2))
    std::snprintf(b, sizeof b, "%.1e", v);
  else
    std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}
}  // namespace

void write_curve_svg(const std::string& path, const std::string& title, const std::vector<CurveSeries>& series,
                     bool log_y) {
  const double W = 720, H = 400, L = 70, R = 150, T = 40, B = 50;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (const auto& s : series)
    for (auto [x, y] : s.points) {
      if (!std::isfinite(y) || (log_y && y <= 0)) continue;
      const double yy = log_y ? std::log10(y) : y;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, yy), y1 = std::max(y1, yy);
    }
  if (x0 > x1) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad, y1 += pad;
  auto X = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto Y = [&](double y) { return H - B - ((log_y ? std::log10(y) : y) - y0) / (y1 - y0) * (H - T - B); };
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << title << "</text>\n"
    << "<line x1=\"" << L << "\" y1=\"" << H - B << "\" x2=\"" << W - R << "\" y2=\"" << H - B
    << "\" stroke=\"black\"/>\n<line x1=\"" << L << "\" y1=\"" << T << "\" x2=\"" << L << "\" y2=\"" << H - B
    << "\" stroke=\"black\"/>\n";
  for (int i = 0; i <= 5; ++i) {
    const double xv = x0 + (x1 - x0) * i / 5, yv = y0 + (y1 - y0) * i / 5;
    const double yval = log_y ? std::pow(10.0, yv) : yv;
    s << "<text x=\"" << X(xv) << "\" y=\"" << H - B + 18 << "\" text-anchor=\"middle\">" << num(xv) << "</text>\n";
    s << "<line x1=\"" << L << "\" y1=\"" << Y(yval) << "\" x2=\"" << W - R << "\" y2=\"" << Y(yval)
      << "\" stroke=\"#ddd\"/>\n<text x=\"" << L - 6 << "\" y=\"" << Y(yval) + 4 << "\" text-anchor=\"end\">"
      << num(yval) << "</text>\n";
  }
  s << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 12 << "\" text-anchor=\"middle\">optimizer step</text>\n";
  int row = 0;
  for (const auto& ser : series) {
    std::ostringstream pts;
    for (auto [x, y] : ser.points)
      if (std::isfinite(y) && (!log_y || y > 0)) pts << X(x) << "," << Y(y) << " ";
    s << "<polyline fill=\"none\" stroke=\"" << ser.color << "\" stroke-width=\"1.8\" points=\"" << pts.str()
      << "\"/>\n";
    if (ser.points.size() == 1)
      s << "<circle cx=\"" << X(ser.points[0].first) << "\" cy=\"" << Y(ser.points[0].second) << "\" r=\"3\" fill=\""
        << ser.color << "\"/>\n";
    const double ly = T + 10 + 20 * row++;
    s << "<line x1=\"" << W - R + 12 << "\" y1=\"" << ly << "\" x2=\"" << W - R + 32 << "\" y2=\"" << ly
      << "\" stroke=\"" << ser.color << "\" stroke-width=\"2\"/><text x=\"" << W - R + 38 << "\" y=\"" << ly + 4
      << "\">" << ser.name << "</text>\n";
  }
  s << "</svg>\n";
  write_file_atomic(path, s.str());
}

}  // namespace lal::train
