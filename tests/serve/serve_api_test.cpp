// lal serve's wire format without a network: request checking (400s name the field), the thought serializer, stop
// strings, jsonl event parsing.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "serve_api.hpp"

#include <doctest/doctest.h>

using namespace lal::serve;
using lal::FinishReason;
using lal::Strategy;
using nlohmann::json;

namespace {

ApiError refused(const std::string& body) {
  try {
    parse_chat_request(body);
  } catch (const ApiError& e) {
    return e;
  }
  FAIL("accepted: " << body);
  return ApiError(0, "", "");
}

std::string with(const json& extra) {
  json body = {{"model", "lal"}, {"messages", json::array({{{"role", "user"}, {"content", "こんにちは"}}})}};
  for (const auto& [k, v] : extra.items()) body[k] = v;
  return body.dump();
}

}  // namespace

TEST_CASE("a plain request reads every field") {
  const ChatRequest r = parse_chat_request(with({{"stream", true},
                                                 {"stream_options", {{"include_usage", true}}},
                                                 {"temperature", 0.3},
                                                 {"top_p", 0.9},
                                                 {"max_completion_tokens", 40},
                                                 {"max_tokens", 7},
                                                 {"seed", 5},
                                                 {"stop", {"。", "\n"}},
                                                 {"user", "taro"},
                                                 {"reasoning_effort", "low"},
                                                 {"lal", {{"modules.left_brain.config.max_tokens", 12}}},
                                                 {"frequency_penalty", 0},
                                                 {"n", 1},
                                                 {"some_future_field", {1, 2}}}));
  CHECK(r.model == "lal");
  CHECK(r.input == "こんにちは");
  CHECK(r.stream);
  CHECK(r.include_usage);
  CHECK(*r.temperature == doctest::Approx(0.3));
  CHECK(*r.top_p == doctest::Approx(0.9));
  CHECK(*r.max_tokens == 40);  // max_completion_tokens wins over the deprecated max_tokens
  CHECK(*r.seed == 5);
  CHECK(r.stop == std::vector<std::string>{"。", "\n"});
  CHECK(r.user == "taro");
  CHECK(r.reasoning_effort == "low");
  REQUIRE(r.overrides.size() == 1);
  CHECK(r.overrides[0].first == "modules.left_brain.config.max_tokens");
  CHECK(r.overrides[0].second == "12");
}

TEST_CASE("the turn is the last message, text parts are joined, defaults stay unset") {
  const ChatRequest r = parse_chat_request(
      json{{"model", "lal"},
           {"messages", json::array({{{"role", "system"}, {"content", "be brief"}},
                                     {{"role", "user"}, {"content", "a"}},
                                     {{"role", "assistant"}, {"content", nullptr}},
                                     {{"role", "user"},
                                      {"content", json::array({{{"type", "text"}, {"text", "光"}},
                                                               {{"type", "text"}, {"text", "合成"}}})}}})}}
          .dump());
  CHECK(r.input == "光合成");
  CHECK(r.messages == 4);
  CHECK(r.user == "default");
  CHECK(!r.stream);
  CHECK(!r.temperature);
  CHECK(!r.max_tokens);
  CHECK(r.stop.empty());
}

