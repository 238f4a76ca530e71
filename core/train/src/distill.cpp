// The distillation pipeline's torch-free stages: plan, questions, teacher generation, corpus tokenization.
#include "lal/train/distill.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "lal/lm/chat_template.hpp"
#include "lal/lm/engine.hpp"
#include "lal/lm/model_path.hpp"
#include "lal/lm/tokenizer.hpp"
#include "lal/train/files.hpp"
#include "lal/train/questions.hpp"
#include "lal/train/report.hpp"
#include "lal/train/student_config.hpp"
#include "lal/train/world.hpp"

namespace lal::train {

namespace fs = std::filesystem;
using nlohmann::json;

RunPaths RunPaths::of(const DistillOptions& o) {
  RunPaths p;
  const fs::path out = o.output_dir;
  p.export_dir = (out / o.hf_model_name).string();
  p.work = (out / (o.hf_model_name + "-work")).string();
  const fs::path w = p.work;
  p.questions = o.questions.empty() ? (w / "questions.jsonl").string() : o.questions;
  p.data = (w / "data.jsonl").string();
  p.topk = (w / "topk.jsonl").string();
  p.vocab_map = (w / "vocab_map.json").string();
  p.checkpoints = (w / "checkpoints").string();
  p.metrics = (w / "metrics.jsonl").string();
  p.loss_svg = (w / "loss.svg").string();
  p.options = (w / "options.yaml").string();
  p.summary = (w / "summary.json").string();
  return p;
}

std::string resolve_quantize(const DistillOptions& o, const std::string& device) {
  if (o.quantize != "auto") return o.quantize;
  return device.rfind("cuda", 0) == 0 ? "int4" : "none";
}

namespace {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  char s[32];
  std::snprintf(s, sizeof s, "%.1f %s", b, units[u]);
  return s;
}

std::string human_count(double n) {
  char s[32];
  if (n >= 1e9)
    std::snprintf(s, sizeof s, "%.2fB", n / 1e9);
  else if (n >= 1e6)
    std::snprintf(s, sizeof s, "%.1fM", n / 1e6);
  else
    std::snprintf(s, sizeof s, "%.0fk", n / 1e3);
  return s;
}

}  // namespace

double MemoryEstimate::peak_device() const { return std::max(train_device, generation_device); }
bool MemoryEstimate::fits(std::int64_t capacity) const {
  return peak_device() <= 0.95 * static_cast<double>(capacity);  // CUDA context, allocator slack
}

MemoryEstimate estimate_memory(const DistillOptions& o, const lal::lm::ModelConfig* teacher,
                               const lal::lm::ModelConfig& student, const std::string& device, const std::string& quant,
                               int ranks) {
  // Teacher weights (+ logits), student weights + grads + AdamW (float32, moments sharded over ranks unless
  // --shard_optimizer off), activations,
  // logits; and the generation stage: teacher weights + the KV cache of one batch.
  MemoryEstimate m;
  const bool cpu = device == "cpu";
  const bool offload = o.cpu_offload && !cpu;
  const double L = static_cast<double>(o.max_length), B = static_cast<double>(o.batch_size);
  const double dense_bytes = cpu ? 4 : 2;
  double teacher_in_training = 0;
  if (teacher) {
    const double n = static_cast<double>(parameter_count(*teacher));
    const double emb =
        static_cast<double>(teacher->vocab_size * teacher->hidden_size) * (teacher->tie_word_embeddings ? 1 : 2);
    const double per_weight = quant == "int4"   ? 0.5 + 2.0 / static_cast<double>(o.quantize_group)
                              : quant == "int8" ? 1 + 2.0 / static_cast<double>(o.quantize_group)
                                                : dense_bytes;
    m.teacher = (n - emb) * per_weight + emb * dense_bytes;
    const double kv = static_cast<double>(o.generation_batch_size) * L * static_cast<double>(teacher->num_layers) * 2 *
                      static_cast<double>(teacher->num_kv_heads * teacher->head_dim) * dense_bytes;
    const double layers = static_cast<double>(std::max<std::int64_t>(1, teacher->num_layers));
    const double stored_layer = (m.teacher - emb * dense_bytes) / layers;
    // A quantized or offloaded layer is made dense in the compute dtype on the device while it runs (float32
    // scratch of the dequantization is bounded by lal::lm::kDequantizeChunkBytes); offloaded, the next layer's
    // stored weights are in flight beside it, and the embeddings / output layer stay on the device.
    m.teacher_layer_dense = (n - emb) / layers * dense_bytes;
    const double dense_layer =
        quant == "none" && !offload ? 0 : m.teacher_layer_dense + (quant == "none" ? 0 : 256.0 * (1 << 20));
    const double on_device = offload ? 2 * stored_layer + emb * dense_bytes : m.teacher;
    m.generation_device = on_device + dense_layer + kv;
    // Online distillation runs the teacher's forward in every training step; stored top-k logits (or hard labels)
    // need no teacher while training.
    m.teacher_online = o.teacher_logits == "online" || (o.teacher_logits == "auto" && o.store_topk <= 0);
    if (m.teacher_online) teacher_in_training = on_device + dense_layer;
  }
  const double sp = static_cast<double>(parameter_count(student));
  // fp32 weights + grads, Adam m and v (sharded over the ranks: ZeRO-1; "auto" counts as sharded, the most that
  // fits), and the bf16 copies autocast makes on a GPU.
  const int shards = o.shard_optimizer == "off" ? 1 : std::max(1, ranks);
  m.student = sp * (8 + 8.0 / shards + (cpu || o.precision == "fp32" ? 0 : 2));
  m.activations =
      B * L * static_cast<double>(student.hidden_size) * static_cast<double>(student.num_layers) * dense_bytes * 34;
  m.logits = B * L * static_cast<double>(student.vocab_size) * 4 * (teacher ? 6 : 3);
  m.train_device = teacher_in_training + m.student + m.activations + m.logits;
  return m;
}

