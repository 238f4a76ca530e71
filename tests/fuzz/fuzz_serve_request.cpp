// libFuzzer target: lal serve's request parsing (POST /v1/chat/completions bodies). Contract: any body is accepted
// as a checked ChatRequest or refused with ApiError (a 4xx status, whose JSON error body can be written); a crash, a
// leak, undefined behaviour or another exception type is a finding.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "serve_api.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  try {
    const auto request = lal::serve::parse_chat_request(body);
    if (request.user.empty()) __builtin_trap();  // check_user refuses an empty partition name
    if (request.temperature && !(*request.temperature >= 0 && *request.temperature <= 2)) __builtin_trap();
    if (request.top_p && !(*request.top_p > 0 && *request.top_p <= 1)) __builtin_trap();
  } catch (const lal::serve::ApiError& e) {
    if (e.status < 400 || e.status > 499) __builtin_trap();
    (void)lal::serve::error_body(e);
  }
  return 0;
}
