#include "serve_api.hpp"

#include <algorithm>
#include <cmath>

#include "lal/checks/input_limits.hpp"
#include "lal/plugins/output_support.hpp"

namespace lal::serve {

using nlohmann::json;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string error_body(const ApiError& error) {
  json e = {{"message", error.what()}, {"type", error.type}};
  e["param"] = error.param.empty() ? json(nullptr) : json(error.param);
  e["code"] = error.code.empty() ? json(nullptr) : json(error.code);
  return dump(json{{"error", e}});
}

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError(400, "invalid_request_error", message, param);
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::binary: return "binary";
    case json::value_t::discarded: return "nothing";
    default: return "a number";
  }
}

double number(const json& v, const std::string& param, double lo, double hi) {
  if (!v.is_number()) bad(param, "'" + param + "' must be a number, not " + type_name(v));
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < lo || d > hi)
    bad(param, "'" + param + "' must be between " + dump(json(lo)) + " and " + dump(json(hi)) + ", got " + dump(v));
  return d;
}

std::int64_t integer(const json& v, const std::string& param, std::int64_t lo, std::int64_t hi) {
  if (!v.is_number_integer()) bad(param, "'" + param + "' must be an integer, not " + dump(v));
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(hi))
    bad(param, "'" + param + "' must be at most " + std::to_string(hi) + ", got " + dump(v));
  const std::int64_t i = v.get<std::int64_t>();
  if (i < lo || i > hi)
    bad(param, "'" + param + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
                   std::to_string(i));
  return i;
}

bool boolean(const json& v, const std::string& param) {
  if (!v.is_boolean()) bad(param, "'" + param + "' must be a boolean, not " + type_name(v));
  return v.get<bool>();
}

const std::string& string(const json& v, const std::string& param) {
  if (!v.is_string()) bad(param, "'" + param + "' must be a string, not " + type_name(v));
  return v.get_ref<const std::string&>();
}

/// A message's content as text: a string, or an array of {"type":"text","text":...} parts.
std::string content_text(const json& content, const std::string& param) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    bad(param, "'" + param + "' must be a string or an array of text parts, not " + type_name(content));
  std::string text;
  for (std::size_t i = 0; i < content.size(); ++i) {
    const std::string p = param + "[" + std::to_string(i) + "]";
    const json& part = content[i];
    if (!part.is_object() || !part.contains("type")) bad(p, "'" + p + "' must be an object with a 'type'");
    const std::string& type = string(part["type"], p + ".type");
    if (type != "text") bad(p + ".type", "'" + p + ".type' is '" + type + "': lal takes text only");
    if (!part.contains("text")) bad(p + ".text", "'" + p + ".text' is missing");
    text += string(part["text"], p + ".text");
  }
  return text;
}

/// Fields lal does not implement: refused unless absent, null or their neutral value.
void refuse_unsupported(const json& body) {
  auto present = [&](const char* key) { return body.contains(key) && !body[key].is_null(); };
  if (present("n") && !(body["n"].is_number_integer() && body["n"].get<std::int64_t>() == 1))
    bad("n", "'n' must be 1: lal thinks one answer per turn");
  for (const char* key : {"tools", "functions"})
    if (present(key) && !(body[key].is_array() && body[key].empty()))
      bad(key, std::string("'") + key + "' is not supported by lal (no tool calls)");
  for (const char* key : {"tool_choice", "function_call"})
    if (present(key) && !(body[key].is_string() && body[key].get<std::string>() == "none"))
      bad(key, std::string("'") + key + "' is not supported by lal (no tool calls)");
  if (present("logprobs") && !(body["logprobs"].is_boolean() && !body["logprobs"].get<bool>()))
    bad("logprobs", "'logprobs' is not supported by lal");
  if (present("top_logprobs")) bad("top_logprobs", "'top_logprobs' is not supported by lal");
  for (const char* key : {"frequency_penalty", "presence_penalty"})
    if (present(key) && !(body[key].is_number() && body[key].get<double>() == 0.0))
      bad(key, std::string("'") + key + "' is not supported by lal (only 0)");
  if (present("logit_bias") && !(body["logit_bias"].is_object() && body["logit_bias"].empty()))
    bad("logit_bias", "'logit_bias' is not supported by lal");
  if (present("response_format")) {
    const json& rf = body["response_format"];
    if (!rf.is_object() || !rf.contains("type") || !rf["type"].is_string() || rf["type"].get<std::string>() != "text")
      bad("response_format", "'response_format' must be {\"type\": \"text\"}: lal does not constrain output");
  }
  if (present("audio") || present("modalities") || present("prediction"))
    bad(present("audio")        ? "audio"
        : present("modalities") ? "modalities"
                                : "prediction",
        "audio, modalities and predicted outputs are not supported by lal");
}