std::int64_t teacher_dequantized_cache(const DistillOptions& o, const std::string& device,
                                       const lal::lm::ModelConfig* student) {
  if (spare_for_dequantized(o, device, 0) == 0) return 0;
  const auto teacher = lal::lm::ModelConfig::from_dir(lal::lm::resolve_model_path(o.teacher_model));
  const auto quant = resolve_quantize(o, device);
  // Without a student only the generation estimate counts (the teacher stands in for the student's terms).
  const auto est =
      estimate_memory(o, &teacher, student ? *student : teacher, device, quant, WorldEnv::from_environment().size);
  return spare_for_dequantized(o, device, student ? est.train_device : est.generation_device);
}

DiskEstimate estimate_disk(const DistillOptions& o, const lal::lm::ModelConfig& student, std::int64_t steps) {
  DiskEstimate d;
  const double sp = static_cast<double>(parameter_count(student));
  // model.safetensors (float32) + optimizer.safetensors (AdamW m and v, float32) unless --save_only_model
  d.step_checkpoint = sp * (o.save_only_model ? 4 : 4 + 8);
  double at_once = static_cast<double>(std::max<std::int64_t>(o.keep_checkpoints, 1) + 1);
  if (steps > 0) {
    // Every checkpoint_every steps and the last one.
    const auto made = steps / std::max<std::int64_t>(1, o.checkpoint_every) + (steps % o.checkpoint_every ? 1 : 0);
    at_once = std::min(at_once, static_cast<double>(std::max<std::int64_t>(made, 1)));
  }
  d.step_checkpoints_at_once = at_once;
  d.best = o.validation_fraction > 0 ? sp * 4 : 0;
  d.export_bytes = o.save_hf_format ? sp * (o.export_dtype == "float32" ? 4 : 2) : 0;
  return d;
}

bool DiskEstimate::fits(std::int64_t available) const { return total() * 1.05 <= static_cast<double>(available); }

namespace {

/// Free bytes for a new file under `dir` (its nearest existing ancestor); -1 when that cannot be read.
std::int64_t free_bytes_under(const std::string& dir, std::string* where) {
  std::error_code ec;
  fs::path at = fs::absolute(dir, ec);
  while (!at.empty() && !fs::exists(at, ec) && at != at.parent_path()) at = at.parent_path();
  *where = at.string();
  const auto info = fs::space(at, ec);
  return ec ? -1 : static_cast<std::int64_t>(info.available);
}

/// Bytes of the files under `dir` (0 when it does not exist): a resumed run's checkpoints and export, which the
/// disk estimate counts already and which the run replaces or prunes.
std::int64_t bytes_under(const std::string& dir) {
  std::error_code ec;
  std::int64_t n = 0;
  if (!fs::exists(dir, ec)) return 0;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec))
    if (it->is_regular_file(ec)) n += static_cast<std::int64_t>(it->file_size(ec));
  return n;
}

