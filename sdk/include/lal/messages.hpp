// lal SDK — the standard message types that brain regions, memory tiers and output strategies exchange.
//
// These are the shared vocabulary of the built-in plugins; third-party plugins may define their own types (any
// struct with a kTypeName), but using these lets them plug into the stock pipelines. A layout change here bumps
// the "/N" suffix and LAL_SDK_ABI_VERSION.
//
// MODES ARE ENUMS. A stage, a chunk kind, a strategy and a finish reason travel on the bus as enums. Where they
// leave the process (jsonl output, `lal serve` JSON, memory database columns, export files) they are spelled by
// to_string() and read back by parse_enum<E>() — one table of names per enum, below, so the spellings on disk and on
// the wire cannot drift. parse_enum refuses an unknown name with std::invalid_argument naming where it came from
// and the names it knows.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace lal {

/// The names of enum E on disk and on the wire: `names[i]` spells the enumerator whose value is i. `what` names the
/// enum in error messages. Specialised below for each enum of this header.
template <class E>
struct EnumNames;

/// The name of `e` (as EnumNames<E> spells it).
template <class E>
const char* enum_name(E e) {
  const auto i = static_cast<std::size_t>(e);
  return i < EnumNames<E>::names.size() ? EnumNames<E>::names[i] : "?";
}

/// The enumerator spelled `text`. Throws std::invalid_argument "WHERE: unknown WHAT 'text' (expected a, b or c)".
template <class E>
E parse_enum(std::string_view text, std::string_view where) {
  const auto& names = EnumNames<E>::names;
  std::string expected;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (text == names[i]) return static_cast<E>(i);
    expected += std::string(i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  }
  throw std::invalid_argument(std::string(where) + ": unknown " + EnumNames<E>::what + " '" + std::string(text) +
                              "' (expected " + expected + ")");
}

/// For a value that may be absent (a memory stored without a strategy): "" is none, anything else as parse_enum.
template <class E>
std::optional<E> parse_optional_enum(std::string_view text, std::string_view where) {
  if (text.empty()) return std::nullopt;
  return parse_enum<E>(text, where);
}

/// Something the system perceives: a user's chat line, typically published on `turn.input` by the host.
struct Percept {
  static constexpr const char* kTypeName = "lal.Percept/1";
  std::string text;
  std::string source = "user";  ///< "user", "system", ...
};

/// The stage of thinking a thought belongs to. Spelled in output exactly as to_string() returns.
enum class Stage { intuition, exploration, analysis, insight, conclusion, recall, emotion };
template <>
struct EnumNames<Stage> {
  static constexpr const char* what = "stage";
  static constexpr std::array<const char*, 7> names = {"intuition",  "exploration", "analysis", "insight",
                                                       "conclusion", "recall",      "emotion"};
};
inline const char* to_string(Stage s) { return enum_name(s); }

/// What a chunk is: part of a thought, part of the final answer, a recalled memory, or a state report.
enum class ChunkKind { thought, answer, memory, state };
template <>
struct EnumNames<ChunkKind> {
  static constexpr const char* what = "chunk kind";
  static constexpr std::array<const char*, 4> names = {"thought", "answer", "memory", "state"};
};
inline const char* to_string(ChunkKind k) { return enum_name(k); }

/// How a turn was answered: `direct` (without deep analysis) or `deep` (after the full analysis).
enum class Strategy { direct, deep };
template <>
struct EnumNames<Strategy> {
  static constexpr const char* what = "strategy";
  static constexpr std::array<const char*, 2> names = {"direct", "deep"};
};
inline const char* to_string(Strategy s) { return enum_name(s); }
/// "" for none (see parse_optional_enum).
inline const char* to_string(const std::optional<Strategy>& s) { return s ? enum_name(*s) : ""; }

/// How a generation ended: `stop` (the model ended it, or a stop string / the caller did), `length` (it reached its
/// max_tokens), `cancelled`, or — for a turn's answer only — `error` (composing failed; the answer is an apology).
enum class FinishReason { stop, length, cancelled, error };
template <>
struct EnumNames<FinishReason> {
  static constexpr const char* what = "finish reason";
  static constexpr std::array<const char*, 4> names = {"stop", "length", "cancelled", "error"};
};
inline const char* to_string(FinishReason f) { return enum_name(f); }

