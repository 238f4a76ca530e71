// lal serve — the OpenAI-compatible wire format, without the network: parse and check a chat-completions request,
// and turn the pipeline's events into response chunks. Torch-free and Boost-free (nlohmann-json only), so the
// parser can be unit-tested and fuzzed on its own (tests/serve/serve_api_test.cpp).
//
// Who calls what: the HTTP server (serve_server.cpp) calls parse_chat_request() on each POST body from its
// connection thread, and builds one ThoughtSerializer + StopMatcher per turn, fed from that same thread. Nothing here
// is shared between threads.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "lal/messages.hpp"

namespace lal::serve {

/// An error answered to the client in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string type, std::string message, std::string param = {}, std::string code = {})
      : std::runtime_error(message),
        status(status),
        type(std::move(type)),
        param(std::move(param)),
        code(std::move(code)) {}
  int status;         ///< HTTP status: 400, 401, 404, 413, 429, 500, 503, ...
  std::string type;   ///< "invalid_request_error", "authentication_error", "rate_limit_error", "server_error"
  std::string param;  ///< the request field at fault, "" = none
  std::string code;   ///< e.g. "model_not_found", "" = none
};

/// The JSON body of an error response.
std::string error_body(const ApiError& error);

/// A checked POST /v1/chat/completions request. Fields that were absent keep "unset" values (nullopt / empty) so
/// the pipeline's own settings stay in force.
struct ChatRequest {
  std::string model;
  std::string input;             ///< the text of the last message (role user): the turn's percept
  std::size_t messages = 0;      ///< how many messages the client sent (earlier ones are the client's copy)
  std::string user = "default";  ///< memory partition (OpenAI `user`)
  bool user_given = false;       ///< the body named a user
  bool stream = false;
  bool include_usage = false;              ///< stream_options.include_usage
  std::optional<double> temperature;       ///< 0..2
  std::optional<double> top_p;             ///< 0..1
  std::optional<std::int64_t> max_tokens;  ///< max_completion_tokens or max_tokens, ≥ 1
  std::optional<std::int64_t> seed;        ///< ≥ 0
  std::vector<std::string> stop;           ///< up to 4 non-empty strings, applied to the answer
  std::string reasoning_effort;            ///< "", "low", "medium" or "high"
  /// `lal: {"modules.<id>.config.<key>": value}` — pipeline config overrides, value as YAML (JSON) text.
  std::vector<std::pair<std::string, std::string>> overrides;
};

/// Limits on a request beyond the HTTP body size.
struct RequestLimits {
  std::size_t max_input_bytes = 32 * 1024;  ///< the last user message
  std::size_t max_user_bytes = 256;
  std::size_t max_overrides = 32;
};

/// Parse and check `body`. Throws ApiError (status 400, `param` naming the field) for malformed JSON, a field of the
/// wrong type or range, an empty message list, a last message that is not the user's, non-text content, and for
/// OpenAI features lal does not implement when asked for (n > 1, tools, logprobs, penalties, logit_bias,
/// response_format other than text, audio): refused, never silently ignored. Fields it does not know are ignored, as
/// OpenAI-compatible servers do.
ChatRequest parse_chat_request(std::string_view body, const RequestLimits& limits = {});

/// Check a memory-partition name (the `user` field, or the server's --user_header): non-empty, at most
/// limits.max_user_bytes, no control characters. Throws ApiError 400 naming `param`.
void check_user(const std::string& user, const std::string& param, const RequestLimits& limits = {});

/// One event of a turn as the pipeline's jsonl output strategy writes it (see plugins/output/jsonl).
struct TurnEvent {
  Stage stage = Stage::analysis;
  ChunkKind kind = ChunkKind::thought;
  std::string origin;  ///< module id
  std::string text;
  bool last = false;
  double t_ms = 0;  ///< since the turn's percept
  std::optional<double> confidence;
  nlohmann::json emotion;  ///< {label, valence, arousal, dominance} for an emotion-state event, else null
  bool turn_done = false;  ///< the closing event (then the fields below are set)
  bool cancelled = false;
  std::optional<Strategy> strategy;           ///< TurnDone::strategy
  std::optional<FinishReason> finish_reason;  ///< of the answer (TurnDone::finish_reason)
  std::optional<double> first_output_ms, answer_done_ms;
  std::uint64_t turn = 0;
};

/// Parse one line of the jsonl output strategy. Throws std::runtime_error on a line that is not such an event, and
/// std::invalid_argument on a line with an unknown stage, kind, strategy or finish_reason (lal::parse_enum).
TurnEvent parse_turn_event(std::string_view line);

/// Thoughts of different stages arrive interleaved (regions think at once). As one text (reasoning_content) that
/// would be unreadable, so the serializer lets one stage speak at a time: the first stage to start streams live; a
/// stage that starts meanwhile is held until the speaking one closes, then flushed and streamed live in turn. Each
/// stage opens with a heading piece ("【分析】"). Answer events are not passed here.
class ThoughtSerializer {
 public:
  struct Piece {
    TurnEvent event;       ///< the event this text belongs to (its stage, origin, t_ms)
    bool heading = false;  ///< a stage heading made by the serializer (kind "heading"), not model text
  };
  explicit ThoughtSerializer(bool japanese_headings = true) : japanese_(japanese_headings) {}
  /// Feed a thought event; returns what may go out now, in order.
  std::vector<Piece> feed(const TurnEvent& event);
  /// Everything still held (at the end of the turn), in order.
  std::vector<Piece> flush();

 private:
  struct Lane {
    std::vector<TurnEvent> held;
    bool closed = false;
    bool started = false;  ///< its heading went out
  };
  void emit_lane(const std::string& key, std::vector<Piece>& out);
  bool japanese_;
  bool said_anything_ = false;
  std::string speaking_;            ///< key of the stage streaming live, "" = none
  std::vector<std::string> order_;  ///< keys in order of first arrival
  std::map<std::string, Lane> lanes_;
};

/// The heading of a stage in reasoning text, e.g. "【分析】" (ja) or "[analysis]" (en).
std::string stage_heading(Stage stage, bool japanese);

/// OpenAI `stop` on a streamed text: passes text through, holding back a tail that could begin a stop string, and
/// reports when one appears (the text from it on is never released).
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  /// Returns the text that may go out now.
  std::string feed(std::string_view text);
  /// At the end: what is still held (a partial match that never completed).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

/// Token usage of a turn, OpenAI's `usage` object.
struct Usage {
  std::int64_t prompt_tokens = 0;      ///< tokens of the user's message
  std::int64_t completion_tokens = 0;  ///< every token the pipeline generated for the turn (thoughts + answer)
};
nlohmann::json usage_json(const Usage& usage);

/// A streamed chunk ("chat.completion.chunk") carrying `delta`, with the `lal` extension when non-null.
nlohmann::json chunk_json(const std::string& id, std::int64_t created, const std::string& model, nlohmann::json delta,
                          const char* finish_reason, nlohmann::json lal_extension);

/// The `lal` extension of a chunk: {stage, kind, origin, t_ms[, confidence]}.
nlohmann::json lal_extension(const TurnEvent& event, const char* kind_override = nullptr);

/// JSON text for the wire: invalid UTF-8 (a cut character from a model) replaced, never thrown.
std::string dump(const nlohmann::json& j);

}  // namespace lal::serve
