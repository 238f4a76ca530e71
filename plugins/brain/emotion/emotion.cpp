// emotion — the system's emotional state in the PAD model (valence, arousal, dominance) with a Plutchik label,
// appraised from what the user says and from how the last turn went, decaying toward a baseline.
//
// APPRAISAL. Each lexicon word found in the percept (Japanese by substring, English by whole word; each word counted
// once) adds its category's PAD direction × 0.5; every "!"/"！" (up to 3) adds `exclamation_arousal` to arousal.
// The state moves by `appraisal_gain` × that impulse, clamped to [-1, 1]. A TurnDone (optional `done` input) nudges
// dominance (and a little valence) by `outcome_weight` × (confidence − 0.5): a confident answer feels in control.
// DECAY. Before every update the deviation from the baseline shrinks by 0.5^(Δt / half_life_ms), Δt taken from the
// message header timestamps (monotonic), so the state relaxes between turns at the configured pace.
// LABEL. The deviation from the baseline is the feeling: its length is the intensity; below `neutral_radius` the
// label is "neutral", otherwise the Plutchik emotion whose PAD direction is closest in angle (cosine).
// REPORTS. `state` gets an EmotionState on every percept (keep_latest for the readers); `thought` gets one
// stage=emotion kind=state chunk when the label changes or the intensity crosses `report_intensity`.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>

#include "lal/plugin.hpp"
#include "lal/plugins/text_features.hpp"

namespace {

namespace lp = lal::plugins;

struct Pad {
  double v = 0, a = 0, d = 0;
  Pad operator+(const Pad& o) const { return {v + o.v, a + o.a, d + o.d}; }
  Pad operator-(const Pad& o) const { return {v - o.v, a - o.a, d - o.d}; }
  Pad operator*(double k) const { return {v * k, a * k, d * k}; }
  double dot(const Pad& o) const { return v * o.v + a * o.a + d * o.d; }
  double norm() const { return std::sqrt(dot(*this)); }
};

struct Emotion {
  const char* label;
  const char* ja;
  Pad direction;  // PAD placement of the basic emotion (after Mehrabian's PAD ratings)
};

// Plutchik's eight basic emotions in PAD space.
constexpr std::array<Emotion, 8> kEmotions{{
    {"joy", "喜び", {0.76, 0.48, 0.35}},
    {"trust", "信頼", {0.60, -0.20, 0.30}},
    {"fear", "恐れ", {-0.64, 0.60, -0.43}},
    {"surprise", "驚き", {0.20, 0.70, -0.15}},
    {"sadness", "悲しみ", {-0.63, -0.27, -0.33}},
    {"disgust", "嫌悪", {-0.60, 0.35, 0.11}},
    {"anger", "怒り", {-0.51, 0.59, 0.25}},
    {"anticipation", "期待", {0.30, 0.50, 0.30}},
}};

const Emotion& emotion_named(const char* label) {
  for (const auto& e : kEmotions)
    if (std::string(e.label) == label) return e;
  return kEmotions[0];
}

struct LexiconEntry {
  const char* word;
  const char* emotion;  // which basic emotion the word evokes
};

// Japanese entries match as substrings (no word boundaries in Japanese); stems catch inflections (怒 → 怒った).
constexpr LexiconEntry kJapanese[] = {
    {"嬉しい", "joy"},
    {"うれしい", "joy"},
    {"楽しい", "joy"},
    {"たのしい", "joy"},
    {"最高", "joy"},
    {"素晴らしい", "joy"},
    {"すばらしい", "joy"},
    {"良かった", "joy"},
    {"よかった", "joy"},
    {"大好き", "joy"},
    {"幸せ", "joy"},
    {"やった", "joy"},
    {"面白い", "joy"},
    {"素敵", "joy"},
    {"ありがとう", "trust"},
    {"感謝", "trust"},
    {"お願いします", "trust"},
    {"ください", "trust"},
    {"よろしく", "trust"},
    {"助かり", "trust"},
    {"信頼", "trust"},
    {"怖い", "fear"},
    {"こわい", "fear"},
    {"危ない", "fear"},
    {"あぶない", "fear"},
    {"危険", "fear"},
    {"不安", "fear"},
    {"心配", "fear"},
    {"助けて", "fear"},
    {"襲", "fear"},
    {"地震", "fear"},
    {"火事", "fear"},
    {"事故", "fear"},
    {"脅", "fear"},
    {"悲しい", "sadness"},
    {"かなしい", "sadness"},
    {"寂しい", "sadness"},
    {"さびしい", "sadness"},
    {"残念", "sadness"},
    {"つらい", "sadness"},
    {"辛い", "sadness"},
    {"落ち込", "sadness"},
    {"怒", "anger"},
    {"腹が立", "anger"},
    {"むかつ", "anger"},
    {"ムカつ", "anger"},
    {"許せない", "anger"},
    {"ふざけ", "anger"},
    {"気持ち悪い", "disgust"},
    {"嫌い", "disgust"},
    {"最悪", "disgust"},
    {"うんざり", "disgust"},
    {"びっくり", "surprise"},
    {"驚", "surprise"},
    {"まさか", "surprise"},
    {"信じられない", "surprise"},
    {"楽しみ", "anticipation"},
    {"待ち遠しい", "anticipation"},
    {"期待", "anticipation"},
    {"わくわく", "anticipation"},
    {"ワクワク", "anticipation"},
};

// English entries match whole lower-cased words, so "fear" does not fire inside "fearless".
constexpr LexiconEntry kEnglish[] = {
    {"happy", "joy"},
    {"glad", "joy"},
    {"great", "joy"},
    {"wonderful", "joy"},
    {"love", "joy"},
    {"awesome", "joy"},
    {"excellent", "joy"},
    {"fun", "joy"},
    {"yay", "joy"},
    {"fantastic", "joy"},
    {"delighted", "joy"},
    {"thanks", "trust"},
    {"thank", "trust"},
    {"please", "trust"},
    {"appreciate", "trust"},
    {"trust", "trust"},
    {"scared", "fear"},
    {"afraid", "fear"},
    {"fear", "fear"},
    {"danger", "fear"},
    {"dangerous", "fear"},
    {"emergency", "fear"},
    {"threat", "fear"},
    {"threatened", "fear"},
    {"attack", "fear"},
    {"hurt", "fear"},
    {"worried", "fear"},
    {"anxious", "fear"},
    {"panic", "fear"},
    {"terrified", "fear"},
    {"sad", "sadness"},
    {"lonely", "sadness"},
    {"unfortunately", "sadness"},
    {"depressed", "sadness"},
    {"miserable", "sadness"},
    {"angry", "anger"},
    {"furious", "anger"},
    {"hate", "anger"},
    {"annoyed", "anger"},
    {"outrageous", "anger"},
    {"disgusting", "disgust"},
    {"gross", "disgust"},
    {"awful", "disgust"},
    {"worst", "disgust"},
    {"wow", "surprise"},
    {"whoa", "surprise"},
    {"unexpected", "surprise"},
    {"surprised", "surprise"},
    {"unbelievable", "surprise"},
    {"excited", "anticipation"},
    {"hope", "anticipation"},
    {"soon", "anticipation"},
};

std::vector<std::string> ascii_words(const std::string& text) {
  std::vector<std::string> words;
  std::string w;
  for (char ch : text) {
    const char c = (ch >= 'A' && ch <= 'Z') ? static_cast<char>(ch - 'A' + 'a') : ch;
    if ((c >= 'a' && c <= 'z') || c == '\'') {
      w += c;
    } else if (!w.empty()) {
      words.push_back(std::move(w));
      w.clear();
    }
  }
  if (!w.empty()) words.push_back(std::move(w));
  return words;
}

/// What one appraisal word contributes: this fraction of its emotion's PAD direction.
constexpr double kWordWeight = 0.5;
/// Exclamation marks counted per percept ("!!!!!!" is no angrier than "!!!").
constexpr int kMaxExclamations = 3;

struct EmotionOptions {
  std::string language = "ja";
  double half_life_ms = 60000;
  double baseline_valence = 0.1, baseline_arousal = 0.0, baseline_dominance = 0.1;
  double appraisal_gain = 0.6;
  double exclamation_arousal = 0.1;
  double neutral_radius = 0.12;
  double report_intensity = 0.35;
  double outcome_weight = 0.2;