/// A streamed piece of a thought or of the answer. A stage's text is the concatenation of its chunks in order;
/// the chunk with `last = true` closes the stage. A model-driven stage publishes one chunk per generated token (its
/// text may be empty while a UTF-8 character is incomplete) and then one closing chunk that carries no token.
struct ThoughtChunk {
  static constexpr const char* kTypeName = "lal.ThoughtChunk/2";
  Stage stage = Stage::analysis;
  ChunkKind kind = ChunkKind::thought;
  std::string text;
  bool last = false;
  /// True when this chunk carries one model token; then `logprob` is that token's log-probability under the model's
  /// (untempered) distribution and `entropy` the entropy in nats of that distribution. Read them directly: nothing
  /// to invert.
  bool has_token = false;
  float logprob = 0.0f;
  float entropy = 0.0f;
  /// Measured confidence of the stage so far, 0..1 (from its tokens; see lal/plugins/uncertainty.hpp), or -1 when
  /// nothing was measured (fixed text, no model).
  float confidence = -1.0f;
  std::string origin;  ///< id of the module that produced it
};

/// The end of a turn: everyone has said what they will say. Published by the module that concludes a turn.
struct TurnDone {
  static constexpr const char* kTypeName = "lal.TurnDone/2";
  bool cancelled = false;
  std::string user_text;                            ///< what the user said
  std::string answer;                               ///< the final answer text, for modules that store episodes
  Strategy strategy = Strategy::direct;             ///< deep when the turn's analysis spoke
  double confidence = 0.0;                          ///< measured confidence of the answer, 0..1
  std::int64_t first_output_ns = 0;                 ///< monotonic time of the turn's first visible chunk (0 = unknown)
  std::int64_t answer_done_ns = 0;                  ///< monotonic time the answer was complete
  FinishReason finish_reason = FinishReason::stop;  ///< how the answer's generation ended
};

/// One remembered item.
struct MemoryItem {
  std::string id;    ///< stable within its tier
  std::string tier;  ///< "working", "short_term", "long_term", "procedural"
  std::string text;
  std::string kind;         ///< "episodic", "semantic", "procedural", "chunk"
  double score = 0.0;       ///< ranking score (higher = more relevant); tier-specific scale, see each tier's docs
  double activation = 0.0;  ///< ACT-R style base-level activation, where the tier tracks it
  std::int64_t created_ns = 0;
};

/// Request: recall memories related to `cue` for the user in the message header.
struct RecallRequest {
  static constexpr const char* kTypeName = "lal.RecallRequest/1";
  std::string cue;
  int limit = 5;
};

/// Reply: recalled items, best first.
struct RecallReply {
  static constexpr const char* kTypeName = "lal.RecallReply/1";
  std::vector<MemoryItem> items;
};

/// What the hippocampus recalled for a turn (published once per turn, after asking every tier).
struct Recollection {
  static constexpr const char* kTypeName = "lal.Recollection/2";
  std::string cue;
  std::vector<MemoryItem> items;  ///< best first, across tiers
  /// Set when procedural memory recognises the request: the strategy that worked before and how sure it is
  /// (0..1). None when unfamiliar.
  std::optional<Strategy> suggested_strategy;
  double strategy_confidence = 0.0;
};

/// An episode to remember (what was said and answered), for the user in the message header. Published by the
/// hippocampus when a turn is done; memory tiers encode it.
struct Episode {
  static constexpr const char* kTypeName = "lal.Episode/2";
  std::string user_text;
  std::string answer;
  double importance = 0.5;               ///< 0..1, e.g. from emotional arousal and explicit "remember this"
  Strategy strategy = Strategy::direct;  ///< how the turn was answered
  double confidence = 0.0;               ///< measured confidence of the answer (0..1); how well the strategy worked
  std::string emotion;                   ///< emotion label during the turn
};

/// The emotional state of the system (PAD model) with a categorical label.
struct EmotionState {
  static constexpr const char* kTypeName = "lal.EmotionState/1";
  double valence = 0.0;    ///< -1 (unpleasant) .. 1 (pleasant)
  double arousal = 0.0;    ///< -1 (calm) .. 1 (excited)
  double dominance = 0.0;  ///< -1 (submissive) .. 1 (in control)
  std::string label;       ///< e.g. Plutchik "joy", "trust", "fear", "surprise", "sadness", "anger", "neutral"
};

}  // namespace lal