/// A student preset's config for this teacher, or nothing when the preset does not apply to it.
std::optional<lal::lm::ModelConfig> preset_for(const std::string& name, const lal::lm::ModelConfig* teacher,
                                               std::int64_t vocab) {
  try {
    bool dummy = false;
    return student_config(name, teacher, vocab, &dummy);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

const std::vector<std::string>& auto_students() {
  static const std::vector<std::string> order = {"half-teacher", "qwen2.5-1.5b", "qwen2.5-0.5b", "demo", "tiny"};
  return order;
}

}  // namespace

std::vector<std::string> fitting_alternatives(const DistillOptions& o, const lal::lm::ModelConfig* teacher,
                                              const std::string& device, const std::string& quant, int ranks,
                                              std::int64_t capacity) {
  std::vector<std::string> out;
  const std::int64_t vocab = teacher ? teacher->vocab_size : 0;
  const auto current = preset_for(o.student_config, teacher, vocab);
  if (!current) return out;
  auto fits = [&](const DistillOptions& v, const lal::lm::ModelConfig& st, const std::string& q, int r) {
    return estimate_memory(v, teacher, st, device, q, r).fits(capacity);
  };
  auto need = [&](const DistillOptions& v, const lal::lm::ModelConfig& st, const std::string& q, int r) {
    return human_bytes(estimate_memory(v, teacher, st, device, q, r).peak_device());
  };
  if (teacher && quant != "int4" && fits(o, *current, "int4", ranks))
    out.push_back("--quantize int4 (teacher weights in 4 bits): ~" + need(o, *current, "int4", ranks));
  if (teacher && device != "cpu" && !o.cpu_offload) {
    auto v = o;
    v.cpu_offload = true;
    if (fits(v, *current, quant, ranks))
      out.push_back("--cpu_offload (teacher in CPU memory): ~" + need(v, *current, quant, ranks));
  }
  if (teacher && (o.teacher_logits == "online" || (o.teacher_logits == "auto" && o.store_topk <= 0))) {
    auto v = o;
    v.teacher_logits = "auto", v.store_topk = 64;
    if (fits(v, *current, quant, ranks))
      out.push_back(std::string(o.teacher_logits == "online" ? "--teacher_logits topk " : "") +
                    "--store_topk 64 (the teacher's top-64 log-probabilities stored while it generates; no teacher "
                    "while training): ~" +
                    need(v, *current, quant, ranks));
  }
  const double current_params = static_cast<double>(parameter_count(*current));
  for (const auto& name : auto_students()) {
    const auto st = preset_for(name, teacher, vocab);
    if (!st || static_cast<double>(parameter_count(*st)) >= current_params) continue;
    if (fits(o, *st, quant, ranks)) {
      out.push_back("--student_config " + name + " (" + std::to_string(parameter_count(*st) / 1000000) +
                    "M parameters): ~" + need(o, *st, quant, ranks));
      break;
    }
  }
  if (device != "cpu")
    for (int r = ranks * 2; r <= 64; r *= 2)
      if (fits(o, *current, quant, r)) {
        out.push_back(std::to_string(r) + " GPUs (torchrun --nproc-per-node " + std::to_string(r) +
                      " --no-python lal distill ...; AdamW state sharded): ~" + need(o, *current, quant, r) + " each");
        break;
      }
  auto v = o;
  for (int i = 0; i < 6 && (v.max_length > 64 || v.batch_size > 1); ++i) {
    if (v.batch_size > 1)
      v.batch_size = std::max<std::int64_t>(1, v.batch_size / 2);
    else
      v.max_length /= 2;
    if (fits(v, *current, quant, ranks)) {
      out.push_back("--batch_size " + std::to_string(v.batch_size) + " --max_length " + std::to_string(v.max_length) +
                    " (raise --gradient_accumulation to keep the batch): ~" + need(v, *current, quant, ranks));
      break;
    }
  }
  return out;
}

DistillOptions resolve_teacher_logits(const DistillOptions& o, const lal::lm::ModelConfig& teacher,
                                      const lal::lm::ModelConfig& student, const std::string& device,
                                      const std::string& quant, int ranks, std::int64_t capacity) {
  if (o.teacher_logits != "auto" || o.store_topk > 0 ||
      estimate_memory(o, &teacher, student, device, quant, ranks).fits(capacity))
    return o;
  auto stored = o;
  stored.store_topk = kAutoStoreTopk;
  return estimate_memory(stored, &teacher, student, device, quant, ranks).fits(capacity) ? stored : o;
}

DistillOptions resolve_optimizer_sharding(const DistillOptions& o, const lal::lm::ModelConfig* teacher,
                                          const lal::lm::ModelConfig& student, const std::string& device,
                                          const std::string& quant, int ranks, std::int64_t capacity) {
  if (ranks <= 1 || o.shard_optimizer != "auto") return o;
  auto v = o;
  v.shard_optimizer = "off";
  if (!estimate_memory(v, teacher, student, device, quant, ranks).fits(capacity)) v.shard_optimizer = "on";
  return v;
}

std::string choose_student(const DistillOptions& o, const lal::lm::ModelConfig& teacher, const std::string& device,
                           const std::string& quant, int ranks, std::int64_t capacity) {
  std::string last;
  const double teacher_params = static_cast<double>(parameter_count(teacher));
  for (const auto& name : auto_students()) {
    const auto st = preset_for(name, &teacher, teacher.vocab_size);
    // Never a student larger than half the teacher (half-teacher itself is exactly that).
    if (!st || (name != "half-teacher" && static_cast<double>(parameter_count(*st)) > teacher_params / 2)) continue;
    last = name;
    const auto v = resolve_teacher_logits(o, teacher, *st, device, quant, ranks, capacity);
    if (estimate_memory(v, &teacher, *st, device, quant, ranks).fits(capacity)) return name;
  }
  return last.empty() ? "tiny" : last;
}

std::string resolve_student(const DistillOptions& o) {
  if (o.student_config != "auto") return o.student_config;
  if (o.teacher_model.empty()) return "demo";
  const auto teacher = lal::lm::ModelConfig::from_dir(lal::lm::resolve_model_config(o.teacher_model));
  const auto device = resolve_device(o);
  return choose_student(o, teacher, device, resolve_quantize(o, device), WorldEnv::from_environment().size,
                        device_capacity(o, device).bytes);
}

namespace {

/// The configs a plan reads for options `o` (student_config resolved): the teacher's (none for corpus training) and
/// the student's. No weights: no big download.
struct RunModels {
  std::string teacher_dir;
  std::optional<lal::lm::ModelConfig> teacher;
  lal::lm::ModelConfig student;
  bool teacher_init = false;  ///< student_config() would initialise the student from teacher layers
};

RunModels run_models(const DistillOptions& o) {
  RunModels m;
  if (!o.teacher_model.empty()) {
    m.teacher_dir = lal::lm::resolve_model_config(o.teacher_model);
    m.teacher = lal::lm::ModelConfig::from_dir(m.teacher_dir);
  }
  std::int64_t vocab = m.teacher ? m.teacher->vocab_size : 0;
  if (!m.teacher && !o.tokenizer.empty())
    vocab = static_cast<std::int64_t>(lal::lm::Tokenizer::from_file(o.tokenizer).vocab_size());
  m.student = student_config(o.student_config, m.teacher ? &*m.teacher : nullptr, vocab, &m.teacher_init);
  return m;
}

}  // namespace

DistillOptions resolve_optimizer_sharding(const DistillOptions& options) {
  DistillOptions o = options;
  o.student_config = resolve_student(options);
  const std::string device = resolve_device(o);
  const auto m = run_models(o);
  return resolve_optimizer_sharding(o, m.teacher ? &*m.teacher : nullptr, m.student, device,
                                    resolve_quantize(o, device), WorldEnv::from_environment().size,
                                    device_capacity(o, device).bytes);
}

std::string describe_plan(const DistillOptions& options, bool* fits_out) {
  DistillOptions o = options;
  o.student_config = resolve_student(options);
  const RunPaths p = RunPaths::of(o);
  const std::string device = resolve_device(o);
  const std::string quant = resolve_quantize(o, device);
  std::ostringstream s;
  s << "lal distill plan\n";
  const auto models = run_models(o);
  const auto& teacher = models.teacher;
  const auto& teacher_dir = models.teacher_dir;
  const auto& student = models.student;
  const bool teacher_init = models.teacher_init;
  const std::int64_t examples = teacher ? o.num_examples : 0;
  s << "  device            " << device << (o.cpu_offload ? " (teacher layers offloaded to CPU memory)" : "") << "\n";
  if (teacher) {
    s << "  teacher           " << teacher_dir << ": " << teacher->model_type << ", " << teacher->num_layers
      << " layers, hidden " << teacher->hidden_size << ", vocab " << teacher->vocab_size << ", "
      << human_count(static_cast<double>(parameter_count(*teacher))) << " parameters\n";
    s << "  (a) questions     " << p.questions << (fs::exists(p.questions) ? " (exists, reused)" : " (generated)")
      << ", " << o.num_examples << " examples\n";
    s << "  (b) teacher data  " << p.data << ": batches of " << o.generation_batch_size << ", max_length "
      << o.max_length << ", T=" << o.generation_temperature << " top_p=" << o.generation_top_p << "\n";
    if (o.store_topk > 0) s << "      top-k         " << p.topk << ": k=" << o.store_topk << "\n";
  } else {
    s << "  corpus            ";
    for (const auto& c : o.corpus) s << c << " ";
    s << "(tokenizer " << o.tokenizer << ")\n";
  }
  const auto world = WorldEnv::from_environment();
  const auto cap = device_capacity(o, device);
  bool topk_chosen = false;  // --teacher_logits auto chose stored top-k because the online teacher does not fit
  if (teacher && o.store_topk <= 0) {
    o = resolve_teacher_logits(o, *teacher, student, device, quant, world.size, cap.bytes);
    topk_chosen = o.store_topk > 0;
  }
  o = resolve_optimizer_sharding(o, teacher ? &*teacher : nullptr, student, device, quant, world.size, cap.bytes);
  const auto student_params = parameter_count(student);
  s << "  student           " << o.student_config
    << (options.student_config == "auto" ? " (auto: the largest that fits)" : "") << ": " << student.model_type << ", "
    << student.num_layers << " layers, hidden " << student.hidden_size << ", heads " << student.num_heads << "/"
    << student.num_kv_heads << ", vocab " << student.vocab_size << (o.trim_vocab ? " before trimming" : "") << ", "
    << human_count(static_cast<double>(student_params)) << " parameters, init "
    << (o.student_init == "auto" ? (teacher_init ? "teacher layers" : "random") : o.student_init) << "\n";
  std::int64_t planned_steps = 0;
  if (examples > 0) {
    const auto train_ex =
        static_cast<std::int64_t>(std::ceil(static_cast<double>(examples) * (1 - o.validation_fraction)));
    const auto micro = (train_ex + o.batch_size - 1) / o.batch_size;
    const auto steps = ((micro + o.gradient_accumulation - 1) / o.gradient_accumulation) * o.num_epochs;
    s << "  (c) training      ~" << train_ex << " examples, " << micro << " micro-batches of " << o.batch_size
      << " per epoch, " << o.num_epochs << " epochs, accumulation " << o.gradient_accumulation << " -> ~"
      << (o.max_steps > 0 ? std::min(steps, o.max_steps) : steps) << " optimizer steps\n";
    planned_steps = o.max_steps > 0 ? std::min(steps, o.max_steps) : steps;
  } else {
    s << "  (c) training      " << o.num_epochs << " epochs, batch " << o.batch_size << " x accumulation "
      << o.gradient_accumulation << "\n";
  }
  s << "      loss          " << o.alpha << " * T^2 * KL(teacher_T || student_T) + " << 1 - o.alpha
    << " * CE, T=" << o.distillation_temperature << ", teacher logits " << o.teacher_logits
    << (o.teacher_logits != "auto" ? ""
        : !teacher                 ? " (none: hard labels)"
        : o.store_topk > 0 ? " (top-" + std::to_string(o.store_topk) + " stored by a scoring pass after generation" +
                                 (topk_chosen ? ": the online teacher would not fit beside the training)" : ")")
                           : " (online: a teacher forward in every step)")
    << "\n";
  s << "      schedule      AdamW lr " << o.learning_rate << " -> " << o.min_learning_rate << " (warmup "
    << o.warmup_ratio * 100 << " %, cosine), weight decay " << o.weight_decay << ", clip " << o.max_grad_norm
    << ", checkpoints every " << o.checkpoint_every << " steps in " << p.checkpoints << "\n";
  s << "  (d) export        " << (o.save_hf_format ? p.export_dir + " (" + o.export_dtype + ")" : "off") << "\n";

  const auto est = estimate_memory(o, teacher ? &*teacher : nullptr, student, device, quant, world.size);
  s << "  memory estimate   teacher " << human_bytes(est.teacher) << " (" << (teacher ? quant : "-")
    << (o.cpu_offload ? ", in CPU memory" : "") << "), student+optimizer " << human_bytes(est.student)
    << (world.size <= 1              ? std::string()
        : o.shard_optimizer == "off" ? " (AdamW state whole on each of the " + std::to_string(world.size) +
                                           " ranks: no all-gather per step; --shard_optimizer on shards it)"
                                     : " (AdamW state sharded over " + std::to_string(world.size) + " ranks)")
    << ", activations " << human_bytes(est.activations) << ", logits " << human_bytes(est.logits) << "\n";
  s << "                    peak during training ~" << human_bytes(est.train_device)
    << (o.cpu_offload ? " on the device + teacher in CPU memory" : "") << "\n";
  s << "                    teacher generation ~" << human_bytes(est.generation_device) << " (weights + KV cache of "
    << o.generation_batch_size << " x " << o.max_length << " tokens)\n";
  if (teacher && spare_for_dequantized(o, device, 0) > 0) {
    // Spare device memory keeps quantized teacher layers dequantized (teacher_dequantized_cache): how many.
    auto layers = [&](double need) {
      return std::min<std::int64_t>(
          teacher->num_layers, static_cast<std::int64_t>(static_cast<double>(spare_for_dequantized(o, device, need)) /
                                                         est.teacher_layer_dense));
    };
    s << "  spare memory      keeps " << layers(est.generation_device) << " of " << teacher->num_layers
      << " teacher layers dequantized while it generates"
      << (est.teacher_online ? ", " + std::to_string(layers(est.train_device)) + " while training" : std::string())
      << " (no dequantization per step for them)\n";
  }
  const auto disk = estimate_disk(o, student, planned_steps);
  std::string disk_dir;
  std::int64_t disk_free = free_bytes_under(o.output_dir, &disk_dir);
  if (disk_free >= 0) disk_free += bytes_under(p.checkpoints) + bytes_under(p.export_dir);
  const bool disk_fits = disk_free < 0 || disk.fits(disk_free);
  s << "  disk              ~" << human_bytes(disk.total())
    << " at the peak: " << static_cast<int>(disk.step_checkpoints_at_once) << " step checkpoint(s) x "
    << human_bytes(disk.step_checkpoint)
    << (o.save_only_model ? " (weights only: --save_only_model)" : " (weights + AdamW state)")
    << (disk.best > 0 ? ", best/ " + human_bytes(disk.best) : "")
    << (disk.export_bytes > 0 ? ", export " + human_bytes(disk.export_bytes) : "") << "; "
    << (disk_free < 0 ? "free space unknown" : human_bytes(static_cast<double>(disk_free)) + " available") << " at "
    << disk_dir << "\n";
  const bool fits = est.fits(cap.bytes) && disk_fits;
  if (fits_out) *fits_out = fits;
  s << "  devices           "
    << (world.size > 1
            ? std::to_string(world.size) + " ranks, one device each; rank " + std::to_string(world.rank) + "'s: "
            : "")
    << cap.what << ": " << human_bytes(static_cast<double>(cap.bytes)) << "\n";
  s << "  verdict           " << (fits ? "FITS" : "DOES NOT FIT") << ": needs ~" << human_bytes(est.peak_device())
    << " of " << human_bytes(static_cast<double>(cap.bytes)) << (est.fits(cap.bytes) ? "" : " per device")
    << (disk_fits ? ""
                  : "; the disk at " + disk_dir + " has " + human_bytes(static_cast<double>(disk_free)) +
                        " available for ~" + human_bytes(disk.total()))
    << "\n";
  if (!disk_fits) {
    s << "  what would fit    --output_dir on a disk with more free space";
    auto v = o;
    v.keep_checkpoints = 1;
    if (const auto fewer = estimate_disk(v, student, planned_steps).total(); fewer < disk.total())
      s << "; --keep_checkpoints 1: ~" << human_bytes(fewer);
    s << "\n";
  }
  if (!est.fits(cap.bytes)) {
    const auto ideas = fitting_alternatives(o, teacher ? &*teacher : nullptr, device, quant, world.size, cap.bytes);
    if (ideas.empty()) s << "  what would fit    nothing lal can change: use a larger device\n";
    for (std::size_t i = 0; i < ideas.size(); ++i)
      s << (i ? "                    " : "  what would fit    ") << ideas[i] << "\n";
  }
  return s.str();
}

// ------------------------------------------------------------------------------------------------ (a) questions

void stage_questions(const DistillOptions& o, const RunPaths& p) {
  if (fs::exists(p.questions)) {
    const auto n = read_questions(p.questions).size();
    spdlog::info("questions: {} from {}", n, p.questions);
    return;
  }
  const auto qs = generate_questions(o.num_examples, static_cast<std::uint64_t>(o.seed));
  if (!fs::path(p.questions).parent_path().empty()) fs::create_directories(fs::path(p.questions).parent_path());
  write_questions(p.questions, qs);
  spdlog::info("questions: generated {} ({} distinct templates available) into {}", qs.size(), question_capacity(),
               p.questions);
}

// ------------------------------------------------------------------------------------------------ (b) teacher data

namespace {

lal::lm::ChatTemplate chat_template_for(const DistillOptions& o, const std::string& model_dir) {
  return lal::lm::ChatTemplate::load(model_dir, o.chat_template);
}

std::vector<std::int32_t> render_prompt(const lal::lm::ChatTemplate& chat, const lal::lm::Tokenizer& tok,
                                        const DistillOptions& o, const std::string& question) {
  std::vector<lal::lm::ChatMessage> msgs;
  if (!o.system_prompt.empty()) msgs.push_back({"system", o.system_prompt});
  msgs.push_back({"user", question});
  return tok.encode(chat.render(msgs), /*add_special_tokens=*/true);
}

/// Folds the rank files of a distributed run into data.jsonl (merge_rank_files), saying so.
void merge_teacher_data(const RunPaths& p) {
  const auto n = merge_rank_files(p.data);
  if (n >= 0) spdlog::info("teacher data: merged the ranks' files into {} ({} examples)", p.data, n);
}

}  // namespace

void stage_teacher_data(const DistillOptions& o, const RunPaths& p) {
  World& world = World::get();
  const auto questions = read_questions(p.questions);
  const auto n = std::min<std::int64_t>(o.num_examples, static_cast<std::int64_t>(questions.size()));
  // Ranks generate disjoint windows of questions into their own files; rank 0 merges them at the end.
  auto done = record_indices_with_rank_files(p.data);
  if (static_cast<std::int64_t>(done.size()) >= n) {
    world.barrier("teacher data");
    if (world.is_main()) merge_teacher_data(p);
    world.barrier("teacher data merge");
    spdlog::info("teacher data: {} examples already in {}", done.size(), p.data);
    return;
  }
  lal::lm::ModelOptions mo;
  mo.model_path = o.teacher_model;
  mo.device = resolve_device(o);
  mo.quantize = resolve_quantize(o, mo.device);
  mo.quantize_group = o.quantize_group;
  mo.cpu_offload = o.cpu_offload;
  mo.dequantized_cache_bytes = teacher_dequantized_cache(o, mo.device, nullptr);
  auto engine = lal::lm::Engine::load(mo);
  const auto* tok = engine->tokenizer();
  if (!tok) throw std::runtime_error(engine->model_dir() + ": the teacher has no tokenizer.json");
  const auto chat = chat_template_for(o, engine->model_dir());
  spdlog::info("teacher: {} (chat template {}{})", engine->describe(), chat.origin(),
               chat.opens_thinking() ? ", thinking" : "");
  spdlog::info("teacher weights: {:.1f} MiB as stored", static_cast<double>(engine->parameter_bytes()) / (1 << 20));
  JsonlAppender out(world.distributed() ? p.data + ".rank-" + std::to_string(world.rank()) : p.data);
  ProgressBar bar("teacher", n, "ex", o.progress && world.is_main(), static_cast<std::int64_t>(done.size()));
  std::int64_t new_tokens = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t start = 0; start < n; start += o.generation_batch_size) {
    // A window of questions is always generated whole (batch composition and the sampling seed fixed), so a
    // resumed run writes exactly what an uninterrupted one would; records already present are not rewritten.
    const auto end = std::min(n, start + o.generation_batch_size);
    if ((start / o.generation_batch_size) % world.size() != world.rank()) continue;  // another rank's window
    bool complete = true;
    for (auto i = start; i < end; ++i) complete = complete && done.count(i);
    if (complete) continue;
    std::vector<std::int64_t> idx;
    std::vector<std::vector<std::int32_t>> prompts;
    std::size_t longest = 0;
    for (auto i = start; i < end; ++i) {
      auto ids = render_prompt(chat, *tok, o, questions[static_cast<std::size_t>(i)].text);
      if (static_cast<std::int64_t>(ids.size()) >= o.max_length / 2) {
        spdlog::warn("{}: question {} is {} tokens, over half of --max_length {}; skipped", p.questions, i + 1,
                     ids.size(), o.max_length);
        continue;
      }
      longest = std::max(longest, ids.size());
      idx.push_back(i);
      prompts.push_back(std::move(ids));
    }
    if (idx.empty()) continue;
    lal::lm::GenerateOptions go;
    go.max_new_tokens = static_cast<int>(
        o.max_new_tokens > 0 ? std::min(o.max_new_tokens, o.max_length - static_cast<std::int64_t>(longest))
                             : o.max_length - static_cast<std::int64_t>(longest));
    go.sampling.temperature = static_cast<float>(o.generation_temperature);
    go.sampling.top_p = static_cast<float>(o.generation_top_p);
    go.sampling.seed = static_cast<std::uint64_t>(o.seed) * 1000003ULL + static_cast<std::uint64_t>(start);
    for (const auto& s : chat.stop_texts()) {
      const auto id = tok->token_to_id(s);
      if (id >= 0) go.stop_ids.push_back(id);
    }
    const auto outs = engine->generate(prompts, go);
    for (std::size_t k = 0; k < idx.size(); ++k) {
      if (done.count(idx[k])) continue;
      const auto& q = questions[static_cast<std::size_t>(idx[k])];
      out.add(json{{"index", idx[k]},
                   {"question", q.text},
                   {"area", q.area},
                   {"prompt_ids", prompts[k]},
                   {"completion_ids", outs[k].ids},
                   {"text", outs[k].text},
                   {"finish_reason", outs[k].finish_reason}}
                  .dump(-1, ' ', false, json::error_handler_t::replace));
      new_tokens += static_cast<std::int64_t>(outs[k].ids.size());
      done.insert(idx[k]);
    }
    out.flush();  // one write + fsync per batch: a kill loses at most the batch in flight
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    char extra[64];
    std::snprintf(extra, sizeof extra, "%.1f tok/s", secs > 0 ? static_cast<double>(new_tokens) / secs : 0.0);
    bar.update(static_cast<std::int64_t>(done.size()), extra);
  }
  bar.finish();
  world.barrier("teacher data");
  if (world.is_main()) merge_teacher_data(p);
  world.barrier("teacher data merge");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<double> all{static_cast<double>(new_tokens)};  // every rank's tokens, reported once
  world.all_reduce_sum(all, "teacher data tokens");
  if (world.is_main())
    spdlog::info("teacher data: {:.0f} new tokens in {:.1f} s ({:.1f} tok/s{}), peak memory {:.2f} GiB{}", all[0], secs,
                 secs > 0 ? all[0] / secs : 0.0, world.distributed() ? " over all ranks" : "",
                 static_cast<double>(engine->peak_memory_bytes()) / (1 << 30), world.distributed() ? " (rank 0)" : "");
}

