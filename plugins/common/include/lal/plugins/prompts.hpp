// Prompts and generation settings shared by the model-driven brain regions (right_brain, left_brain, insight,
// frontal_lobe): the persona in Japanese (default) or English, one instruction per role, how the emotion state
// modulates expression, seeding, and the config keys every such region declares.
//
// EMOTION → EXPRESSION. A region that reads `emotion.state` changes two things, and only these:
//   * temperature = base temperature + emotion_temperature_gain × arousal, clamped to [0.05, 1.5]
//     (excited → livelier sampling, calm → steadier);
//   * a tone line appended to the system prompt, chosen by the Plutchik label (fear → "carefully, with reassuring
//     words", joy → "warmly", anger/disgust → "calmly and politely", ...; neutral adds nothing).
//
// SEEDS. Sampling is seeded from the config `seed`, the turn id and a per-role salt, so a run with the same seed
// and the same inputs samples the same tokens, while two roles of one turn do not share a random stream.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "lal/config.hpp"
#include "lal/contract.hpp"
#include "lal/messages.hpp"
#include "lal/module.hpp"
#include "lal/options.hpp"
#include "lal/services/language_model.hpp"

namespace lal::plugins {

enum class Language { ja, en };

/// What a generation is for. Each role has its own instruction and seed salt.
enum class Role { intuition, exploration, analysis, insight, answer };

inline std::string default_persona(Language lang) {
  return lang == Language::ja
             ? "あなたは人のように考えながら話す対話AIです。日本語で、自然に、簡潔に話します。"
             : "You are a conversational AI that thinks the way a person does, out loud. You speak naturally and "
               "concisely, in English.";
}

inline const char* role_instruction(Role role, Language lang) {
  const bool ja = lang == Language::ja;
  switch (role) {
    case Role::intuition:
      return ja ? "ユーザーの言葉を聞いて最初に浮かんだ直感的な印象を、一、二文だけで述べてください。考え込まず、感じた"
                  "ままに。"
                : "Say in one or two sentences the first intuitive impression the user's words give you. Do not "
                  "deliberate; say what you sense.";
    case Role::exploration:
      return ja ? "答える前に、何が問われているかを整理し、関係しそうな知識や思い出したことを短く挙げてください。まだ結"
                  "論は出さないでください。"
                : "Before answering, lay out briefly what is being asked and which facts or memories may matter. "
                  "Do not conclude yet.";
    case Role::analysis:
      return ja ? "探索した内容をもとに、筋道を立てて段階的に分析してください。"
                : "Building on the exploration, analyse the question step by step.";
    case Role::insight:
      return ja ? "考えている途中で気づいたこと（ひらめき）を一文で述べてください。"
                : "State in one sentence the realisation you just had while thinking.";
    case Role::answer:
      return ja ? "これまでの直感・分析・ひらめき・記憶を踏まえ、ユーザーへの最終的な答えを簡潔に述べてください。考えの"
                  "過程は繰り返さず、答えだけを。"
                : "Taking your intuition, analysis, insight and memories into account, give the user your final "
                  "answer concisely. Do not repeat the reasoning; just answer.";
  }
  return "";
}

/// The tone an emotion label asks for (empty for neutral or unknown labels).
inline std::string tone_for(const std::string& label, Language lang) {
  const bool ja = lang == Language::ja;
  if (label == "joy") return ja ? "明るく温かい言葉で" : "warmly and brightly";
  if (label == "trust") return ja ? "落ち着いて率直に" : "calmly and openly";
  if (label == "fear") return ja ? "慎重に、相手を安心させる言葉で" : "carefully, with reassuring words";
  if (label == "surprise")
    return ja ? "驚きを素直に表しつつ、整理して" : "showing your surprise, then sorting things out";
  if (label == "sadness") return ja ? "やさしく、寄り添う言葉で" : "gently and with empathy";
  if (label == "anger" || label == "disgust") return ja ? "冷静に、丁寧な言葉で" : "calmly and politely";
  if (label == "anticipation") return ja ? "前向きに" : "with eager, forward-looking words";
  return {};
}

/// The system prompt of `role`: persona (config override or default), the role's instruction, and the tone line.
inline std::string system_prompt(Role role, Language lang, const std::string& persona, const std::string& tone) {
  std::string s = persona.empty() ? default_persona(lang) : persona;
  s += "\n";
  s += role_instruction(role, lang);
  if (!tone.empty()) s += lang == Language::ja ? "\n話し方: " + tone + "。" : "\nTone: " + tone + ".";
  return s;
}

inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// The sampling seed of one role in one turn (see SEEDS above).
inline std::uint64_t turn_seed(std::uint64_t seed, TurnId turn, Role role) {
  return splitmix64(seed ^ splitmix64(turn) ^ (static_cast<std::uint64_t>(role) + 1) * 0x632BE59BD9B4E019ull);
}

/// Recalled memories as prompt lines ("- text"), best first, at most `limit`.
inline std::string format_memories(const std::vector<MemoryItem>& items, std::size_t limit) {
  std::string s;
  for (std::size_t i = 0; i < items.size() && i < limit; ++i) s += "- " + items[i].text + "\n";
  return s;
}

/// The generation settings every model-driven region has: nested into each region's options struct
/// (`o.nested(&LeftBrainOptions::model)`) with that region's defaults (`ModelSettings::with(...)`).
struct ModelSettings {
  std::string model = "model";
  Language language = Language::ja;
  std::string persona;
  int max_tokens = 64;
  int min_tokens = 4;
  double temperature = 0.7;
  double top_p = 0.95;
  int priority = 0;
  std::int64_t seed = 0;
  double emotion_temperature_gain = 0.2;

