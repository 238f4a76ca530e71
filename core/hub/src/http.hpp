// HTTP for the hub client, on libcurl: one Http per thread (it keeps its connections between requests).
// Retries with exponential backoff on connection errors, 5xx and 429; never on other 4xx.
#pragma once

#include <curl/curl.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "lal/hub/hub.hpp"

namespace lal::hub::detail {

struct HttpResponse {
  long status = 0;
  std::string body;        ///< the body (for errors: what the server said, truncated to 64 KiB)
  std::string error_code;  ///< the Hub's X-Error-Code header (RepoNotFound, GatedRepo, ...), if any
  std::string error_text;  ///< the Hub's X-Error-Message header, if any
};

/// Thrown when the caller's cancel flag was raised during a request.
struct Cancelled {};

class Http {
 public:
  Http(const HubSettings& settings, const std::atomic<bool>* cancel);
  ~Http();
  Http(const Http&) = delete;
  Http& operator=(const Http&) = delete;

  /// GET `url` into memory. Returns the final response, whatever its status; throws HubError when the server could
  /// not be reached after every attempt.
  HttpResponse get(const std::string& url);

  /// GET `url`, appending to `partial_path` from its current size with a Range request (starting over when the
  /// server ignores the range). `on_bytes(file_size)` is called as data arrives. Returns the final response
  /// (status 200 or 206 when the file is complete as the server sent it); throws HubError for a connection that
  /// failed on every attempt.
  HttpResponse download(const std::string& url, const std::string& partial_path,
                        const std::function<void(std::uint64_t)>& on_bytes);

  /// URL-escape one path segment.
  std::string escape(const std::string& segment);

 private:
  void prepare(const std::string& url);
  bool wait_before_retry(int attempt, const std::string& why, const std::string& url);

  const HubSettings& settings_;
  const std::atomic<bool>* cancel_;
  CURL* curl_ = nullptr;
  struct curl_slist* headers_ = nullptr;
};

bool retryable_status(long status);

}  // namespace lal::hub::detail
