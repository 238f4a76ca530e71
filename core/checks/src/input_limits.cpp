#include "lal/checks/input_limits.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace lal::checks {

namespace {
std::string plain(std::uint64_t n) { return std::to_string(n); }
}  // namespace

std::string format_bytes(std::uint64_t bytes) {
  static const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return plain(bytes) + (bytes == 1 ? " byte" : " bytes");
  double v = static_cast<double>(bytes);
  int u = -1;
  while (v >= 1024 && u < 3) v /= 1024, ++u;
  char buf[32];
  if (v == static_cast<double>(static_cast<std::uint64_t>(v)))
    std::snprintf(buf, sizeof buf, "%llu %s", static_cast<unsigned long long>(v), units[u]);
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

std::uint64_t Limit::value() const {
  const char* text = std::getenv(env);
  if (!text || !*text) return fallback;
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(text, &end, 10);
  std::uint64_t scale = 1;
  if (end && *end) {
    const char s = *end;
    if (s == 'K' || s == 'k')
      scale = 1ull << 10;
    else if (s == 'M' || s == 'm')
      scale = 1ull << 20;
    else if (s == 'G' || s == 'g')
      scale = 1ull << 30;
    else
      scale = 0;
    ++end;
  }
  if (errno != 0 || end == text || !end || *end != '\0' || scale == 0 || text[0] == '-' || n == 0 ||
      n > UINT64_MAX / scale)
    throw InputLimitError(std::string(env) + "='" + text + "' is not a positive count (e.g. " +
                          (bytes ? "64M" : "256") + ")");
  return n * scale;
}

std::string Limit::describe() const {
  const std::uint64_t v = value();
  const std::uint64_t suggested = v > UINT64_MAX / 4 ? v : v * 4;
  return "the " + (bytes ? format_bytes(v) : plain(v)) + " limit for " + what + " (" + env + "; set it higher, e.g. " +
         env + "=" + (bytes ? plain(suggested >> 20) + "M" : plain(suggested)) + ", if the input is genuine)";
}

void check_size(std::uint64_t size, const Limit& limit, std::string_view name) {
  if (size > limit.value())
    throw InputLimitError(std::string(name) + ": " + format_bytes(size) + " is over " + limit.describe());
}

std::string read_file_limited(const std::filesystem::path& path, const Limit& limit) {
  const std::uint64_t max = limit.value();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path.string() + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw std::runtime_error(path.string() + ": is a directory, not a file");
  }
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) > max) {
    ::close(fd);
    throw InputLimitError(path.string() + ": the file (" + format_bytes(static_cast<std::uint64_t>(st.st_size)) +
                          ") is larger than " + limit.describe());
  }
  std::string out;
  char buf[1 << 16];
  while (true) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(sizeof buf, max + 1 - out.size()));
    const ssize_t n = ::read(fd, buf, want);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      throw std::runtime_error(path.string() + ": read failed: " + std::strerror(e));
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > max) {
      ::close(fd);
      throw InputLimitError(path.string() + ": the input goes on past " + limit.describe());
    }
  }
  ::close(fd);
  return out;
}

nlohmann::json parse_json_limited(std::string_view text, std::string_view name) {
  const std::uint64_t max_depth = limits::json_depth.value();
  const auto refuse_deep = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
    if ((event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start) &&
        static_cast<std::uint64_t>(depth) >= max_depth)
      throw InputLimitError(std::string(name) + ": JSON nested more than " + plain(max_depth) +
                            " levels deep is over " + limits::json_depth.describe());
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), refuse_deep);
  } catch (const nlohmann::json::out_of_range& e) {
    // A number too large for any C++ type (1e999999) is malformed input too: one error type for callers.
    throw nlohmann::json::parse_error::create(101, 0, std::string("number out of range: ") + e.what(), nullptr);
  }
}

}  // namespace lal::checks