TEST_CASE("bad requests are 400 with the field named") {
  struct Case {
    std::string body, param;
  };
  const std::vector<Case> cases = {
      {"{", ""},
      {"[]", ""},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "model"},
      {with({{"messages", json::array()}}), "messages"},
      {with({{"messages", "hi"}}), "messages"},
      {with({{"messages", json::array({{{"role", "robot"}, {"content", "x"}}})}}), "messages[0].role"},
      {with({{"messages", json::array({{{"role", "assistant"}, {"content", "x"}}})}}), "messages[0].role"},
      {with({{"messages", json::array({{{"role", "user"}, {"content", "  "}}})}}), "messages[0].content"},
      {with({{"messages", json::array({{{"role", "user"}, {"content", 3}}})}}), "messages[0].content"},
      {with({{"messages", json::array({{{"role", "user"},
                                        {"content", json::array({{{"type", "image_url"}, {"image_url", "x"}}})}}})}}),
       "messages[0].content[0].type"},
      {with({{"temperature", "hot"}}), "temperature"},
      {with({{"temperature", 2.5}}), "temperature"},
      {with({{"top_p", 0}}), "top_p"},
      {with({{"max_tokens", 0}}), "max_tokens"},
      {with({{"max_tokens", 1.5}}), "max_tokens"},
      {with({{"max_completion_tokens", -3}}), "max_completion_tokens"},
      {with({{"seed", -1}}), "seed"},
      {with({{"stop", {"a", "b", "c", "d", "e"}}}), "stop"},
      {with({{"stop", ""}}), "stop"},
      {with({{"stop", 5}}), "stop"},
      {with({{"stream", "yes"}}), "stream"},
      {with({{"stream_options", {{"include_usage", true}}}}), "stream_options"},
      {with({{"user", 7}}), "user"},
      {with({{"user", ""}}), "user"},
      {with({{"user", std::string(300, 'u')}}), "user"},
      {with({{"user", "a\nb"}}), "user"},
      {with({{"reasoning_effort", "extreme"}}), "reasoning_effort"},
      {with({{"n", 2}}), "n"},
      {with({{"tools", json::array({{{"type", "function"}}})}}), "tools"},
      {with({{"logprobs", true}}), "logprobs"},
      {with({{"presence_penalty", 0.5}}), "presence_penalty"},
      {with({{"response_format", {{"type", "json_object"}}}}), "response_format"},
      {with({{"lal", 3}}), "lal"},
      {with({{"lal", {{"resources.model.path", "/etc"}}}}), "lal.resources.model.path"},
      {with({{"lal", {{"modules.long_term.config.path", "/tmp/x.db"}}}}), "lal.modules.long_term.config.path"},
      {with({{"lal", {{"modules.left_brain.plugin", "jsonl"}}}}), "lal.modules.left_brain.plugin"},
      {with({{"lal", {{"modules.left_brain.config.max_tokens", json::array({1})}}}}),
       "lal.modules.left_brain.config.max_tokens"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.body);
    const ApiError e = refused(c.body);
    CHECK(e.status == 400);
    CHECK(e.type == "invalid_request_error");
    CHECK(e.param == c.param);
    const json body = json::parse(error_body(e));
    CHECK(body["error"]["message"].get<std::string>().size() > 5);
    CHECK(body["error"].contains("code"));
  }
}

TEST_CASE("an oversized last message is refused, not truncated") {
  RequestLimits limits;
  limits.max_input_bytes = 10;
  CHECK_THROWS_AS(
      parse_chat_request(with({{"messages", json::array({{{"role", "user"}, {"content", "12345678901"}}})}}), limits),
      ApiError);
  CHECK(parse_chat_request(with({{"messages", json::array({{{"role", "user"}, {"content", "1234567890"}}})}}), limits)
            .input == "1234567890");
}

TEST_CASE("arbitrary bytes never crash the parser") {
  std::uint64_t x = 88172645463325252ull;
  const std::string seed = with({{"stream", true}, {"stop", {"x"}}, {"lal", {{"modules.a.config.b", 1}}}});
  for (int i = 0; i < 3000; ++i) {
    std::string s = seed;
    for (int k = 0; k < 4; ++k) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      s[x % s.size()] = static_cast<char>(x >> 24);
    }
    try {
      parse_chat_request(s);
    } catch (const ApiError& e) {
      CHECK(e.status == 400);
    }
  }
}

TEST_CASE("jsonl events parse, turn_done included") {
  const TurnEvent e = parse_turn_event(
      R"({"t_ms":12.5,"turn":3,"user":"u","stage":"analysis","kind":"thought","text":"まず","origin":"left_brain","last":false,"confidence":0.4})");
  CHECK(e.stage == lal::Stage::analysis);
  CHECK(e.kind == lal::ChunkKind::thought);
  CHECK(e.origin == "left_brain");
  CHECK(e.text == "まず");
  CHECK(e.turn == 3);
  CHECK(*e.confidence == doctest::Approx(0.4));
  CHECK(!e.turn_done);
  const TurnEvent d = parse_turn_event(
      R"({"t_ms":80,"turn":3,"stage":"conclusion","kind":"state","event":"turn_done","text":"a","cancelled":false,"strategy":"deep","first_output_ms":4.5,"answer_done_ms":null,"finish_reason":"length"})");
  CHECK(d.turn_done);
  CHECK(d.strategy == Strategy::deep);
  CHECK(d.finish_reason == FinishReason::length);
  CHECK(*d.first_output_ms == doctest::Approx(4.5));
  CHECK(!d.answer_done_ms);
  CHECK_THROWS(parse_turn_event("not json"));
  CHECK_THROWS_WITH_AS(parse_turn_event(R"({"t_ms":1,"stage":"musing","kind":"thought","text":"x"})"),
                       "jsonl line: unknown stage 'musing' (expected intuition, exploration, analysis, insight, "
                       "conclusion, recall or emotion)",
                       std::invalid_argument);
  CHECK_THROWS(parse_turn_event("{\"x\":1}"));
  // Every spelling the jsonl output writes reads back; an unknown one is refused, saying which and what it knows.
  for (const char* reason : {"stop", "length", "cancelled", "error"}) {
    const std::string line = std::string(R"({"t_ms":1,"stage":"conclusion","kind":"state","event":"turn_done",)") +
                             R"("strategy":"direct","finish_reason":")" + reason + "\"}";
    CHECK(to_string(*parse_turn_event(line).finish_reason) == std::string(reason));
  }
  CHECK_THROWS_WITH_AS(
      parse_turn_event(
          R"({"t_ms":1,"stage":"conclusion","kind":"state","event":"turn_done","strategy":"fast","finish_reason":"stop"})"),
      "jsonl turn_done line: unknown strategy 'fast' (expected direct or deep)", std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      parse_turn_event(
          R"({"t_ms":1,"stage":"conclusion","kind":"state","event":"turn_done","strategy":"deep","finish_reason":"done"})"),
      "jsonl turn_done line: unknown finish reason 'done' (expected stop, length, cancelled or error)",
      std::invalid_argument);
}

