#include "lal/train/files.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
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

std::set<std::int64_t> record_indices(const std::string& path) {
  std::set<std::int64_t> done;
  std::size_t line_no = 0;
  for (const auto& line : read_complete_lines(path)) {
    ++line_no;
    try {
      done.insert(nlohmann::json::parse(line).at("index").get<std::int64_t>());
    } catch (const std::exception& e) {
      throw std::runtime_error(path + ":" + std::to_string(line_no) + ": not an indexed record (" + e.what() +
                               "); remove the line or the file to compute it again");
    }
  }
  return done;
}

std::vector<std::string> rank_files(const std::string& path) {
  std::vector<std::string> out;
  const fs::path dir = fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
  const std::string prefix = fs::path(path).filename().string() + ".rank-";
  if (fs::exists(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().filename().string().rfind(prefix, 0) == 0) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::set<std::int64_t> record_indices_with_rank_files(const std::string& path) {
  auto done = record_indices(path);
  for (const auto& f : rank_files(path))
    for (auto i : record_indices(f)) done.insert(i);
  return done;
}

std::int64_t merge_rank_files(const std::string& path) {
  const auto parts = rank_files(path);
  if (parts.empty()) return -1;
  std::map<std::int64_t, std::string> records;
  auto add = [&](const std::string& file) {
    for (const auto& line : read_complete_lines(file))
      records.emplace(nlohmann::json::parse(line).at("index").get<std::int64_t>(), line);
  };
  if (fs::exists(path)) add(path);
  for (const auto& f : parts) add(f);
  std::string text;
  for (const auto& [index, line] : records) text += line + "\n";
  write_file_atomic(path, text);
  for (const auto& f : parts) fs::remove(f);
  return static_cast<std::int64_t>(records.size());
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