  static void declare(lal::Options<EmotionOptions>& o) {
    using E = EmotionOptions;
    o.field("language", &E::language, "language of the state thought: ja or en").one_of({"ja", "en"});
    o.field("half_life_ms", &E::half_life_ms, "time for the deviation from the baseline to halve").min(1);
    o.field("baseline_valence", &E::baseline_valence, "resting valence").range(-1, 1);
    o.field("baseline_arousal", &E::baseline_arousal, "resting arousal").range(-1, 1);
    o.field("baseline_dominance", &E::baseline_dominance, "resting dominance").range(-1, 1);
    o.field("appraisal_gain", &E::appraisal_gain, "how far one percept's impulse moves the state").range(0, 2);
    o.field("exclamation_arousal", &E::exclamation_arousal, "arousal added per exclamation mark (up to 3)").range(0, 1);
    o.field("neutral_radius", &E::neutral_radius, "deviation from the baseline below which the label is neutral")
        .range(0, 2);
    o.field("report_intensity", &E::report_intensity, "report a thought when the intensity crosses this").range(0, 2);
    o.field("outcome_weight", &E::outcome_weight, "dominance change per unit of (answer confidence − 0.5)")
        .range(-1, 1);
  }
};

class EmotionModule final : public lal::Module {
 public:
  void start(lal::Context& ctx) override {
    ctx_ = &ctx;
    const auto o = ctx.options<EmotionOptions>();
    ja_ = o.language == "ja";
    half_life_ms_ = o.half_life_ms;
    baseline_ = {o.baseline_valence, o.baseline_arousal, o.baseline_dominance};
    gain_ = o.appraisal_gain;
    exclamation_arousal_ = o.exclamation_arousal;
    neutral_radius_ = o.neutral_radius;
    report_intensity_ = o.report_intensity;
    outcome_weight_ = o.outcome_weight;
    state_ = baseline_;
    ctx.on<lal::Percept>("percept", [this](const lal::Delivery<lal::Percept>& m) { appraise(m); });
    ctx.on<lal::TurnDone>("done", [this](const lal::Delivery<lal::TurnDone>& m) {
      decay_to(m.header.timestamp_ns);
      if (m->cancelled) return;
      const double k = outcome_weight_ * (m->confidence - 0.5);
      state_ = clamp(state_ + Pad{0.5 * k, 0.0, k});
    });
  }

