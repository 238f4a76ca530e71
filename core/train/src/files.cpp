#include "lal/train/files.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace lal::train {

namespace fs = std::filesystem;

namespace {
[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw std::runtime_error(path + ": " + what + ": " + std::strerror(errno));
}

void write_all(int fd, const std::string& data, const std::string& path) {
  std::size_t done = 0;
  while (done < data.size()) {
    const auto n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write failed", path);
    }
    done += static_cast<std::size_t>(n);
  }
}
}  // namespace

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: some filesystems do not allow it
  ::fsync(fd);
  ::close(fd);
}

void write_file_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create", tmp);
  try {
    write_all(fd, content, tmp);
    if (::fsync(fd) != 0) fail("fsync failed", tmp);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    fail("cannot rename " + tmp + " to it", path);
  }
  fsync_directory(fs::path(path).parent_path().string());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> read_complete_lines(const std::string& path) {
  std::vector<std::string> lines;
  if (!fs::exists(path)) return lines;
  const std::string text = read_file(path);
  std::size_t start = 0;
  while (true) {
    const auto nl = text.find('\n', start);
    if (nl == std::string::npos) break;
    if (nl > start) lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

JsonlAppender::JsonlAppender(const std::string& path) : path_(path) {
  if (fs::exists(path)) {
    const std::string text = read_file(path);
    const auto last_nl = text.rfind('\n');
    const std::size_t keep = last_nl == std::string::npos ? 0 : last_nl + 1;
    if (keep != text.size() && ::truncate(path.c_str(), static_cast<off_t>(keep)) != 0)
      fail("cannot truncate a torn last line", path);
  }
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot open for appending", path);
}

JsonlAppender::~JsonlAppender() {
  try {
    flush();
  } catch (...) {
  }
  if (fd_ >= 0) ::close(fd_);
}

void JsonlAppender::add(const std::string& line) {
  pending_ += line;
  pending_ += '\n';
}

void JsonlAppender::flush() {
  if (pending_.empty()) return;
  write_all(fd_, pending_, path_);
  if (::fsync(fd_) != 0) fail("fsync failed", path_);
  pending_.clear();
}

void JsonlAppender::truncate_lines(const std::string& path, std::size_t keep) {
  if (!fs::exists(path)) return;
  const std::string text = read_file(path);
  std::size_t pos = 0, lines = 0;
  while (lines < keep) {
    const auto nl = text.find('\n', pos);
    if (nl == std::string::npos) break;
    pos = nl + 1;
    ++lines;
  }
  if (pos < text.size()) write_file_atomic(path, text.substr(0, pos));
}

}  // namespace lal::train