// ------------------------------------------------------------------------------------------------ corpus data

void stage_corpus_data(const DistillOptions& o, const RunPaths& p) {
  if (fs::exists(p.data)) {
    spdlog::info("corpus data: reusing {}", p.data);
    return;
  }
  const auto tok = lal::lm::Tokenizer::from_file(o.tokenizer);
  const std::string tok_dir =
      fs::is_directory(o.tokenizer) ? o.tokenizer : fs::path(o.tokenizer).parent_path().string();
  const auto eos = tok.eos_id();
  if (!eos) throw std::runtime_error(o.tokenizer + ": the tokenizer has no eos token (tokenizer_config.json)");
  std::string text_out;
  std::int64_t index = 0, tokens = 0;
  std::vector<std::int32_t> stream;  // plain text, documents separated by eos, cut into max_length pieces
  auto emit = [&](const std::vector<std::int32_t>& prompt, const std::vector<std::int32_t>& completion) {
    text_out += json{{"index", index++}, {"prompt_ids", prompt}, {"completion_ids", completion}}.dump() + "\n";
    tokens += static_cast<std::int64_t>(prompt.size() + completion.size());
  };
  auto flush_stream = [&](bool all) {
    const auto L = static_cast<std::size_t>(o.max_length);
    while (stream.size() >= L || (all && !stream.empty())) {
      const auto n = std::min(L, stream.size());
      emit({}, std::vector<std::int32_t>(stream.begin(), stream.begin() + static_cast<long>(n)));
      stream.erase(stream.begin(), stream.begin() + static_cast<long>(n));
    }
  };
  std::optional<lal::lm::ChatTemplate> chat;
  for (const auto& file : o.corpus) {
    const bool jsonl = fs::path(file).extension() == ".jsonl";
    std::size_t line_no = 0;
    if (!jsonl) {
      std::istringstream in(read_file(file));
      std::string line, para;
      auto end_para = [&] {
        if (para.find_first_not_of(" \n\t") == std::string::npos) return para.clear();
        auto ids = tok.encode(para);
        stream.insert(stream.end(), ids.begin(), ids.end());
        stream.push_back(*eos);
        para.clear();
        flush_stream(false);
      };
      while (std::getline(in, line))
        (line.find_first_not_of(" \t\r") == std::string::npos) ? end_para() : void(para += line + "\n");
      end_para();
      continue;
    }
    for (const auto& line : read_complete_lines(file)) {
      ++line_no;
      json j;
      try {
        j = json::parse(line);
      } catch (const std::exception& e) {
        throw std::runtime_error(file + ":" + std::to_string(line_no) + ": not JSON: " + e.what());
      }
      if (j.contains("question") && j.contains("answer")) {
        if (!chat) chat = chat_template_for(o, tok_dir);
        auto prompt = render_prompt(*chat, tok, o, j["question"].get<std::string>());
        auto completion = tok.encode(j["answer"].get<std::string>());
        const auto stop = tok.token_to_id(chat->stop_texts().front());
        completion.push_back(stop >= 0 ? stop : *eos);
        if (static_cast<std::int64_t>(prompt.size() + completion.size()) > o.max_length)
          completion.resize(static_cast<std::size_t>(
              std::max<std::int64_t>(1, o.max_length - static_cast<std::int64_t>(prompt.size()))));
        emit(prompt, completion);
      } else if (j.contains("text") && j["text"].is_string()) {
        auto ids = tok.encode(j["text"].get<std::string>());
        stream.insert(stream.end(), ids.begin(), ids.end());
        stream.push_back(*eos);
        flush_stream(false);
      } else {
        throw std::runtime_error(file + ":" + std::to_string(line_no) +
                                 ": expected {\"text\": ...} or {\"question\": ..., \"answer\": ...}");
      }
    }
  }
  flush_stream(true);
  if (index == 0) throw std::runtime_error("--corpus: no text in the given files");
  fs::create_directories(p.work);
  write_file_atomic(p.data, text_out);
  spdlog::info("corpus data: {} sequences, {} tokens into {}", index, tokens, p.data);
}

