// lal SDK — the standard message types that brain regions, memory tiers and output strategies exchange.
//
// These are the shared vocabulary of the built-in plugins; third-party plugins may define their own types (any
// struct with a kTypeName), but using these lets them plug into the stock pipelines. A layout change here bumps
// the "/N" suffix and LAL_SDK_ABI_VERSION.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lal {

/// Something the system perceives: a user's chat line, typically published on `turn.input` by the host.
struct Percept {
  static constexpr const char* kTypeName = "lal.Percept/1";
  std::string text;
  std::string source = "user";  ///< "user", "system", ...
};

/// The stage of thinking a thought belongs to. Spelled in output exactly as to_string() returns.
enum class Stage { intuition, exploration, analysis, insight, conclusion, recall, emotion };

inline const char* to_string(Stage s) {
  switch (s) {
    case Stage::intuition: return "intuition";
    case Stage::exploration: return "exploration";
    case Stage::analysis: return "analysis";
    case Stage::insight: return "insight";
    case Stage::conclusion: return "conclusion";
    case Stage::recall: return "recall";
    case Stage::emotion: return "emotion";
  }
  return "analysis";
}

/// What a chunk is: part of a thought, part of the final answer, a recalled memory, or a state report.
enum class ChunkKind { thought, answer, memory, state };

inline const char* to_string(ChunkKind k) {
  switch (k) {
    case ChunkKind::thought: return "thought";
    case ChunkKind::answer: return "answer";
    case ChunkKind::memory: return "memory";
    case ChunkKind::state: return "state";
  }
  return "thought";
}

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
  static constexpr const char* kTypeName = "lal.TurnDone/1";
  bool cancelled = false;
  std::string user_text;    ///< what the user said
  std::string answer;       ///< the final answer text, for modules that store episodes
  std::string strategy;     ///< "direct" or "deep"
  double confidence = 0.0;  ///< measured confidence of the answer, 0..1
  std::int64_t first_output_ns = 0;  ///< monotonic time of the turn's first visible chunk (0 = unknown)
  std::int64_t answer_done_ns = 0;   ///< monotonic time the answer was complete
  /// How the answer's generation ended: "stop" (the model ended it), "length" (it reached the answer's
  /// max_tokens), "cancelled", or "error" (composing failed; the answer is a fixed apology).
  std::string finish_reason;
};

/// One remembered item.
struct MemoryItem {
  std::string id;           ///< stable within its tier
  std::string tier;         ///< "working", "short_term", "long_term", "procedural"
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
  static constexpr const char* kTypeName = "lal.Recollection/1";
  std::string cue;
  std::vector<MemoryItem> items;  ///< best first, across tiers
  /// Set when procedural memory recognises the request: the strategy that worked before ("direct" = answer
  /// without deep analysis, "deep" = full analysis) and how sure it is (0..1). Empty when unfamiliar.
  std::string suggested_strategy;
  double strategy_confidence = 0.0;
};

/// An episode to remember (what was said and answered), for the user in the message header. Published by the
/// hippocampus when a turn is done; memory tiers encode it.
struct Episode {
  static constexpr const char* kTypeName = "lal.Episode/1";
  std::string user_text;
  std::string answer;
  double importance = 0.5;  ///< 0..1, e.g. from emotional arousal and explicit "remember this"
  std::string strategy;     ///< how the turn was answered: "direct" or "deep"
  double confidence = 0.0;  ///< measured confidence of the answer (0..1); how well the strategy worked
  std::string emotion;      ///< emotion label during the turn
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
