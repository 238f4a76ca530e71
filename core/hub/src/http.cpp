#include "http.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>
#include <mutex>
#include <thread>

namespace lal::hub::detail {

namespace {

constexpr std::size_t kMaxErrorBody = 64 * 1024;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == '\n' || s.back() == ' ')) s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

bool header_is(const std::string& line, const char* name) {
  const std::size_t n = std::strlen(name);
  return line.size() > n && line[n] == ':' && strncasecmp(line.c_str(), name, n) == 0;
}

/// What one transfer collects: headers of the final response, the body (memory or file).
struct Transfer {
  HttpResponse response;
  int fd = -1;                  ///< download target, or -1 to keep the body in memory
  std::uint64_t file_size = 0;  ///< bytes in the file so far
  std::uint64_t requested_from = 0;
  bool started = false;  ///< first body byte seen (status known)
  bool writing_file = false;
  std::string write_error;
  const std::function<void(std::uint64_t)>* on_bytes = nullptr;
  const std::atomic<bool>* cancel = nullptr;
  CURL* curl = nullptr;
};

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::string line(data, size * count);
  // A new status line (redirects, 100-continue) starts a new set of headers.
  if (line.rfind("HTTP/", 0) == 0) {
    t->response.error_code.clear();
    t->response.error_text.clear();
  } else if (header_is(line, "X-Error-Code")) {
    t->response.error_code = trim(line.substr(line.find(':') + 1));
  } else if (header_is(line, "X-Error-Message")) {
    t->response.error_text = trim(line.substr(line.find(':') + 1));
  }
  return size * count;
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  if (!t->started) {
    t->started = true;
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &t->response.status);
    const long s = t->response.status;
    t->writing_file = t->fd >= 0 && (s == 200 || s == 206);
    if (t->writing_file && s == 200 && t->requested_from > 0) {
      // The server ignored the Range request: start the file over.
      if (ftruncate(t->fd, 0) != 0 || lseek(t->fd, 0, SEEK_SET) != 0) {
        t->write_error = std::strerror(errno);
        return 0;
      }
      t->file_size = 0;
    }
  }
  if (!t->writing_file) {
    if (t->response.body.size() < kMaxErrorBody || t->fd < 0)
      t->response.body.append(data, std::min(n, t->fd < 0 ? n : kMaxErrorBody - t->response.body.size()));
    return n;
  }
  for (size_t done = 0; done < n;) {
    const ssize_t w = ::write(t->fd, data + done, n - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      t->write_error = std::strerror(errno);
      return 0;
    }
    done += static_cast<size_t>(w);
  }
  t->file_size += n;
  if (t->on_bytes && *t->on_bytes) (*t->on_bytes)(t->file_size);
  return n;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  return t->cancel && t->cancel->load() ? 1 : 0;
}

bool retryable_curl_error(CURLcode c) {
  switch (c) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_PARTIAL_FILE:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: return true;
    default: return false;
  }
}

/// What to do when the Hub cannot be reached at all.
std::string unreachable_hint(CURLcode c) {
  if (c != CURLE_COULDNT_RESOLVE_HOST && c != CURLE_COULDNT_CONNECT && c != CURLE_COULDNT_RESOLVE_PROXY) return "";
  return ". No network here? HF_HUB_OFFLINE=1 uses the local cache only; a mirror is set with HF_ENDPOINT and a proxy "
         "with https_proxy";
}

}  // namespace

bool retryable_status(long status) { return status >= 500 || status == 429; }

Http::Http(const HubSettings& settings, const std::atomic<bool>* cancel) : settings_(settings), cancel_(cancel) {
  global_init();
  curl_ = curl_easy_init();
  if (!curl_) throw HubError("libcurl: curl_easy_init failed");
  if (!settings_.token.empty())
    headers_ = curl_slist_append(headers_, ("Authorization: Bearer " + settings_.token).c_str());
}

Http::~Http() {
  curl_slist_free_all(headers_);
  curl_easy_cleanup(curl_);
}

std::string Http::escape(const std::string& segment) {
  char* e = curl_easy_escape(curl_, segment.c_str(), static_cast<int>(segment.size()));
  std::string out = e ? e : segment;
  curl_free(e);
  return out;
}