/// `lal: {"modules.<id>.config.<key>": value}`. Only module config values: a request must not rewire the pipeline,
/// swap plugins, or point a memory tier at another file.
void read_overrides(const json& lal, ChatRequest& request, const RequestLimits& limits) {
  if (!lal.is_object()) bad("lal", "'lal' must be an object of pipeline overrides, not " + std::string(type_name(lal)));
  if (lal.size() > limits.max_overrides)
    bad("lal",
        "'lal' has " + std::to_string(lal.size()) + " overrides; at most " + std::to_string(limits.max_overrides));
  for (const auto& [path, value] : lal.items()) {
    const std::string param = "lal." + path;
    const std::string prefix = "modules.";
    const auto dot = path.find(".config.", prefix.size());
    const bool shape = path.compare(0, prefix.size(), prefix) == 0 && dot != std::string::npos && dot > prefix.size();
    const std::string key = shape ? path.substr(dot + 8) : "";
    if (!shape || key.empty() || key.find('.') != std::string::npos)
      bad(param, "'lal' keys must be modules.<id>.config.<key>, got '" + path + "'");
    if (key == "path") bad(param, "'" + path + "': a request cannot move a module's files");
    if (!(value.is_number() || value.is_boolean() || value.is_string()))
      bad(param, "'" + param + "' must be a number, a boolean or a string");
    request.overrides.emplace_back(path, dump(value));
  }
}

}  // namespace

void check_user(const std::string& user, const std::string& param, const RequestLimits& limits) {
  if (user.empty()) bad(param, "'" + param + "' must not be empty");
  if (user.size() > limits.max_user_bytes)
    bad(param, "'" + param + "' has " + std::to_string(user.size()) + " bytes; at most " +
                   std::to_string(limits.max_user_bytes));
  for (const unsigned char c : user)
    if (c < 0x20 || c == 0x7f) bad(param, "'" + param + "' must not contain control characters");
}