  /// The defaults that differ between regions.
  static ModelSettings with(int max_tokens, double temperature, int priority) {
    ModelSettings s;
    s.max_tokens = max_tokens;
    s.temperature = temperature;
    s.priority = priority;
    return s;
  }

  static void declare(Options<ModelSettings>& o) {
    o.field("model", &ModelSettings::model, "name of the LanguageModel service (pipeline `resources:`)");
    o.field("language", &ModelSettings::language, "persona language: ja or en")
        .choices({{"ja", Language::ja}, {"en", Language::en}});
    o.field("persona", &ModelSettings::persona, "system prompt persona; empty = the built-in one for `language`");
    o.field("max_tokens", &ModelSettings::max_tokens, "most tokens to generate").min(1);
    o.field("min_tokens", &ModelSettings::min_tokens,
            "no end-of-sequence before this many tokens (GenerationRequest::min_new_tokens)")
        .min(0);
    o.field("temperature", &ModelSettings::temperature, "sampling temperature before emotion modulation").range(0, 2);
    o.field("top_p", &ModelSettings::top_p, "nucleus sampling threshold (1 = off)").range(0, 1);
    o.field("priority", &ModelSettings::priority, "GenerationRequest::priority: higher is served first by a shared model");
    o.field("seed", &ModelSettings::seed, "sampling seed; combined with the turn id so runs are reproducible").min(0);
    o.field("emotion_temperature_gain", &ModelSettings::emotion_temperature_gain,
            "temperature += gain × arousal of the current emotion")
        .range(-1, 1);
  }
};

/// The language model named `name`, or a clear error (thrown from start(), so the pipeline refuses to load).
inline std::shared_ptr<LanguageModel> require_model(Context& ctx, const std::string& name) {
  auto m = ctx.service<LanguageModel>(name);
  if (!m)
    throw std::runtime_error("module '" + ctx.module_id() + "' needs a LanguageModel service named '" + name +
                             "', but none is registered (declare it under the pipeline's `resources:`, or set the "
                             "`model` config key)");
  return m;
}

/// A chat request for `role`: system prompt with persona and emotion tone, the user content, emotion-modulated
/// temperature and the role's seed for this turn. `emotion` may be null (no emotion module wired).
inline GenerationRequest make_request(const ModelSettings& s, Role role, const std::string& user_content, TurnId turn,
                                      const EmotionState* emotion, int max_tokens) {
  GenerationRequest r;
  const std::string tone = emotion ? tone_for(emotion->label, s.language) : std::string();
  r.messages = {{"system", system_prompt(role, s.language, s.persona, tone)}, {"user", user_content}};
  r.max_new_tokens = max_tokens;
  r.min_new_tokens = std::min(s.min_tokens, max_tokens);
  const double arousal = emotion ? emotion->arousal : 0.0;
  r.temperature = static_cast<float>(std::clamp(s.temperature + s.emotion_temperature_gain * arousal, 0.05, 1.5));
  r.top_p = static_cast<float>(s.top_p);
  r.priority = s.priority;
  r.seed = turn_seed(static_cast<std::uint64_t>(s.seed), turn, role);
  return r;
}

/// Labelled sections for a user message ("【記憶】\n..."), skipping empty ones.
class PromptSections {
 public:
  explicit PromptSections(Language lang) : ja_(lang == Language::ja) {}
  PromptSections& add(const char* ja_title, const char* en_title, const std::string& body) {
    if (body.empty()) return *this;
    if (!out_.empty()) out_ += "\n";
    out_ += ja_ ? std::string("【") + ja_title + "】\n" : std::string("## ") + en_title + "\n";
    out_ += body;
    if (out_.back() != '\n') out_ += "\n";
    return *this;
  }
  const std::string& str() const { return out_; }

 private:
  bool ja_;
  std::string out_;
};

}  // namespace lal::plugins