namespace {
TurnEvent ev(const char* stage, const char* origin, const char* text, bool last = false) {
  TurnEvent e;
  e.stage = lal::parse_enum<lal::Stage>(stage, "test");
  e.kind = lal::ChunkKind::thought;
  e.origin = origin;
  e.text = text;
  e.last = last;
  return e;
}
std::string text_of(const std::vector<ThoughtSerializer::Piece>& pieces) {
  std::string s;
  for (const auto& p : pieces) s += p.event.text;
  return s;
}
}  // namespace

TEST_CASE("interleaved stages come out one at a time, each under its heading") {
  ThoughtSerializer s(true);
  std::string out;
  out += text_of(s.feed(ev("intuition", "right_brain", "たぶん")));
  out += text_of(s.feed(ev("analysis", "left_brain", "まず")));  // held: intuition speaks
  out += text_of(s.feed(ev("intuition", "right_brain", "光", false)));
  CHECK(out == "【直感】\nたぶん光");
  out += text_of(s.feed(ev("analysis", "left_brain", "次に")));  // still held
  const auto handover = s.feed(ev("intuition", "right_brain", "", true));
  out += text_of(handover);
  CHECK(out == "【直感】\nたぶん光\n\n【分析】\nまず次に");
  bool heading_marked = false;
  for (const auto& p : handover)
    if (p.heading) heading_marked = p.event.stage == lal::Stage::analysis;
  CHECK(heading_marked);
  out += text_of(s.feed(ev("analysis", "left_brain", "。", true)));
  out += text_of(s.feed(ev("insight", "insight", "あ")));  // nobody speaking: streams at once
  out += text_of(s.flush());
  CHECK(out == "【直感】\nたぶん光\n\n【分析】\nまず次に。\n\n【ひらめき】\nあ");
}

TEST_CASE("stop strings cut the answer, even across chunks") {
  StopMatcher m({"END", "。"});
  std::string out;
  out += m.feed("答えはE");
  out += m.feed("N");
  CHECK(out == "答えは");  // "EN" may begin END: held
  out += m.feed("X です");
  CHECK(out == "答えはENX です");
  out += m.feed("ね。そして");
  CHECK(m.stopped());
  CHECK(out == "答えはENX ですね");
  CHECK(m.feed("more") == "");
  CHECK(m.flush() == "");

  StopMatcher open({"END"});
  CHECK(open.feed("abcEN") == "abc");
  CHECK(open.flush() == "EN");  // never completed: released at the end

  StopMatcher none({});
  CHECK(none.feed("abc") == "abc");
}

TEST_CASE("chunks carry the OpenAI shape and the lal extension") {
  TurnEvent e = ev("analysis", "left_brain", "x", true);
  e.t_ms = 3.5;
  e.confidence = 0.25;
  const json c = chunk_json("chatcmpl-1", 7, "lal", {{"reasoning_content", "x"}}, nullptr, lal_extension(e));
  CHECK(c["object"] == "chat.completion.chunk");
  CHECK(c["choices"][0]["delta"]["reasoning_content"] == "x");
  CHECK(c["choices"][0]["finish_reason"].is_null());
  CHECK(c["lal"]["stage"] == "analysis");
  CHECK(c["lal"]["kind"] == "thought");
  CHECK(c["lal"]["origin"] == "left_brain");
  CHECK(c["lal"]["t_ms"] == 3.5);
  CHECK(c["lal"]["last"] == true);
  CHECK(usage_json({3, 4})["total_tokens"] == 7);
  CHECK(dump(json("\xff")) == "\"\xef\xbf\xbd\"");  // a cut UTF-8 character is replaced, never thrown
}