ChatRequest parse_chat_request(std::string_view text, const RequestLimits& limits) {
  json body;
  try {
    body = checks::parse_json_limited(text, "the request body");  // bounded nesting; 1e999 is a parse error
  } catch (const json::parse_error& e) {
    bad("", std::string("the request body is not valid JSON: ") + e.what());
  } catch (const checks::InputLimitError& e) {
    bad("", e.what());
  }
  if (!body.is_object()) bad("", std::string("the request body must be a JSON object, not ") + type_name(body));

  ChatRequest r;
  if (!body.contains("model")) bad("model", "'model' is required");
  r.model = string(body["model"], "model");

  if (!body.contains("messages")) bad("messages", "'messages' is required");
  const json& messages = body["messages"];
  if (!messages.is_array()) bad("messages", std::string("'messages' must be an array, not ") + type_name(messages));
  if (messages.empty()) bad("messages", "'messages' must not be empty");
  r.messages = messages.size();
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const std::string p = "messages[" + std::to_string(i) + "]";
    const json& m = messages[i];
    if (!m.is_object()) bad(p, "'" + p + "' must be an object");
    if (!m.contains("role")) bad(p + ".role", "'" + p + ".role' is required");
    const std::string& role = string(m["role"], p + ".role");
    if (role != "system" && role != "developer" && role != "user" && role != "assistant" && role != "tool")
      bad(p + ".role", "'" + p + ".role' must be system, developer, user, assistant or tool, not '" + role + "'");
    const bool may_be_null = role == "assistant";
    if (!m.contains("content") || m["content"].is_null()) {
      if (!may_be_null) bad(p + ".content", "'" + p + ".content' is required");
      continue;
    }
    const std::string content = content_text(m["content"], p + ".content");
    if (i + 1 == messages.size()) {
      if (role != "user")
        bad(p + ".role",
            "the last message must be the user's (role user), not " + role + ": lal answers the user's turn");
      if (content.find_first_not_of(" \t\r\n") == std::string::npos) bad(p + ".content", "the last message is empty");
      if (content.size() > limits.max_input_bytes)
        bad(p + ".content", "the last message has " + std::to_string(content.size()) + " bytes; at most " +
                                std::to_string(limits.max_input_bytes));
      r.input = content;
    }
  }

  if (body.contains("stream") && !body["stream"].is_null()) r.stream = boolean(body["stream"], "stream");
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const json& so = body["stream_options"];
    if (!so.is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!r.stream) bad("stream_options", "'stream_options' is only allowed with stream: true");
    if (so.contains("include_usage") && !so["include_usage"].is_null())
      r.include_usage = boolean(so["include_usage"], "stream_options.include_usage");
  }
  if (body.contains("user") && !body["user"].is_null()) {
    r.user = string(body["user"], "user");
    check_user(r.user, "user", limits);
    r.user_given = true;
  }
  auto opt = [&](const char* key) { return body.contains(key) && !body[key].is_null(); };
  if (opt("temperature")) r.temperature = number(body["temperature"], "temperature", 0, 2);
  if (opt("top_p")) r.top_p = number(body["top_p"], "top_p", 0, 1);
  if (opt("top_p") && *r.top_p == 0) bad("top_p", "'top_p' must be greater than 0");
  const std::int64_t kMaxTokens = 1 << 20;
  if (opt("max_completion_tokens"))
    r.max_tokens = integer(body["max_completion_tokens"], "max_completion_tokens", 1, kMaxTokens);
  else if (opt("max_tokens"))
    r.max_tokens = integer(body["max_tokens"], "max_tokens", 1, kMaxTokens);
  if (opt("seed")) r.seed = integer(body["seed"], "seed", 0, std::numeric_limits<std::int64_t>::max());
  if (opt("stop")) {
    const json& s = body["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      if (s.size() > 4) bad("stop", "'stop' has " + std::to_string(s.size()) + " strings; at most 4");
      for (std::size_t i = 0; i < s.size(); ++i) r.stop.push_back(string(s[i], "stop[" + std::to_string(i) + "]"));
    } else {
      bad("stop", std::string("'stop' must be a string or an array of strings, not ") + type_name(s));
    }
    for (const auto& st : r.stop)
      if (st.empty()) bad("stop", "'stop' strings must not be empty");
  }
  if (opt("reasoning_effort")) {
    r.reasoning_effort = string(body["reasoning_effort"], "reasoning_effort");
    if (r.reasoning_effort != "low" && r.reasoning_effort != "medium" && r.reasoning_effort != "high")
      bad("reasoning_effort", "'reasoning_effort' must be low, medium or high, not '" + r.reasoning_effort + "'");
  }
  if (opt("lal")) read_overrides(body["lal"], r, limits);
  refuse_unsupported(body);
  return r;
}

TurnEvent parse_turn_event(std::string_view line) {
  const json j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("stage") || !j.contains("kind") || !j.contains("t_ms"))
    throw std::runtime_error("not a jsonl turn event: " + std::string(line.substr(0, 200)));
  TurnEvent e;
  e.stage = parse_enum<Stage>(j.value("stage", ""), "jsonl line");
  e.kind = parse_enum<ChunkKind>(j.value("kind", ""), "jsonl line");
  e.origin = j.value("origin", "");
  e.text = j.value("text", "");
  e.last = j.value("last", false);
  e.t_ms = j.value("t_ms", 0.0);
  e.turn = j.value("turn", std::uint64_t{0});
  if (j.contains("confidence") && j["confidence"].is_number()) e.confidence = j["confidence"].get<double>();
  if (j.value("event", "") == "turn_done") {
    e.turn_done = true;
    e.cancelled = j.value("cancelled", false);
    e.strategy = parse_enum<Strategy>(j.value("strategy", ""), "jsonl turn_done line");
    e.finish_reason = parse_enum<FinishReason>(j.value("finish_reason", ""), "jsonl turn_done line");
    if (j.contains("first_output_ms") && j["first_output_ms"].is_number())
      e.first_output_ms = j["first_output_ms"].get<double>();
    if (j.contains("answer_done_ms") && j["answer_done_ms"].is_number())
      e.answer_done_ms = j["answer_done_ms"].get<double>();
  }
  return e;
}