void Http::prepare(const std::string& url) {
  curl_easy_reset(curl_);  // keeps the connection cache
  curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl_, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl_, CURLOPT_MAXREDIRS, 10L);
  // libcurl sends a custom Authorization header only to the host it was given for, never to a redirect target
  // on another host (the Hub redirects large files to a CDN with a signed URL).
  curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers_);
  curl_easy_setopt(curl_, CURLOPT_USERAGENT, "lal-hub/0.1 (huggingface_hub-compatible)");
  curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl_, CURLOPT_CONNECTTIMEOUT, 10L);
  curl_easy_setopt(curl_, CURLOPT_LOW_SPEED_LIMIT, 1L);  // a transfer that stalls for a minute is retried
  curl_easy_setopt(curl_, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(curl_, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2TLS);
  curl_easy_setopt(curl_, CURLOPT_ACCEPT_ENCODING, "");  // small JSON files may come compressed
  curl_easy_setopt(curl_, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl_, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(curl_, CURLOPT_NOPROGRESS, 0L);
}

bool Http::wait_before_retry(int attempt, const std::string& why, const std::string& url) {
  if (attempt >= settings_.max_attempts) return false;
  const double delay = std::min(30.0, settings_.retry_base_seconds * double(1 << std::min(attempt - 1, 10)));
  std::cerr << "hub: " << why << " (" << url << "); retry " << attempt << "/" << settings_.max_attempts - 1 << " in "
            << delay << " s" << std::endl;
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(delay);
  while (std::chrono::steady_clock::now() < until) {
    if (cancel_ && cancel_->load()) throw Cancelled{};
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

HttpResponse Http::get(const std::string& url) {
  for (int attempt = 1;; ++attempt) {
    Transfer t;
    t.cancel = cancel_;
    t.curl = curl_;
    prepare(url);
    curl_easy_setopt(curl_, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(curl_, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT, 120L);
    const CURLcode rc = curl_easy_perform(curl_);
    if (rc == CURLE_ABORTED_BY_CALLBACK) throw Cancelled{};
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &t.response.status);
    std::string why;
    if (rc != CURLE_OK) {
      if (!retryable_curl_error(rc)) throw HubError(url + ": " + curl_easy_strerror(rc));
      why = curl_easy_strerror(rc);
    } else if (retryable_status(t.response.status)) {
      why = "HTTP " + std::to_string(t.response.status);
    } else {
      return t.response;
    }
    if (!wait_before_retry(attempt, why, url))
      throw HubError(url + ": " + why + " (gave up after " + std::to_string(attempt) + " attempts)" +
                     unreachable_hint(rc));
  }
}

HttpResponse Http::download(const std::string& url, const std::string& partial_path,
                            const std::function<void(std::uint64_t)>& on_bytes) {
  const int fd = ::open(partial_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw HubError(partial_path + ": cannot open for writing: " + std::strerror(errno));
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  bool range_refused = false;
  for (int attempt = 1;; ++attempt) {
    struct stat st {};
    if (fstat(fd, &st) != 0) throw HubError(partial_path + ": " + std::strerror(errno));
    Transfer t;
    t.fd = fd;
    t.file_size = static_cast<std::uint64_t>(st.st_size);
    t.requested_from = range_refused ? 0 : t.file_size;
    t.on_bytes = &on_bytes;
    t.cancel = cancel_;
    t.curl = curl_;
    if (t.requested_from == 0 && t.file_size > 0) {
      if (ftruncate(fd, 0) != 0) throw HubError(partial_path + ": " + std::strerror(errno));
      t.file_size = 0;
    }
    prepare(url);
    curl_easy_setopt(curl_, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(curl_, CURLOPT_XFERINFODATA, &t);
    const std::string range = std::to_string(t.requested_from) + "-";
    if (t.requested_from > 0) curl_easy_setopt(curl_, CURLOPT_RANGE, range.c_str());
    const CURLcode rc = curl_easy_perform(curl_);
    if (rc == CURLE_ABORTED_BY_CALLBACK) throw Cancelled{};
    if (!t.write_error.empty()) throw HubError(partial_path + ": write failed: " + t.write_error);
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &t.response.status);
    const long status = t.response.status;
    std::string why;
    if (rc != CURLE_OK) {
      if (!retryable_curl_error(rc)) throw HubError(url + ": " + curl_easy_strerror(rc));
      why = std::string(curl_easy_strerror(rc)) + " after " + std::to_string(t.file_size) + " bytes";
    } else if (status == 416 && t.requested_from > 0) {
      // The range starts at or past the end: what we hold is longer than the file. Start over, at once.
      range_refused = true;
      continue;
    } else if (retryable_status(status)) {
      why = "HTTP " + std::to_string(status);
    } else {
      return t.response;
    }
    range_refused = false;
    if (!wait_before_retry(attempt, why, url))
      throw HubError(url + ": " + why + " (gave up after " + std::to_string(attempt) + " attempts; " + partial_path +
                     " is kept and the next run resumes it)" + unreachable_hint(rc));
  }
}

}  // namespace lal::hub::detail
