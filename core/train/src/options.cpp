// The option table and its three readers (CLI text, YAML, plan output).
#include "lal/train/options.hpp"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <variant>

#include "lal/checks/input_limits.hpp"
#include "lal/checks/option_checks.hpp"

namespace lal::train {

namespace {

using Member = std::variant<bool DistillOptions::*, std::int64_t DistillOptions::*, double DistillOptions::*,
                            std::string DistillOptions::*, std::vector<std::string> DistillOptions::*>;

struct Row {
  OptionSpec spec;
  Member member;
};

#define LAL_OPT(name, type, help) \
  Row { {#name, OptionType::type, help}, &DistillOptions::name }

const std::vector<Row>& rows() {
  static const std::vector<Row> r = {
      LAL_OPT(teacher_model, String, "teacher: HF model directory or hub id org/name[@rev] (downloaded on first use)"),
      LAL_OPT(corpus, StringList, "training text (.txt paragraphs, .jsonl text or question/answer); repeatable"),
      LAL_OPT(tokenizer, String, "tokenizer.json (or its directory) for corpus training"),
      LAL_OPT(questions, String, "questions file (.txt/.jsonl); generated from templates when missing"),
      LAL_OPT(student_config, String,
              "student architecture: auto (the largest preset that fits the devices), an HF config.json, or a "
              "preset (half-teacher, tiny, demo, qwen2.5-0.5b, qwen2.5-1.5b, llama-1b)"),
      LAL_OPT(student_init, String, "auto | random | teacher (copy evenly spaced teacher layers)"),
      LAL_OPT(trim_vocab, Bool, "keep only tokens the data uses (+BPE parents, bytes, specials); maps teacher logits"),
      LAL_OPT(chat_template, String,
              "chat template: empty = the model's own; chatml, qwen2.5, qwen3, llama2, llama3, phi4, or a .jinja file"),
      LAL_OPT(system_prompt, String, "system message for teacher prompts (empty = none)"),
      LAL_OPT(output_dir, String, "where the model (and its -work directory) are written"),
      LAL_OPT(hf_model_name, String, "name of the exported model directory"),
      LAL_OPT(save_hf_format, Bool, "export config.json + model.safetensors + tokenizer + model card"),
      LAL_OPT(export_dtype, String, "float32 | bfloat16"),
      LAL_OPT(model_card_note, String, "a paragraph for the top of the exported README.md"),
      LAL_OPT(num_examples, Int, "teacher examples to generate"),
      LAL_OPT(generation_batch_size, Int, "prompts per teacher generation batch"),
      LAL_OPT(max_new_tokens, Int, "teacher tokens per answer (0 = max_length - prompt)"),
      LAL_OPT(generation_temperature, Float, "teacher sampling temperature"),
      LAL_OPT(generation_top_p, Float, "teacher nucleus sampling mass"),
      LAL_OPT(store_topk, Int, "store the teacher's top-k log-probabilities per position (0 = off)"),
      LAL_OPT(teacher_logits, String,
              "auto (topk with --store_topk; else online, or top-64 stored when the online teacher does not fit) | "
              "online (teacher forward per batch) | topk (stored) | none (hard labels)"),
      LAL_OPT(batch_size, Int, "sequences per micro-batch"),
      LAL_OPT(num_epochs, Int, "passes over the training data"),
      LAL_OPT(gradient_accumulation, Int, "micro-batches per optimizer step"),
      LAL_OPT(max_length, Int, "tokens per training sequence (prompt + answer)"),
      LAL_OPT(learning_rate, Float, "peak learning rate (AdamW)"),
      LAL_OPT(min_learning_rate, Float, "learning rate at the end of the cosine decay"),
      LAL_OPT(warmup_ratio, Float, "fraction of steps with linear warmup"),
      LAL_OPT(weight_decay, Float, "AdamW decoupled weight decay (matrices only)"),
      LAL_OPT(max_grad_norm, Float, "gradient clipping norm (0 = off)"),
      LAL_OPT(distillation_temperature, Float, "softmax temperature T of the KD term"),
      LAL_OPT(alpha, Float, "loss = alpha*T^2*KL + (1-alpha)*CE"),
      LAL_OPT(validation_fraction, Float, "fraction of examples held out for validation"),
      LAL_OPT(eval_every, Int, "optimizer steps between validations (0 = at each checkpoint)"),
      LAL_OPT(checkpoint_every, Int, "optimizer steps between checkpoints"),
      LAL_OPT(keep_checkpoints, Int, "how many step checkpoints to keep (best/ is always kept)"),
      LAL_OPT(save_only_model, Bool,
              "checkpoints without the optimizer state (a third of the size with AdamW; they cannot be resumed)"),
      LAL_OPT(resume_from, String, "continue a run: its -work directory or one checkpoint in it"),
      LAL_OPT(max_steps, Int, "stop after this many optimizer steps (0 = all epochs)"),
      LAL_OPT(seed, Int, "seed for questions, sampling, initialisation and shuffling"),
      LAL_OPT(precision, String, "compute precision: auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32 (float32 masters)"),
      LAL_OPT(adamw, String, "AdamW kernel: auto (fused where LibTorch has it, else foreach) | fused | foreach | loop"),
      LAL_OPT(shard_optimizer, String,
              "AdamW state over data-parallel ranks: auto (sharded only when a whole copy per device would not fit) | "
              "on (ZeRO-1: each rank updates its share, then the new weights are all-gathered) | off (replicated)"),
      LAL_OPT(
          loss_chunk_tokens, Int,
          "tokens per chunk of the fused lm_head + KD/CE loss ([tokens x vocab] logits never whole): auto (4096 with "
          "the CUDA training kernels, else 1024) | N | 0 = unchunked"),
      LAL_OPT(pack_sequences, Bool, "pack a micro-batch's examples into as few rows as fit max_length (no padding)"),
      LAL_OPT(activation_checkpointing, Bool, "recompute each layer in backward (less memory, ~1/3 more compute)"),
      LAL_OPT(vocab_multiple, Int,
              "corpus training and --trim_vocab: round the student's vocabulary up to a multiple of this (fast GEMM "
              "shapes; the extra rows are never produced); 1 = exactly the tokens"),
      LAL_OPT(profile_step, Int,
              "0 = off; N: torch profiler trace (Chrome JSON) of optimizer step N into <work>/profile-step-N.json"),
      LAL_OPT(quantize, String, "teacher weights: auto (int4 on GPU) | none | int8 | int4"),
      LAL_OPT(quantize_group, Int, "group size of the int8/int4 quantization"),
      LAL_OPT(cpu_offload, Bool, "keep teacher weights in CPU memory, move one layer at a time to the GPU"),
      LAL_OPT(use_cpu_only, Bool, "never use a GPU"),
      LAL_OPT(device, String, "auto | cpu | cuda | cuda:N"),
      LAL_OPT(threads, Int, "CPU threads for LibTorch (0 = default)"),
      LAL_OPT(max_gpu_memory, String, "cap lal's CUDA memory per GPU, e.g. 12GiB (the plan honours it; empty = all)"),
      LAL_OPT(ignore_memory_plan, Bool, "start even when the plan says the run does not fit (device memory or disk)"),
      LAL_OPT(windows_mode, Bool, "accepted for the original project's command lines; no effect in lal"),
      LAL_OPT(use_triton_windows, Bool, "accepted for the original project's command lines; no effect in lal"),
      LAL_OPT(use_direct_gpu, Bool, "accepted for the original project's command lines; no effect in lal"),
      LAL_OPT(dry_run, Bool, "print the plan and a memory estimate, then exit"),
      LAL_OPT(progress, Bool, "progress bars on stderr"),
  };
  return r;
}
#undef LAL_OPT

const Row* find_row(const std::string& name) {
  for (const auto& r : rows())
    if (name == r.spec.name) return &r;
  return nullptr;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string suggestion(const std::string& name) {
  std::string best;
  std::size_t best_d = 4;
  for (const auto& r : rows()) {
    const auto d = edit_distance(name, r.spec.name);
    if (d < best_d) best_d = d, best = r.spec.name;
  }
  return best.empty() ? "" : " (did you mean '" + best + "'?)";
}

bool parse_bool(const std::string& v, bool& out) {
  std::string s = v;
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s == "true" || s == "yes" || s == "on" || s == "1") return out = true, true;
  if (s == "false" || s == "no" || s == "off" || s == "0") return out = false, true;
  return false;
}

std::string fmt_double(double v) {
  std::ostringstream ss;
  ss << v;
  return ss.str();
}

}  // namespace

const std::vector<OptionSpec>& option_specs() {
  static const std::vector<OptionSpec> specs = [] {
    std::vector<OptionSpec> s;
    for (const auto& r : rows()) s.push_back(r.spec);
    return s;
  }();
  return specs;
}

/// Integer options that also take the word "auto", stored as this (negative) value.
constexpr std::int64_t kAutoInt = -1;
bool takes_auto(const std::string& name) { return name == "loss_chunk_tokens"; }

void set_option(DistillOptions& o, const std::string& name, const std::string& value, const std::string& origin) {
  const Row* row = find_row(name);
  if (!row) throw OptionError(origin + ": unknown option '" + name + "'" + suggestion(name));
  const std::string where = origin + ": " + name;
  std::visit(
      [&](auto member) {
        using T = std::decay_t<decltype(o.*member)>;
        if constexpr (std::is_same_v<T, bool>) {
          if (!parse_bool(value, o.*member)) throw OptionError(where + ": '" + value + "' is not true/false");
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          if (value == "auto" && takes_auto(name)) {
            o.*member = kAutoInt;
            return;
          }
          std::size_t used = 0;
          long long v = 0;
          try {
            v = std::stoll(value, &used);
          } catch (const std::exception&) {
            used = 0;
          }
          if (used == 0 || used != value.size()) throw OptionError(where + ": '" + value + "' is not an integer");
          if (v < 0)
            throw OptionError(where + ": must not be negative, got " + value + (takes_auto(name) ? " (or auto)" : ""));
          o.*member = v;
        } else if constexpr (std::is_same_v<T, double>) {
          std::size_t used = 0;
          double v = 0;
          try {
            v = std::stod(value, &used);
          } catch (const std::exception&) {
            used = 0;
          }
          if (used == 0 || used != value.size() || !std::isfinite(v))
            throw OptionError(where + ": '" + value + "' is not a number");
          o.*member = v;
        } else if constexpr (std::is_same_v<T, std::string>) {
          o.*member = value;
        } else if (value.empty()) {
          (o.*member).clear();
        } else {
          (o.*member).push_back(value);
        }
      },
      row->member);
}

std::string get_option(const DistillOptions& o, const std::string& name) {
  const Row* row = find_row(name);
  if (!row) throw OptionError("unknown option '" + name + "'");
  return std::visit(
      [&](auto member) -> std::string {
        using T = std::decay_t<decltype(o.*member)>;
        if constexpr (std::is_same_v<T, bool>)
          return o.*member ? "true" : "false";
        else if constexpr (std::is_same_v<T, std::int64_t>)
          return o.*member == kAutoInt && takes_auto(name) ? std::string("auto") : std::to_string(o.*member);
        else if constexpr (std::is_same_v<T, double>)
          return fmt_double(o.*member);
        else if constexpr (std::is_same_v<T, std::string>)
          return o.*member;
        else {
          std::string s;
          for (const auto& v : o.*member) s += (s.empty() ? "" : ",") + v;
          return s;
        }
      },
      row->member);
}

void load_yaml(DistillOptions& o, const std::string& path) {
  YAML::Node root;
  std::string text;
  try {
    text = checks::read_file_limited(path, checks::limits::options_file);  // /dev/zero fails fast
  } catch (const std::runtime_error& e) {
    throw OptionError(e.what());
  }
  try {
    root = YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {  // yaml-cpp's own guard; its message is only "bad file"
    throw OptionError(path + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                      ": values nested " + std::to_string(e.depth()) +
                      " levels deep or more (the YAML parser's limit); options are single values or lists");
  } catch (const YAML::Exception& e) {
    throw OptionError(path + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) + ": " +
                      e.msg);
  }
  if (root.IsNull()) return;
  if (root.IsMap() && root["distill"] && root.size() == 1) root = root["distill"];
  if (!root.IsMap()) throw OptionError(path + ": expected a mapping of option: value");
  std::map<std::string, std::string> seen;  // key -> where it was first written
  for (const auto& kv : root) {
    const auto m = kv.first.Mark();
    const std::string origin = path + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
    if (!kv.first.IsScalar()) throw OptionError(origin + ": an option name must be a plain string");
    const auto key = kv.first.Scalar();
    if (const auto [it, fresh] = seen.emplace(key, origin); !fresh)
      throw OptionError(origin + ": option '" + key + "' is written twice; the first is at " + it->second);
    const Row* row = find_row(key);
    if (!row) throw OptionError(origin + ": unknown option '" + key + "'" + suggestion(key));
    if (row->spec.type == OptionType::StringList && kv.second.IsSequence()) {
      for (const auto& item : kv.second) {
        if (!item.IsScalar()) throw OptionError(origin + ": " + key + ": every list item must be a single value");
        set_option(o, key, item.Scalar(), origin);
      }
    } else if (kv.second.IsScalar()) {
      set_option(o, key, kv.second.Scalar(), origin);
    } else if (kv.second.IsNull()) {
      set_option(o, key, "", origin);
    } else {
      throw OptionError(origin + ": " + key + ": expected a single value");
    }
  }
}

void validate(const DistillOptions& o) {
  auto fail = [](const std::string& m) { throw OptionError(m); };
  if (o.teacher_model.empty() && o.corpus.empty())
    fail("nothing to learn from: give --teacher_model (distillation) or --corpus (training on text)");
  if (!o.corpus.empty() && o.teacher_model.empty() && o.tokenizer.empty())
    fail("--corpus without a teacher needs --tokenizer (a tokenizer.json)");
  if (o.batch_size < 1) fail("--batch_size must be at least 1");
  if (o.gradient_accumulation < 1) fail("--gradient_accumulation must be at least 1");
  if (o.max_length < 8) fail("--max_length must be at least 8");
  if (o.num_epochs < 1 && o.max_steps < 1) fail("--num_epochs must be at least 1");
  if (o.generation_batch_size < 1) fail("--generation_batch_size must be at least 1");
  if (o.checkpoint_every < 1) fail("--checkpoint_every must be at least 1");
  if (o.validation_fraction < 0 || o.validation_fraction >= 0.5) fail("--validation_fraction must be in [0, 0.5)");
  // Numeric ranges, by the rules every command shares (lal/checks/option_checks.hpp). The upper bounds are far past
  // any useful setting and catch typos such as 1e30 or a sign slip.
  try {
    namespace c = checks;
    c::require_probability("--alpha", o.alpha);
    c::require_in_half_open_range("--learning_rate", o.learning_rate, 0.0, 1.0);
    c::require_in_range("--min_learning_rate", o.min_learning_rate, 0.0, 1.0);
    c::require_probability("--warmup_ratio", o.warmup_ratio);
    c::require_in_range("--weight_decay", o.weight_decay, 0.0, 1.0);
    c::require_in_range("--max_grad_norm", o.max_grad_norm, 0.0, 1e6);
    c::require_in_half_open_range("--distillation_temperature", o.distillation_temperature, 0.0, 100.0);
    c::require_in_range("--generation_temperature", o.generation_temperature, 0.0, 100.0);
    c::require_in_half_open_range("--generation_top_p", o.generation_top_p, 0.0, 1.0);
    c::require_in_range("--store_topk", o.store_topk, std::int64_t{0}, std::int64_t{1} << 20);
    c::require_in_range("--threads", o.threads, std::int64_t{0}, std::int64_t{4096});
    c::require_in_range("--loss_chunk_tokens", o.loss_chunk_tokens, std::int64_t{-1}, std::int64_t{1} << 24);
    c::require_in_range("--vocab_multiple", o.vocab_multiple, std::int64_t{1}, std::int64_t{4096});
    c::require_in_range("--profile_step", o.profile_step, std::int64_t{0}, std::int64_t{1} << 40);
  } catch (const checks::OptionRangeError& e) {
    fail(e.what());
  }
  for (const char* q : {"auto", "none", "int8", "int4"})
    if (o.quantize == q) goto quantize_ok;
  fail("--quantize: '" + o.quantize + "' (expected auto, none, int8 or int4)");
quantize_ok:
  if (o.quantize_group < 8 || o.quantize_group % 2) fail("--quantize_group must be an even number >= 8");
  if (o.teacher_logits != "auto" && o.teacher_logits != "online" && o.teacher_logits != "topk" &&
      o.teacher_logits != "none")
    fail("--teacher_logits: '" + o.teacher_logits + "' (expected auto, online, topk or none)");
  if (o.precision != "auto" && o.precision != "bf16" && o.precision != "fp32")
    fail("--precision: '" + o.precision + "' (expected auto, bf16 or fp32)");
  if (o.adamw != "auto" && o.adamw != "fused" && o.adamw != "foreach" && o.adamw != "loop")
    fail("--adamw: '" + o.adamw + "' (expected auto, fused, foreach or loop)");
  if (o.shard_optimizer != "auto" && o.shard_optimizer != "on" && o.shard_optimizer != "off")
    fail("--shard_optimizer: '" + o.shard_optimizer + "' (expected auto, on or off)");
  if (o.teacher_logits == "topk" && o.store_topk < 1) fail("--teacher_logits topk needs --store_topk K (K >= 1)");
  if (o.student_init != "auto" && o.student_init != "random" && o.student_init != "teacher")
    fail("--student_init: '" + o.student_init + "' (expected auto, random or teacher)");
  if (o.export_dtype != "float32" && o.export_dtype != "bfloat16")
    fail("--export_dtype: '" + o.export_dtype + "' (expected float32 or bfloat16)");
  if (!o.max_gpu_memory.empty() && parse_bytes(o.max_gpu_memory, "--max_gpu_memory") < (std::int64_t{256} << 20))
    fail("--max_gpu_memory must be at least 256MiB, got '" + o.max_gpu_memory + "'");
  if (o.hf_model_name.empty() || o.hf_model_name.find('/') != std::string::npos)
    fail("--hf_model_name must be a plain directory name, got '" + o.hf_model_name + "'");
}

std::int64_t parse_bytes(const std::string& text, const std::string& what) {
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit = text.substr(used);
  std::transform(unit.begin(), unit.end(), unit.begin(), [](unsigned char c) { return std::tolower(c); });
  const std::vector<std::pair<std::string, double>> units = {{"", 1},
                                                             {"b", 1},
                                                             {"k", 1024.0},
                                                             {"kib", 1024.0},
                                                             {"kb", 1e3},
                                                             {"m", 1 << 20},
                                                             {"mib", 1 << 20},
                                                             {"mb", 1e6},
                                                             {"g", 1 << 30},
                                                             {"gib", 1 << 30},
                                                             {"gb", 1e9},
                                                             {"t", 1099511627776.0},
                                                             {"tib", 1099511627776.0},
                                                             {"tb", 1e12}};
  for (const auto& [u, scale] : units)
    if (used > 0 && unit == u && std::isfinite(value) && value > 0 && value * scale < 9e18)
      return static_cast<std::int64_t>(value * scale);
  throw OptionError(what + ": '" + text + "' is not a size (examples: 12GiB, 8000MiB, 1.5TiB)");
}

std::string to_yaml(const DistillOptions& o) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const auto& r : rows()) {
    out << YAML::Key << r.spec.name << YAML::Value;
    if (r.spec.type == OptionType::StringList) {
      out << YAML::Flow << (o.*std::get<std::vector<std::string> DistillOptions::*>(r.member));
    } else if (r.spec.type == OptionType::String) {
      out << YAML::DoubleQuoted << get_option(o, r.spec.name);
    } else {
      out << get_option(o, r.spec.name);
    }
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace lal::train