std::string stage_heading(Stage stage, bool japanese) {
  const std::string label = plugins::stage_label(stage, japanese);
  return japanese ? "【" + label + "】" : "[" + label + "]";
}

void ThoughtSerializer::emit_lane(const std::string& key, std::vector<Piece>& out) {
  Lane& lane = lanes_[key];
  if (!lane.started && !lane.held.empty()) {
    lane.started = true;
    TurnEvent h = lane.held.front();
    h.text = (said_anything_ ? "\n\n" : "") + stage_heading(h.stage, japanese_) + "\n";
    h.last = false;
    out.push_back({std::move(h), true});
  }
  for (auto& e : lane.held) out.push_back({std::move(e), false});
  if (!lane.held.empty()) said_anything_ = true;
  lane.held.clear();
}

std::vector<ThoughtSerializer::Piece> ThoughtSerializer::feed(const TurnEvent& event) {
  std::vector<Piece> out;
  const std::string key = std::string(to_string(event.stage)) + "\x1f" + event.origin;
  auto [it, fresh] = lanes_.try_emplace(key);
  if (fresh) order_.push_back(key);
  Lane& lane = it->second;
  lane.held.push_back(event);
  if (event.last) lane.closed = true;
  if (speaking_.empty()) speaking_ = key;
  if (speaking_ != key) return out;
  // The speaking lane streams; when it closes, hand over to the next lane with something to say, oldest first.
  while (true) {
    emit_lane(speaking_, out);
    if (!lanes_[speaking_].closed) break;
    std::string next;
    for (const auto& k : order_)
      if (k != speaking_ && !lanes_[k].held.empty()) {
        next = k;
        break;
      }
    lanes_.erase(speaking_);
    order_.erase(std::find(order_.begin(), order_.end(), speaking_));
    speaking_ = next;
    if (next.empty()) break;
  }
  return out;
}

std::vector<ThoughtSerializer::Piece> ThoughtSerializer::flush() {
  std::vector<Piece> out;
  if (!speaking_.empty()) emit_lane(speaking_, out);
  for (const auto& k : order_)
    if (k != speaking_) emit_lane(k, out);
  lanes_.clear();
  order_.clear();
  speaking_.clear();
  return out;
}

std::string StopMatcher::feed(std::string_view text) {
  if (stopped_) return {};
  held_.append(text);
  std::size_t cut = std::string::npos;
  for (const auto& s : stops_) cut = std::min(cut, held_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, cut);
    held_.clear();
    return out;
  }
  // Hold back the longest tail of held_ that is a proper prefix of some stop string.
  std::size_t keep = 0;
  for (const auto& s : stops_)
    for (std::size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n)
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::flush() {
  std::string out;
  if (!stopped_) out.swap(held_);
  held_.clear();
  return out;
}

json usage_json(const Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
}

json lal_extension(const TurnEvent& event, const char* kind_override) {
  json j = {{"stage", to_string(event.stage)},
            {"kind", kind_override ? kind_override : to_string(event.kind)},
            {"origin", event.origin},
            {"t_ms", event.t_ms}};
  if (event.last) j["last"] = true;
  if (event.confidence) j["confidence"] = *event.confidence;
  if (!event.emotion.is_null()) j["emotion"] = event.emotion;
  return j;
}

json chunk_json(const std::string& id, std::int64_t created, const std::string& model, json delta,
                const char* finish_reason, json lal_ext) {
  json choice = {{"index", 0}, {"delta", std::move(delta)}, {"logprobs", nullptr}};
  choice["finish_reason"] = finish_reason ? json(finish_reason) : json(nullptr);
  json j = {{"id", id},
            {"object", "chat.completion.chunk"},
            {"created", created},
            {"model", model},
            {"choices", json::array({std::move(choice)})}};
  if (!lal_ext.is_null()) j["lal"] = std::move(lal_ext);
  return j;
}

}  // namespace lal::serve
