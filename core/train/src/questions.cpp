// Question templates for the teacher: topics of the focus areas x question forms, Japanese first.
#include "lal/train/questions.hpp"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <stdexcept>

#include "lal/train/files.hpp"

namespace lal::train {

namespace {

struct Area {
  const char* id;
  std::vector<const char*> ja;  // topics in Japanese
  std::vector<const char*> en;  // topics in English
};

const std::vector<Area>& areas() {
  static const std::vector<Area> a = {
      {"high_school",
       {"二次関数の最大値と最小値",
        "三角比と正弦定理",
        "数列の和の公式",
        "微分の定義と接線",
        "定積分と面積",
        "確率と条件付き確率",
        "ベクトルの内積",
        "指数関数と対数関数",
        "複素数平面",
        "等加速度直線運動",
        "運動量保存の法則",
        "力学的エネルギー保存",
        "波の干渉",
        "原子の構造と電子配置",
        "化学平衡とルシャトリエの原理",
        "酸と塩基の中和",
        "酸化還元反応",
        "有機化合物の構造異性体",
        "細胞呼吸と光合成",
        "遺伝の法則",
        "DNAの複製",
        "生態系と食物連鎖",
        "プレートテクトニクス",
        "明治維新",
        "鎌倉幕府の成立",
        "産業革命",
        "第一次世界大戦の原因",
        "気候区分",
        "古文の助動詞",
        "漢文の返り点",
        "現代文の論理的な読解",
        "英語の関係代名詞",
        "仮定法",
        "民主主義と三権分立",
        "需要と供給"},
       {"quadratic functions", "the law of sines", "derivatives", "probability", "Newton's laws of motion",
        "chemical equilibrium", "photosynthesis", "the Meiji Restoration", "supply and demand"}},
      {"electrical",
       {"オームの法則",
        "キルヒホッフの法則",
        "テブナンの定理",
        "RC回路の過渡応答",
        "RLC直列回路の共振",
        "交流の実効値",
        "力率と無効電力",
        "三相交流",
        "変圧器の原理",
        "誘導電動機",
        "ダイオードの整流作用",
        "トランジスタの増幅回路",
        "MOSFETのスイッチング",
        "オペアンプの反転増幅回路",
        "フィルタ回路のカットオフ周波数",
        "AD変換とサンプリング定理",
        "デジタル論理回路とブール代数",
        "フリップフロップ",
        "PWM制御",
        "電磁誘導",
        "コンデンサの静電エネルギー",
        "半導体のpn接合",
        "電力系統の周波数制御",
        "バッテリーの内部抵抗"},
       {"Ohm's law", "Kirchhoff's laws", "RC circuits", "op-amp amplifiers", "MOSFET switching", "the sampling theorem",
        "three-phase power"}},
      {"it",
       {"Pythonのリスト内包表記",
        "再帰関数",
        "二分探索",
        "ソートアルゴリズムの計算量",
        "ハッシュテーブル",
        "オブジェクト指向のカプセル化",
        "C++のRAII",
        "C++のスマートポインタ",
        "Rustの所有権",
        "Gitのブランチとマージ",
        "SQLのJOIN",
        "データベースの正規化",
        "TCPとUDPの違い",
        "HTTPの仕組み",
        "DNSの名前解決",
        "公開鍵暗号",
        "プロセスとスレッド",
        "デッドロック",
        "仮想メモリ",
        "Linuxのファイルパーミッション",
        "正規表現",
        "単体テスト",
        "機械学習の過学習",
        "ニューラルネットワークの誤差逆伝播",
        "Transformerの注意機構",
        "コンテナ仮想化",
        "計算量のオー記法",
        "動的計画法"},
       {"recursion", "binary search", "hash tables", "TCP vs UDP", "public-key cryptography", "deadlocks",
        "dynamic programming", "the attention mechanism"}},
  };
  return a;
}

const std::vector<const char*>& ja_forms() {
  static const std::vector<const char*> f = {
      "{t}について、高校生にもわかるように説明してください。",
      "{t}の基本的な考え方を、具体例を挙げて説明してください。",
      "{t}でよくある間違いは何ですか？どうすれば避けられますか？",
      "{t}に関する練習問題を一つ作り、段階的に解いてください。",
      "なぜ{t}が重要なのか、理由を順を追って考えてください。",
      "{t}を初めて学ぶ人がつまずきやすい点と、その乗り越え方を教えてください。",
      "{t}を身近な例えを使って説明してください。",
      "{t}について、要点を三つにまとめてください。",
      "{t}を理解しているか確かめる質問を三つ作り、それぞれに答えてください。",
      "{t}について、よくある誤解を一つ挙げ、正しい理解を説明してください。",
      "{t}は実生活や仕事のどんな場面で役に立ちますか？",
      "{t}の歴史的な背景や発見の経緯を簡単に説明してください。",
      "{t}を使って答える計算問題を作り、考え方を示しながら解いてください。",
      "{t}について、初心者と専門家の理解の違いを説明してください。",
      "{t}を学ぶための勉強の順序を提案してください。",
      "{t}について、自分の言葉で説明し、最後に要約してください。",
  };
  return f;
}

const std::vector<const char*>& ja_pair_forms() {
  static const std::vector<const char*> f = {
      "{t}と{u}の違いと共通点を説明してください。",
      "{t}と{u}はどのように関係していますか？",
      "{t}と{u}を組み合わせて考える問題を作り、解いてください。",
  };
  return f;
}

const std::vector<const char*>& en_forms() {
  static const std::vector<const char*> f = {
      "Explain {t} step by step, as if to a high-school student.",
      "What are common mistakes when working with {t}, and how can they be avoided?",
      "Create a practice problem about {t} and solve it step by step.",
      "Why does {t} matter? Reason it through.",
  };
  return f;
}

std::string fill(std::string form, const std::string& t, const std::string& u = "") {
  for (auto [key, value] : {std::pair<std::string, std::string>{"{t}", t}, {"{u}", u}}) {
    for (auto p = form.find(key); p != std::string::npos; p = form.find(key)) form.replace(p, key.size(), value);
  }
  return form;
}

// Every question the templates can make: Japanese singles, Japanese pairs, English.
void all_questions(std::vector<Question>& ja, std::vector<Question>& en) {
  for (const auto& a : areas()) {
    for (const auto* t : a.ja)
      for (const auto* f : ja_forms()) ja.push_back({fill(f, t), a.id, "ja"});
    for (std::size_t i = 0; i < a.ja.size(); ++i)
      for (std::size_t j = i + 1; j < a.ja.size(); ++j)
        for (const auto* f : ja_pair_forms()) ja.push_back({fill(f, a.ja[i], a.ja[j]), a.id, "ja"});
    for (const auto* t : a.en)
      for (const auto* f : en_forms()) en.push_back({fill(f, t), a.id, "en"});
  }
}

}  // namespace

std::int64_t question_capacity() {
  std::vector<Question> ja, en;
  all_questions(ja, en);
  return static_cast<std::int64_t>(ja.size() + en.size());
}

std::vector<Question> generate_questions(std::int64_t count, std::uint64_t seed) {
  std::vector<Question> ja, en;
  all_questions(ja, en);
  if (count < 0) throw std::invalid_argument("negative question count");
  std::mt19937_64 rng(seed);
  std::shuffle(ja.begin(), ja.end(), rng);
  std::shuffle(en.begin(), en.end(), rng);
  // About 85 % Japanese, interleaved so that any prefix of the list has the same mix.
  std::vector<Question> out;
  std::size_t i = 0, j = 0;
  while (static_cast<std::int64_t>(out.size()) < count) {
    if (i >= ja.size() && j >= en.size()) i = j = 0;  // more than the templates hold: repeat (answers are sampled)
    const bool want_en = (out.size() % 7 == 6 && j < en.size()) || i >= ja.size();
    out.push_back(want_en ? en[j++] : ja[i++]);
  }
  return out;
}

std::vector<Question> read_questions(const std::string& path) {
  const bool jsonl = std::filesystem::path(path).extension() == ".jsonl";
  std::vector<Question> out;
  std::size_t line_no = 0;
  for (const auto& line : read_complete_lines(path)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (!jsonl) {
      out.push_back({line.back() == '\r' ? line.substr(0, line.size() - 1) : line, "", ""});
      continue;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      throw std::runtime_error(path + ":" + std::to_string(line_no) + ": not JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("question") || !j["question"].is_string())
      throw std::runtime_error(path + ":" + std::to_string(line_no) + ": expected {\"question\": \"...\"}");
    out.push_back({j["question"].get<std::string>(), j.value("area", ""), j.value("language", "")});
  }
  if (out.empty()) throw std::runtime_error(path + ": no questions in the file");
  return out;
}

void write_questions(const std::string& path, const std::vector<Question>& questions) {
  std::string text;
  for (const auto& q : questions)
    text += nlohmann::json{{"question", q.text}, {"area", q.area}, {"language", q.language}}.dump() + "\n";
  write_file_atomic(path, text);
}

}  // namespace lal::train