 private:
  void decay_to(std::int64_t now_ns) {
    if (last_ns_ != 0 && now_ns > last_ns_) {
      const double dt_ms = static_cast<double>(now_ns - last_ns_) / 1e6;
      state_ = baseline_ + (state_ - baseline_) * std::pow(0.5, dt_ms / half_life_ms_);
    }
    if (now_ns > last_ns_) last_ns_ = now_ns;
  }

  static Pad clamp(Pad p) {
    auto c1 = [](double x) { return std::max(-1.0, std::min(1.0, x)); };
    return {c1(p.v), c1(p.a), c1(p.d)};
  }

  Pad impulse(const std::string& text) const {
    Pad sum;
    for (const auto& e : kJapanese)
      if (text.find(e.word) != std::string::npos) sum = sum + emotion_named(e.emotion).direction * kWordWeight;
    const auto words = ascii_words(text);
    for (const auto& e : kEnglish)
      if (std::find(words.begin(), words.end(), e.word) != words.end())
        sum = sum + emotion_named(e.emotion).direction * kWordWeight;
    int bangs = 0;
    for (char32_t c : lp::utf8_decode(text))
      if (c == U'!' || c == U'！') ++bangs;
    sum.a += exclamation_arousal_ * std::min(bangs, kMaxExclamations);
    return sum;
  }

  const Emotion* label_of(const Pad& deviation) const {
    if (deviation.norm() < neutral_radius_) return nullptr;
    const Emotion* best = nullptr;
    double best_cos = -2.0;
    for (const auto& e : kEmotions) {
      const double cos = deviation.dot(e.direction) / (deviation.norm() * e.direction.norm());
      if (cos > best_cos) {
        best_cos = cos;
        best = &e;
      }
    }
    return best;
  }

  void appraise(const lal::Delivery<lal::Percept>& m) {
    decay_to(m.header.timestamp_ns);
    state_ = clamp(state_ + impulse(m->text) * gain_);
    const Pad deviation = state_ - baseline_;
    const Emotion* e = label_of(deviation);
    const std::string label = e ? e->label : "neutral";

    lal::EmotionState s;
    s.valence = state_.v;
    s.arousal = state_.a;
    s.dominance = state_.d;
    s.label = label;
    ctx_->publish("state", s, &m.header);

    const bool intense = deviation.norm() >= report_intensity_;
    if (label != reported_label_ || intense != reported_intense_) {
      reported_label_ = label;
      reported_intense_ = intense;
      char buf[160];
      if (ja_)
        std::snprintf(buf, sizeof buf, "%s（快 %+.2f / 覚醒 %+.2f / 支配 %+.2f）", e ? e->ja : "平静", s.valence,
                      s.arousal, s.dominance);
      else
        std::snprintf(buf, sizeof buf, "%s (valence %+.2f, arousal %+.2f, dominance %+.2f)", label.c_str(), s.valence,
                      s.arousal, s.dominance);
      lal::ThoughtChunk t;
      t.stage = lal::Stage::emotion;
      t.kind = lal::ChunkKind::state;
      t.text = buf;
      t.last = true;
      t.origin = ctx_->module_id();
      ctx_->publish("thought", std::move(t), &m.header);
    }
  }

  lal::Context* ctx_ = nullptr;
  bool ja_ = true;
  double half_life_ms_ = 0, gain_ = 0, exclamation_arousal_ = 0;  // from EmotionOptions in start()
  double neutral_radius_ = 0, report_intensity_ = 0, outcome_weight_ = 0;
  Pad baseline_, state_;
  std::int64_t last_ns_ = 0;
  std::string reported_label_ = "neutral";
  bool reported_intense_ = false;
};

lal::PluginDescriptor describe() {
  lal::PluginDescriptor d{"emotion", lal::ModuleKind::brain_region, "0.1.0",
                          "PAD emotion state with a Plutchik label, appraised from the conversation, decaying"};
  d.input<lal::Percept>("percept", "what the user said: appraised with the ja/en lexicon")
      .optional_input<lal::TurnDone>("done", "how the turn went: confidence nudges dominance")
      .output<lal::EmotionState>("state", "the state after each percept")
      .output<lal::ThoughtChunk>("thought", "stage emotion, kind state: when the label or intensity band changes")
      .options<EmotionOptions>();
  return d;
}

}  // namespace

LAL_PLUGIN(EmotionModule, describe)