// ------------------------------------------------------------------------------------------------ all stages

int run_distill(const DistillOptions& options) {
  validate(options);
  for (const char* flag : {"windows_mode", "use_triton_windows", "use_direct_gpu"})
    if (get_option(options, flag) == "true")
      spdlog::warn("--{}: accepted for the original project's command lines; it has no effect in lal", flag);
  check_speed_options(options, resolve_device(options));
  if (options.dry_run) {
    std::cout << describe_plan(options);
    return 0;
  }
  DistillOptions o = options;
  o.student_config = resolve_student(options);
  if (o.student_config != options.student_config)
    spdlog::info("student: {} (auto: the largest that fits)", o.student_config);
  if (!o.teacher_model.empty() && o.teacher_logits == "auto" && o.store_topk <= 0) {
    const auto teacher = lal::lm::ModelConfig::from_dir(lal::lm::resolve_model_config(o.teacher_model));
    bool teacher_init = false;
    const auto student = student_config(o.student_config, &teacher, teacher.vocab_size, &teacher_init);
    const auto device = resolve_device(o);
    o = resolve_teacher_logits(o, teacher, student, device, resolve_quantize(o, device),
                               WorldEnv::from_environment().size, device_capacity(o, device).bytes);
    if (o.store_topk > 0)
      spdlog::info(
          "teacher logits: top-{} stored by a scoring pass after generation (an online teacher would not fit "
          "beside the training)",
          o.store_topk);
  }
  apply_gpu_memory_cap(o, resolve_device(o));
  if (o.shard_optimizer == "auto" && WorldEnv::from_environment().size > 1) o = resolve_optimizer_sharding(o);
  if (!o.ignore_memory_plan) {
    // Stop before loading anything large when the plan cannot fit; the plan says what would.
    bool fits = true;
    const std::string plan = describe_plan(o, &fits);
    if (!fits)
      throw std::runtime_error("this run does not fit the device or the disk (--ignore_memory_plan to try anyway):\n" +
                               plan);
  }
  World& world = World::get();
  const auto env = WorldEnv::from_environment();
  if (env.size > 1) world.init(env, resolve_device(o));
  const RunPaths p = RunPaths::of(o);
  // Rank 0 writes the shared files; the others wait for them.
  if (world.is_main()) {
    fs::create_directories(p.work);
    write_file_atomic(p.options, to_yaml(o));
  }
  if (!o.teacher_model.empty()) {
    if (world.is_main()) stage_questions(o, p);
    world.barrier("questions");
    stage_teacher_data(o, p);
    release_cached_device_memory(resolve_device(o));
    if (o.store_topk > 0) stage_teacher_topk(o, p);  // every rank scores its share
    release_cached_device_memory(resolve_device(o));
  } else {
    if (world.is_main()) stage_corpus_data(o, p);
    world.barrier("corpus data");
  }
  const auto summary = stage_train_and_export(o, p);
  if (!world.is_main()) return 0;
  std::cout << "trained " << summary.steps << " steps in " << ProgressBar::format_duration(summary.seconds)
            << ": train loss " << summary.final_train_loss;
  if (summary.val_examples > 0) {
    std::cout << ", validation loss " << summary.best_val_loss << " (best at step " << summary.best_step
              << "), perplexity " << summary.val_ppl;
    if (summary.val_kl >= 0) std::cout << ", KL to teacher " << summary.val_kl;
  } else {
    std::cout << ", no validation split (--validation_fraction 0): the last step's weights are exported";
  }
  std::cout << "\n";
  if (o.save_hf_format) std::cout << "model: " << p.export_dir << "\n";
  std::cout << "metrics: " << p.metrics << ", curve: " << p.loss_svg << "\n";
  return 0;
}

}  // namespace lal::train
