// Stages (b') teacher top-k, (c) training, (d) export — the LibTorch side of `lal distill`.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>

#include "collectives.hpp"
#include "lal/lm/engine.hpp"
#include "lal/lm/model_path.hpp"
#include "lal/lm/tokenizer.hpp"
#include "lal/lm/training_kernels.hpp"
#include "lal/lm/transformer.hpp"
#include "lal/train/chunked_loss.hpp"
#include "lal/train/distill.hpp"
#include "lal/train/files.hpp"
#include "lal/train/model.hpp"
#include "lal/train/optim.hpp"
#include "lal/train/report.hpp"
#include "lal/train/student_config.hpp"
#include "lal/train/vocab_trim.hpp"
#include "lal/train/world.hpp"
#if defined(LAL_LM_HAVE_CUDA)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace lal::train {

namespace fs = std::filesystem;
using nlohmann::json;

std::string resolve_device(const DistillOptions& o) {
  if (o.use_cpu_only) return "cpu";
  std::string d = o.device != "auto" ? o.device : torch::cuda::is_available() ? "cuda" : "cpu";
  // One GPU per rank: a distributed run on "cuda" puts rank r on cuda:LOCAL_RANK.
  if (d == "cuda") {
    const auto env = WorldEnv::from_environment();
    if (env.size > 1) d += ":" + std::to_string(env.local_rank);
  }
  return d;
}

DeviceCapacity device_capacity(const DistillOptions& o, const std::string& device) {
  DeviceCapacity c;
  const torch::Device d(device);
  if (d.is_cuda()) {
#if defined(LAL_LM_HAVE_CUDA)
    const int index = d.has_index() ? d.index() : 0;
    if (index >= static_cast<int>(torch::cuda::device_count()))
      throw std::runtime_error("--device " + device + ": only " + std::to_string(torch::cuda::device_count()) +
                               " CUDA device(s) visible");
    const auto* prop = at::cuda::getDeviceProperties(index);
    c.bytes = static_cast<std::int64_t>(prop->totalGlobalMem);
    c.what = "cuda:" + std::to_string(index) + " (" + prop->name + ")";
#else
    throw std::runtime_error("--device " + device + ": this lal was built with a CPU-only LibTorch");
#endif
    if (!o.max_gpu_memory.empty()) {
      const auto cap = parse_bytes(o.max_gpu_memory, "--max_gpu_memory");
      if (cap < c.bytes) c.bytes = cap, c.what += ", capped by --max_gpu_memory";
    }
    return c;
  }
  // CPU: what the kernel says is available now (MemAvailable), the honest budget on a shared machine.
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  std::int64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit)
    if (key == "MemAvailable:") {
      c.bytes = kib * 1024;
      break;
    }
  c.what = "cpu (available memory)";
  if (c.bytes == 0) c.bytes = std::int64_t{1} << 62, c.what = "cpu (memory unknown)";
  return c;
}

std::int64_t spare_for_dequantized(const DistillOptions& o, const std::string& device, double need) {
  if (device.rfind("cuda", 0) != 0 || resolve_quantize(o, device) == "none" || o.cpu_offload) return 0;
  const double capacity = static_cast<double>(device_capacity(o, device).bytes);
  const double margin = std::max(0.1 * capacity, 4.0 * (1 << 30));
  return static_cast<std::int64_t>(std::max(0.0, capacity - need - margin));
}

void apply_gpu_memory_cap(const DistillOptions& o, const std::string& device) {
  const torch::Device d(device);
  if (o.max_gpu_memory.empty() || !d.is_cuda()) return;
#if defined(LAL_LM_HAVE_CUDA)
  const int index = d.has_index() ? d.index() : 0;
  const auto total = static_cast<double>(at::cuda::getDeviceProperties(index)->totalGlobalMem);
  // The caching allocator is created lazily (LibTorch 2.x): one small allocation on the device first, else
  // setMemoryFraction throws "Allocator not initialized for device".
  (void)torch::empty({1},
                     torch::TensorOptions().device(torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index))));
  const double fraction = std::min(1.0, static_cast<double>(parse_bytes(o.max_gpu_memory, "--max_gpu_memory")) / total);
  c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction, index);
  spdlog::info("CUDA memory capped at {} on cuda:{} ({:.1f} % of {:.1f} GiB)", o.max_gpu_memory, index, fraction * 100,
               total / (1 << 30));
#endif
}

void release_cached_device_memory(const std::string& device) {
  if (!torch::Device(device).is_cuda()) return;
#if defined(LAL_LM_HAVE_CUDA)
  c10::cuda::CUDACachingAllocator::emptyCache();
#endif
}

namespace {

// ------------------------------------------------------------------------------------------------ the teacher

/// ", N of L layers kept dequantized (X MiB)" when the model keeps any, else "".
std::string dequantized_note(const lal::lm::Transformer& m) {
  const auto kept = m.dequantized_summary();
  return kept.empty() ? kept : ", " + kept;
}

/// Teacher logits for right-padded ids: the trainable decoder's code path (int8/int4, CPU offload) for qwen2/llama,
/// the engine's Transformer for the other families.
class Teacher {
 public:
  /// `dequantized_cache_bytes`: device memory for keeping quantized layers dequantized (spare_for_dequantized).
  Teacher(const DistillOptions& o, torch::Device device, std::int64_t dequantized_cache_bytes = 0) {
    dir_ = lal::lm::resolve_model_path(o.teacher_model);
    const auto cfg = lal::lm::ModelConfig::from_dir(dir_);
    const auto dtype = device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
    compute_ = dtype;
    const std::string quant = resolve_quantize(o, device.is_cuda() ? "cuda" : "cpu");
    if (cfg.family == lal::lm::Family::Qwen2 || cfg.family == lal::lm::Family::Llama) {
      LoadOptions lo;
      lo.device = device, lo.dtype = dtype, lo.quantize = quant, lo.quantize_group = o.quantize_group;
      lo.cpu_offload = o.cpu_offload;
      lo.dequantized_cache_bytes = dequantized_cache_bytes;
      model_ = std::make_unique<CausalLM>(CausalLM::load(dir_, lo));
      vocab_ = model_->config().vocab_size;
      spdlog::info("teacher scorer: {} layers, {} weights ({}, {}{})", model_->config().num_layers,
                   model_->weight_bytes(), quant, o.cpu_offload ? "offloaded" : "resident",
                   dequantized_note(model_->decoder()));
    } else {
      // Other families score through the engine's Transformer, which quantizes and offloads the same way.
      lal::lm::WeightOptions w{quant, o.quantize_group, o.cpu_offload};
      w.dequantized_cache_bytes = dequantized_cache_bytes;
      engine_model_ = lal::lm::Transformer::load(dir_, device, dtype, w);
      spdlog::info("teacher scorer (engine): {} layers, {} weights ({}, {}{})", cfg.num_layers,
                   engine_model_->parameter_bytes(), quant, engine_model_->offloaded() ? "offloaded" : "resident",
                   dequantized_note(*engine_model_));
      vocab_ = cfg.vocab_size;
    }
  }
  torch::Tensor logits(const torch::Tensor& ids) const {
    torch::NoGradGuard no_grad;
    if (model_) return model_->forward(ids, compute_);
    const auto T = ids.size(1);
    auto pos = torch::arange(T, torch::kInt64).view({1, T}).expand({ids.size(0), T}).to(ids.device());
    return engine_model_->forward(ids, pos, torch::Tensor(), nullptr, false);
  }
  /// Logits [N, V] (compute dtype) at the flat positions `rows` of `ids`: the output layer runs on those rows only.
  torch::Tensor logits_at(const torch::Tensor& ids, const CausalLM::Packing& packing, const torch::Tensor& rows) const {
    torch::NoGradGuard no_grad;
    const auto x = at_rows(ids, packing, rows);
    return model_ ? torch::linear(x, model_->lm_head().to(x.device(), compute_)) : x;
  }
  /// The `k` largest log-probabilities (over the first `usable` ids) at the flat positions `rows` of the right-padded
  /// batch `ids` [B, T] (causal attention: an example never sees the padding after it): values [N, k] float32 and
  /// ids [N, k], on the CPU. The output layer and the softmax run on kScoreChunkRows rows at a time.
  std::pair<torch::Tensor, torch::Tensor> topk_at(const torch::Tensor& ids, const torch::Tensor& rows, std::int64_t k,
                                                  std::int64_t usable) const {
    constexpr std::int64_t kScoreChunkRows = 1024;
    torch::NoGradGuard no_grad;
    auto h = at_rows(ids, CausalLM::Packing{}, rows);  // hidden states, or (other families) the logits
    torch::Tensor head;
    if (model_)
      head = model_->lm_head().to(h.device(), compute_).narrow(0, 0, usable);
    else
      h = h.narrow(1, 0, usable);
    std::vector<torch::Tensor> values, indices;
    for (std::int64_t at = 0; at < h.size(0); at += kScoreChunkRows) {
      auto part = h.narrow(0, at, std::min(kScoreChunkRows, h.size(0) - at));
      if (head.defined()) part = torch::linear(part, head);
      auto top = torch::log_softmax(part.to(torch::kFloat32), -1).topk(k, -1);
      values.push_back(std::get<0>(top).cpu()), indices.push_back(std::get<1>(top).cpu());
    }
    return {torch::cat(values), torch::cat(indices)};
  }
  /// Whether logits_at() takes packed batches (the trainable decoder does; the engine's families do not).
  bool takes_packed() const { return model_ != nullptr; }
  std::int64_t vocab() const { return vocab_; }
  const std::string& dir() const { return dir_; }

 private:
  /// At the flat positions `rows` of `ids`: the hidden states (the trainable decoder) or the logits (the engine's
  /// families, which take no packed batch).
  torch::Tensor at_rows(const torch::Tensor& ids, const CausalLM::Packing& packing, const torch::Tensor& rows) const {
    torch::Tensor t;
    if (model_) {
      t = model_->hidden_states(ids, compute_, packing);
    } else {
      if (packing.segments.defined()) throw std::logic_error("packed batch for a teacher that cannot take one");
      t = logits(ids);
    }
    return t.view({-1, t.size(-1)}).index_select(0, rows);
  }

  std::string dir_;
  std::unique_ptr<CausalLM> model_;
  std::shared_ptr<lal::lm::Transformer> engine_model_;
  torch::ScalarType compute_ = torch::kFloat32;
  std::int64_t vocab_ = 0;
};

// ------------------------------------------------------------------------------------------------ data

struct Example {
  std::vector<std::int64_t> ids;  // prompt + completion, teacher/tokenizer ids, cut to max_length
  std::int64_t prompt_len = 0;
  std::vector<std::vector<std::int64_t>> topk_ids;  // per predicted completion position
  std::vector<std::vector<float>> topk_logprobs;
};

std::vector<Example> load_examples(const DistillOptions& o, const RunPaths& p, bool with_topk) {
  std::vector<Example> out;
  std::size_t line_no = 0;
  std::int64_t prompt_too_long = 0, longest_prompt = 0;  // examples whose prompt leaves no answer token
  for (const auto& line : read_complete_lines(p.data)) {
    ++line_no;
    json j;
    try {
      j = json::parse(line);
    } catch (const std::exception& e) {
      throw std::runtime_error(p.data + ":" + std::to_string(line_no) + ": not JSON: " + e.what());
    }
    Example e;
    for (auto id : j.at("prompt_ids")) e.ids.push_back(id.get<std::int64_t>());
    e.prompt_len = static_cast<std::int64_t>(e.ids.size());
    for (auto id : j.at("completion_ids")) e.ids.push_back(id.get<std::int64_t>());
    if (static_cast<std::int64_t>(e.ids.size()) > o.max_length) e.ids.resize(static_cast<std::size_t>(o.max_length));
    // Need at least one predicted token: the first prediction is at position prompt_len - 1.
    if (static_cast<std::int64_t>(e.ids.size()) < 2 || e.prompt_len >= static_cast<std::int64_t>(e.ids.size())) {
      if (e.prompt_len >= o.max_length) ++prompt_too_long, longest_prompt = std::max(longest_prompt, e.prompt_len);
      continue;
    }
    out.push_back(std::move(e));
  }
  const std::size_t records = line_no;
  if (with_topk) {
    std::size_t k = 0;
    line_no = 0;
    for (const auto& line : read_complete_lines(p.topk)) {
      ++line_no;
      const json j = json::parse(line);
      if (k >= out.size()) break;
      if (j.at("index").get<std::int64_t>() != static_cast<std::int64_t>(k))
        throw std::runtime_error(p.topk + ":" + std::to_string(line_no) + ": record for example " +
                                 std::to_string(j.at("index").get<std::int64_t>()) + " where example " +
                                 std::to_string(k) + " belongs; delete it to recompute");
      out[k].topk_ids = j.at("ids").get<std::vector<std::vector<std::int64_t>>>();
      out[k].topk_logprobs = j.at("logprobs").get<std::vector<std::vector<float>>>();
      ++k;
    }
    if (k != out.size())
      throw std::runtime_error(p.topk + ": has " + std::to_string(k) + " records for " + std::to_string(out.size()) +
                               " examples; delete it to recompute");
  }
  if (out.empty())
    throw std::runtime_error(
        p.data + ": no usable examples (each needs at least one answer token)" +
        (records == 0
             ? std::string(": the file holds none (the teacher stage skipped every question: see its warnings)")
         : prompt_too_long > 0 ? ": " + std::to_string(prompt_too_long) + " of " + std::to_string(records) +
                                     " have a prompt of at least --max_length " + std::to_string(o.max_length) +
                                     " tokens (the longest " + std::to_string(longest_prompt) +
                                     "); raise --max_length or shorten the prompts (--system_prompt, --chat_template)"
                               : std::string()));
  return out;
}

/// The predicted positions of an example: position t predicts ids[t+1], for answer tokens (t+1 >= prompt_len).
std::int64_t first_predicted(const Example& e) { return std::max<std::int64_t>(e.prompt_len, 1) - 1; }
/// How many positions of an example are predicted (the tokens its loss averages over).
std::int64_t predicted_tokens(const Example& e) {
  return static_cast<std::int64_t>(e.ids.size()) - 1 - first_predicted(e);
}

// Teacher vocabulary -> student vocabulary.
struct VocabAlign {
  std::int64_t student_vocab = 0;
  std::int64_t usable = 0;  // student ids >= usable are never produced by the tokenizer (padding rows)
  torch::Tensor kept;       // [Vs] teacher ids (trimming), or undefined (identity)
  std::vector<std::int32_t> old_to_new;

  std::int64_t to_student(std::int64_t id) const {
    if (!kept.defined()) return id;
    return id < static_cast<std::int64_t>(old_to_new.size()) ? old_to_new[static_cast<std::size_t>(id)] : -1;
  }
  /// teacher logits [N, Vt] -> [N, Vs], -inf where the teacher has no (usable) logit (and in padding columns).
  torch::Tensor teacher_to_student(const torch::Tensor& t) const {
    const auto src = kept.defined() ? t.index_select(1, kept.to(t.device())) : t;
    const auto n = std::min(usable, src.size(1));
    if (kept.defined() && n == student_vocab) return src;
    auto out = torch::full({t.size(0), student_vocab}, -std::numeric_limits<float>::infinity(), t.options());
    out.narrow(1, 0, n).copy_(src.narrow(1, 0, n));
    return out;
  }
};

struct Batch {
  torch::Tensor student_ids, teacher_ids;  // [B, T] right-padded
  torch::Tensor rows;                      // [N] flat positions b*T + t that predict an answer token
  torch::Tensor targets;                   // [N] student ids
  torch::Tensor topk_ids, topk_logprobs;   // [N, K] (student ids, -1 unused), or undefined
  CausalLM::Packing packing;               // undefined: one example per row
  std::int64_t tokens = 0;
};

/// Where each example of a micro-batch goes: row and offset. With `pack_length` > 0, first-fit over the examples
/// longest first into rows of that many tokens (a row holds several documents); otherwise one example per row.
struct Placement {
  std::vector<std::int64_t> row, offset;
  std::int64_t rows = 0, length = 0;  // rows used, longest row
};

Placement place_examples(const std::vector<std::int64_t>& lengths, std::int64_t pack_length) {
  Placement pl;
  const auto n = lengths.size();
  pl.row.assign(n, 0), pl.offset.assign(n, 0);
  if (pack_length <= 0) {
    for (std::size_t i = 0; i < n; ++i) pl.row[i] = static_cast<std::int64_t>(i);
    pl.rows = static_cast<std::int64_t>(n);
    for (auto l : lengths) pl.length = std::max(pl.length, l);
    return pl;
  }
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return lengths[a] > lengths[b]; });
  std::vector<std::int64_t> fill;
  for (auto i : order) {
    std::size_t r = 0;
    while (r < fill.size() && fill[r] + lengths[i] > std::max(pack_length, lengths[i])) ++r;
    if (r == fill.size()) fill.push_back(0);
    pl.row[i] = static_cast<std::int64_t>(r), pl.offset[i] = fill[r];
    fill[r] += lengths[i];
  }
  pl.rows = static_cast<std::int64_t>(fill.size());
  for (auto f : fill) pl.length = std::max(pl.length, f);
  return pl;
}

/// The tensors of one micro-batch. `pack_length` > 0 packs its examples into rows of up to that many tokens, each
/// with its own positions and attention (see place_examples); the loss rows keep the examples' order either way.
Batch make_batch(const std::vector<Example>& data, const std::vector<std::int64_t>& which, const VocabAlign& va,
                 torch::Device device, std::int64_t pack_length = 0) {
  std::vector<std::int64_t> lengths;
  for (auto i : which) lengths.push_back(static_cast<std::int64_t>(data[static_cast<std::size_t>(i)].ids.size()));
  const auto pl = place_examples(lengths, pack_length);
  const bool packed = pl.rows < static_cast<std::int64_t>(which.size());
  const auto T = pl.length, B = pl.rows;
  auto sid = torch::zeros({B, T}, torch::kInt64), tid = torch::zeros({B, T}, torch::kInt64);
  auto pos = torch::zeros({B, T}, torch::kInt64), seg = torch::full({B, T}, -1, torch::kInt64);  // -1: padding
  auto pa = pos.accessor<std::int64_t, 2>(), ga = seg.accessor<std::int64_t, 2>();
  std::vector<std::int64_t> rows, targets, kid;
  std::vector<float> klp;
  std::size_t K = 0;
  for (auto i : which)
    K = std::max(K, data[static_cast<std::size_t>(i)].topk_ids.empty()
                        ? 0
                        : data[static_cast<std::size_t>(i)].topk_ids[0].size());
  auto sa = sid.accessor<std::int64_t, 2>(), ta = tid.accessor<std::int64_t, 2>();
  for (std::size_t j = 0; j < which.size(); ++j) {
    const auto& e = data[static_cast<std::size_t>(which[j])];
    const auto n = static_cast<std::int64_t>(e.ids.size()), b = pl.row[j], at = pl.offset[j];
    for (std::int64_t t = 0; t < n; ++t) {
      ta[b][at + t] = e.ids[static_cast<std::size_t>(t)];
      const auto s = va.to_student(e.ids[static_cast<std::size_t>(t)]);
      if (s < 0)
        throw std::runtime_error("token id " + std::to_string(e.ids[static_cast<std::size_t>(t)]) +
                                 " is missing from the trimmed vocabulary");
      sa[b][at + t] = s;
      pa[b][at + t] = t;
      ga[b][at + t] = static_cast<std::int64_t>(j);
    }
    for (std::int64_t t = first_predicted(e); t + 1 < n; ++t) {
      rows.push_back(b * T + at + t);
      targets.push_back(sa[b][at + t + 1]);
      if (K) {
        const auto pos = static_cast<std::size_t>(t - first_predicted(e));
        for (std::size_t k = 0; k < K; ++k) {
          const bool have = pos < e.topk_ids.size() && k < e.topk_ids[pos].size();
          kid.push_back(have ? va.to_student(e.topk_ids[pos][k]) : -1);
          klp.push_back(have ? e.topk_logprobs[pos][k] : 0.0f);
        }
      }
    }
  }
  Batch batch;
  batch.student_ids = sid.to(device), batch.teacher_ids = tid.to(device);
  batch.rows = torch::tensor(rows, torch::kInt64).to(device);
  batch.targets = torch::tensor(targets, torch::kInt64).to(device);
  batch.tokens = static_cast<std::int64_t>(rows.size());
  if (packed) batch.packing.positions = pos.to(device), batch.packing.segments = seg.to(device);
  if (K) {
    const auto N = static_cast<std::int64_t>(rows.size()), KK = static_cast<std::int64_t>(K);
    batch.topk_ids = torch::tensor(kid, torch::kInt64).view({N, KK}).to(device);
    batch.topk_logprobs = torch::tensor(klp, torch::kFloat32).view({N, KK}).to(device);
  }
  return batch;
}

// ------------------------------------------------------------------------------------------------ optimisation

/// ZeRO-1 partition: each parameter to the rank with the fewest elements so far, largest parameters first
/// (deterministic, so every rank computes the same owners).
std::vector<int> partition_parameters(const std::vector<std::pair<std::string, torch::Tensor>>& params, int ranks) {
  std::vector<std::size_t> order(params.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](auto a, auto b) { return params[a].second.numel() > params[b].second.numel(); });
  std::vector<std::int64_t> load(static_cast<std::size_t>(ranks), 0);
  std::vector<int> owner(params.size(), 0);
  for (auto i : order) {
    const auto r = static_cast<std::size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = static_cast<int>(r);
    load[r] += params[i].second.numel();
  }
  return owner;
}

/// Linear warmup to the peak, then cosine decay to min_learning_rate at the last step.
double learning_rate(const DistillOptions& o, std::int64_t step, std::int64_t total) {
  const auto warmup =
      std::max<std::int64_t>(1, static_cast<std::int64_t>(std::round(o.warmup_ratio * static_cast<double>(total))));
  if (step < warmup) return o.learning_rate * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double progress = total > warmup ? static_cast<double>(step - warmup) /
                                               static_cast<double>(std::max<std::int64_t>(1, total - warmup - 1))
                                         : 1.0;
  return o.min_learning_rate +
         0.5 * (o.learning_rate - o.min_learning_rate) * (1 + std::cos(M_PI * std::min(1.0, progress)));
}

// ------------------------------------------------------------------------------------------------ checkpoints

struct TrainState {
  std::int64_t step = 0, epoch = 0, cursor = 0;  // data position: micro-batch `cursor` of `epoch`
  double best_val = std::numeric_limits<double>::infinity();
  std::int64_t best_step = -1;
  double last_train_loss = 0;
};

json state_json(const TrainState& s) {
  return {{"step", s.step},           {"epoch", s.epoch},
          {"cursor", s.cursor},       {"best_val", std::isfinite(s.best_val) ? json(s.best_val) : json(nullptr)},
          {"best_step", s.best_step}, {"last_train_loss", s.last_train_loss}};
}

TrainState state_from_json(const json& j) {
  TrainState s;
  s.step = j.at("step"), s.epoch = j.at("epoch"), s.cursor = j.at("cursor"), s.best_step = j.at("best_step");
  s.best_val = j.at("best_val").is_null() ? std::numeric_limits<double>::infinity() : j.at("best_val").get<double>();
  s.last_train_loss = j.value("last_train_loss", 0.0);
  return s;
}

/// Write `name` under `checkpoints/` atomically: everything goes to a temp dir that is renamed into place.
void save_checkpoint(const RunPaths& p, const std::string& name, const CausalLM& model, const AdamW* opt,
                     const TrainState& st) {
  // The optimizer state is gathered by every rank; rank 0 alone writes.
  auto state = opt ? opt->state(World::get()) : std::vector<std::pair<std::string, torch::Tensor>>{};
  if (!World::get().is_main()) return;
  const fs::path dir = fs::path(p.checkpoints) / name;
  const fs::path tmp = fs::path(p.checkpoints) / ("." + name + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  model.save_safetensors((tmp / "model.safetensors").string(), lal::lm::DType::F32);
  if (opt) {
    state.emplace_back("rng.cpu", at::detail::getDefaultCPUGenerator().get_state());
    write_tensors((tmp / "optimizer.safetensors").string(), state);
  }
  write_file_atomic((tmp / "trainer_state.json").string(), state_json(st).dump(1) + "\n");
  fsync_directory(tmp.string());
  const fs::path old = fs::path(p.checkpoints) / ("." + name + ".old-" + std::to_string(::getpid()));
  if (fs::exists(dir)) fs::rename(dir, old);
  fs::rename(tmp, dir);
  fsync_directory(p.checkpoints);
  fs::remove_all(old);
}

std::vector<std::pair<std::int64_t, fs::path>> step_checkpoints(const std::string& dir) {
  std::vector<std::pair<std::int64_t, fs::path>> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const auto n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step-", 0) == 0) out.emplace_back(std::stoll(n.substr(5)), e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void prune_checkpoints(const RunPaths& p, std::int64_t keep) {
  auto all = step_checkpoints(p.checkpoints);
  for (std::size_t i = 0; i + static_cast<std::size_t>(std::max<std::int64_t>(keep, 1)) < all.size(); ++i)
    fs::remove_all(all[i].second);
}

/// The checkpoint `resume_from` names: a checkpoint dir, or a work dir (its newest step checkpoint).
fs::path find_resume_checkpoint(const std::string& resume_from) {
  if (fs::exists(fs::path(resume_from) / "trainer_state.json")) return resume_from;
  auto all = step_checkpoints((fs::path(resume_from) / "checkpoints").string());
  if (all.empty())
    throw std::runtime_error("--resume_from " + resume_from + ": no checkpoint there (expected trainer_state.json or " +
                             "checkpoints/step-N/)");
  return all.back().second;
}

TrainState load_checkpoint(const fs::path& dir, CausalLM& model, AdamW& opt) {
  // Mapped, not read: each rank copies only what it holds (its AdamW shard), so a resume does not need the whole
  // checkpoint in every rank's memory.
  if (!fs::exists(dir / "optimizer.safetensors"))
    throw std::runtime_error("--resume_from " + dir.string() +
                             ": this checkpoint holds no optimizer state (written with --save_only_model, or the "
                             "best/ checkpoint), so training cannot continue from it");
  const auto weights = MappedTensors::open((dir / "model.safetensors").string());
  model.load_state(weights.tensors, weights.file.path());
  const auto opt_state = MappedTensors::open((dir / "optimizer.safetensors").string());
  opt.load(opt_state.tensors, opt_state.file.path());
  if (opt_state.tensors.count("rng.cpu")) {
    auto gen = at::detail::getDefaultCPUGenerator();
    gen.set_state(opt_state.tensors.at("rng.cpu").clone());
  }
  return state_from_json(json::parse(read_file((dir / "trainer_state.json").string())));
}

// ------------------------------------------------------------------------------------------------ metrics

void append_metrics(const RunPaths& p, const json& record) {
  JsonlAppender m(p.metrics);
  m.add(record.dump());
  m.flush();
}

/// Keep only the metric records up to `step` (a resumed run rewrites what came after its checkpoint).
void rewind_metrics(const RunPaths& p, std::int64_t step) {
  std::size_t keep = 0;
  for (const auto& line : read_complete_lines(p.metrics)) {
    if (json::parse(line).value("step", std::int64_t{0}) > step) break;
    ++keep;
  }
  JsonlAppender::truncate_lines(p.metrics, keep);
}

void draw_loss_curve(const RunPaths& p) {
  CurveSeries train{"train loss", "#1f77b4", {}}, val{"validation loss", "#d62728", {}}, kl{"val KL", "#2ca02c", {}};
  for (const auto& line : read_complete_lines(p.metrics)) {
    const auto j = json::parse(line);
    const double step = j.value("step", 0.0);
    if (j.contains("loss")) train.points.emplace_back(step, j["loss"].get<double>());
    if (j.contains("val_loss")) val.points.emplace_back(step, j["val_loss"].get<double>());
    if (j.contains("val_kl") && j["val_kl"].is_number()) kl.points.emplace_back(step, j["val_kl"].get<double>());
  }
  std::vector<CurveSeries> series{train, val};
  if (!kl.points.empty()) series.push_back(kl);
  write_curve_svg(p.loss_svg, "lal distill: loss", series, /*log_y=*/true);
}

// ------------------------------------------------------------------------------------------------ export

std::string tokenizer_source(const DistillOptions& o) {
  if (!o.tokenizer.empty())
    return fs::is_directory(o.tokenizer) ? (fs::path(o.tokenizer) / "tokenizer.json").string() : o.tokenizer;
  return (fs::path(lal::lm::resolve_model_path(o.teacher_model)) / "tokenizer.json").string();
}

const char* kChatMLTemplate =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

std::string model_card(const DistillOptions& o, const lal::lm::ModelConfig& c, const TrainSummary& s,
                       std::int64_t params) {
  std::ostringstream r;
  r << "---\nlibrary_name: transformers\npipeline_tag: text-generation\ntags: [lal, distillation]\n---\n\n# "
    << o.hf_model_name << "\n\n";
  if (!o.model_card_note.empty()) r << o.model_card_note << "\n\n";
  r << "A " << c.model_type << " decoder (" << c.num_layers << " layers, hidden " << c.hidden_size << ", "
    << c.num_heads << " heads / " << c.num_kv_heads << " kv heads, vocabulary " << c.vocab_size << ", " << params
    << " parameters) ";
  if (!o.teacher_model.empty())
    r << "distilled from `" << o.teacher_model << "` with `lal distill` (loss " << o.alpha
      << " x T^2 x KL(teacher || student) + " << 1 - o.alpha << " x cross-entropy, T = " << o.distillation_temperature
      << ").\n\n";
  else {
    r << "trained on text with `lal train` (cross-entropy) from:\n\n";
    for (const auto& f : o.corpus) r << "- `" << fs::path(f).filename().string() << "`\n";
    r << "\n";
  }
  r << "## Evaluation (held-out split, " << s.val_examples << " sequences)\n\n| metric | value |\n|---|---|\n"
    << "| validation cross-entropy (nats/token) | " << s.val_ce << " |\n| validation perplexity | " << s.val_ppl
    << " |\n";
  if (s.val_kl >= 0) r << "| KL(teacher || student) per token | " << s.val_kl << " |\n";
  r << "| optimizer steps | " << s.steps << " (best at " << s.best_step << ") |\n\n";
  r << "## Use\n\n```sh\nlal generate --model_path " << o.output_dir << "/" << o.hf_model_name
    << " --chat --prompt \"こんにちは\"\n```\n\n```python\nfrom transformers import AutoModelForCausalLM, "
       "AutoTokenizer\n"
    << "tok = AutoTokenizer.from_pretrained(\"" << o.hf_model_name
    << "\")\nmodel = AutoModelForCausalLM.from_pretrained(\"" << o.hf_model_name
    << "\")\n```\n\n## Training settings\n\n```yaml\n"
    << to_yaml(o) << "```\n";
  return r.str();
}

// The chat template the student was trained with goes with it, in the layout the source used: transformers 5 writes
// chat_template.jinja (plus additional_chat_templates/*.jinja) and no "chat_template" key in tokenizer_config.json,
// older versions the key alone; special_tokens_map.json holds the special-token texts for older loaders. With
// --chat_template chatml or FILE.jinja the run's template replaces the model's own (chat_template.jinja, which
// transformers and lal read before tokenizer_config.json, or the key when the source had no .jinja).
void copy_chat_template_files(const fs::path& src_dir, const fs::path& dst, const std::string& override_template) {
  for (const char* f : {"chat_template.jinja", "special_tokens_map.json"})
    if (fs::exists(src_dir / f)) fs::copy_file(src_dir / f, dst / f, fs::copy_options::overwrite_existing);
  if (fs::is_directory(src_dir / "additional_chat_templates"))
    fs::copy(src_dir / "additional_chat_templates", dst / "additional_chat_templates",
             fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  std::string replacement;
  if (override_template == "chatml")
    replacement = kChatMLTemplate;
  else if (fs::path(override_template).extension() == ".jinja")
    replacement = read_file(override_template);
  if (replacement.empty()) {
    // A built-in format other than chatml has no Jinja source here: the export keeps the model's own template files.
    if (!override_template.empty())
      spdlog::warn(
          "--chat_template {}: the student was trained in lal's built-in {} format; the export carries {} (pass "
          "--chat_template FILE.jinja to export the exact template it was trained with)",
          override_template, override_template,
          fs::exists(dst / "chat_template.jinja") ? "the teacher's chat_template.jinja"
                                                  : "the teacher's tokenizer_config.json (its chat_template, if any)");
    return;
  }
  const fs::path tc_path = dst / "tokenizer_config.json";
  if (fs::exists(dst / "chat_template.jinja") || !fs::exists(tc_path)) {
    write_file_atomic((dst / "chat_template.jinja").string(), replacement);
    return;
  }
  auto tc = nlohmann::ordered_json::parse(read_file(tc_path.string()));
  tc["chat_template"] = replacement;
  write_file_atomic(tc_path.string(), tc.dump(2) + "\n");
}

void export_model(const DistillOptions& o, const RunPaths& p, const CausalLM& model, const VocabMap* trim,
                  const TrainSummary& summary) {
  const fs::path dst = p.export_dir;
  const fs::path tmp = dst.string() + ".tmp-" + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  const std::string tok_src = tokenizer_source(o);
  lal::lm::ModelConfig c = model.config();
  // Special ids in the student's numbering.
  const auto tok = lal::lm::Tokenizer::from_file(tok_src);
  auto map_id = [&](std::int64_t id) -> std::int64_t {
    if (id < 0) return -1;
    if (!trim) return id;
    return id < static_cast<std::int64_t>(trim->old_to_new.size()) ? trim->old_to_new[static_cast<std::size_t>(id)]
                                                                   : -1;
  };
  std::vector<std::int64_t> eos;
  std::vector<std::int64_t> candidates = c.eos_token_ids;
  if (tok.eos_id()) candidates.push_back(*tok.eos_id());
  for (const char* s : {"<|im_end|>", "<|endoftext|>", "<|eot_id|>"})
    if (tok.token_to_id(s) >= 0) candidates.push_back(tok.token_to_id(s));
  for (auto id : candidates) {
    const auto m = map_id(id);
    if (m >= 0 && std::find(eos.begin(), eos.end(), m) == eos.end()) eos.push_back(m);
  }
  c.eos_token_ids = eos;
  c.bos_token_id = map_id(tok.bos_id() ? *tok.bos_id() : c.bos_token_id);
  c.pad_token_id = map_id(tok.pad_id() ? *tok.pad_id() : c.pad_token_id);
  write_file_atomic((tmp / "config.json").string(), hf_config_json(c, o.export_dtype));
  model.save_safetensors((tmp / "model.safetensors").string(),
                         o.export_dtype == "float32" ? lal::lm::DType::F32 : lal::lm::DType::BF16,
                         {{"producer", "lal distill"}});
  if (trim) {
    write_trimmed_tokenizer(tok_src, tmp.string(), *trim);
  } else {
    fs::copy_file(tok_src, tmp / "tokenizer.json", fs::copy_options::overwrite_existing);
    const auto cfg = fs::path(tok_src).parent_path() / "tokenizer_config.json";
    if (fs::exists(cfg)) fs::copy_file(cfg, tmp / "tokenizer_config.json", fs::copy_options::overwrite_existing);
  }
  copy_chat_template_files(fs::path(tok_src).parent_path(), tmp, o.chat_template);
  json gen = {{"bos_token_id", c.bos_token_id >= 0 ? json(c.bos_token_id) : json(nullptr)},
              {"eos_token_id", eos},
              {"do_sample", true},
              {"temperature", 0.7},
              {"top_p", 0.9},
              {"transformers_version", "4.45.0"}};
  if (c.pad_token_id >= 0) gen["pad_token_id"] = c.pad_token_id;
  write_file_atomic((tmp / "generation_config.json").string(), gen.dump(2) + "\n");
  write_file_atomic((tmp / "README.md").string(), model_card(o, c, summary, model.parameter_count()));
  fsync_directory(tmp.string());
  const fs::path old = dst.string() + ".old-" + std::to_string(::getpid());
  if (fs::exists(dst)) fs::rename(dst, old);
  fs::rename(tmp, dst);
  fs::remove_all(old);
  fsync_directory(dst.parent_path().string());
}

// ------------------------------------------------------------------------------------------------ the student

VocabMap load_or_build_vocab_map(const DistillOptions& o, const RunPaths& p, const std::vector<Example>& data) {
  if (fs::exists(p.vocab_map)) {
    VocabMap m;
    const auto j = json::parse(read_file(p.vocab_map));
    m.kept = j.at("kept").get<std::vector<std::int32_t>>();
    m.old_to_new.assign(static_cast<std::size_t>(j.at("old_vocab").get<std::int64_t>()), -1);
    for (std::size_t i = 0; i < m.kept.size(); ++i)
      m.old_to_new[static_cast<std::size_t>(m.kept[i])] = static_cast<std::int32_t>(i);
    return m;
  }
  std::vector<std::int32_t> used;
  for (const auto& e : data)
    for (auto id : e.ids) used.push_back(static_cast<std::int32_t>(id));
  auto m = build_vocab_map(tokenizer_source(o), used);
  write_file_atomic(p.vocab_map, json{{"kept", m.kept}, {"old_vocab", m.old_to_new.size()}}.dump() + "\n");
  return m;
}

CausalLM make_student(const DistillOptions& o, const lal::lm::ModelConfig* teacher_cfg, std::int64_t vocab,
                      const VocabMap* trim, torch::Device device) {
  bool prefers_teacher = false;
  auto cfg = student_config(o.student_config, teacher_cfg, vocab, &prefers_teacher);
  const bool from_teacher = o.student_init == "teacher" || (o.student_init == "auto" && prefers_teacher);
  if (!from_teacher) return CausalLM::random(cfg, static_cast<std::uint64_t>(o.seed), device);
  if (!teacher_cfg) throw std::runtime_error("--student_init teacher needs a teacher");
  if (teacher_cfg->hidden_size != cfg.hidden_size || teacher_cfg->intermediate_size != cfg.intermediate_size ||
      teacher_cfg->num_heads != cfg.num_heads || teacher_cfg->num_kv_heads != cfg.num_kv_heads)
    throw std::runtime_error(
        "--student_init teacher: the student's widths must equal the teacher's (hidden, "
        "intermediate, heads); only the layer count may differ");
  LoadOptions lo;
  lo.device = device, lo.trainable = true;
  lo.layers = teacher_layer_subset(teacher_cfg->num_layers, cfg.num_layers);
  std::vector<std::int32_t> rows;
  if (trim) {
    rows = trim->kept;
    rows.resize(static_cast<std::size_t>(cfg.vocab_size), trim->kept.front());  // padding rows: zeroed below
  } else if (cfg.vocab_size != teacher_cfg->vocab_size) {
    if (cfg.vocab_size > teacher_cfg->vocab_size)
      throw std::runtime_error("the student's vocabulary is larger than the teacher's");
    for (std::int32_t i = 0; i < cfg.vocab_size; ++i) rows.push_back(i);
  }
  if (!rows.empty()) lo.vocab_rows = &rows;
  auto m = CausalLM::load(lal::lm::resolve_model_path(o.teacher_model), lo);
  if (trim && cfg.vocab_size > trim->size()) {  // rows past the trimmed vocabulary: zero (never produced)
    torch::NoGradGuard no_grad;
    for (auto t : {m.embedding(), m.lm_head()}) t.narrow(0, trim->size(), cfg.vocab_size - trim->size()).zero_();
  }
  spdlog::info("student initialised from teacher layers {}", json(lo.layers).dump());
  return m;
}

}  // namespace

// ------------------------------------------------------------------------------------------------ (b') top-k

void stage_teacher_topk(const DistillOptions& o, const RunPaths& p) {
  World& world = World::get();
  auto data = load_examples(o, p, false);
  auto done = record_indices_with_rank_files(p.topk);
  if (done.size() < data.size()) {
    const torch::Device device(resolve_device(o));
    Teacher teacher(o, device, teacher_dequantized_cache(o, device.str(), nullptr));
    const auto tok = lal::lm::Tokenizer::from_file(tokenizer_source(o));
    const auto usable = std::min<std::int64_t>(teacher.vocab(), static_cast<std::int64_t>(tok.vocab_size()));
    const auto K = std::min<std::int64_t>(o.store_topk, usable);
    JsonlAppender out(world.distributed() ? p.topk + ".rank-" + std::to_string(world.rank()) : p.topk);
    ProgressBar bar("top-k", static_cast<std::int64_t>(data.size()), "ex", o.progress && world.is_main(),
                    static_cast<std::int64_t>(done.size()));
    // Examples go through the teacher together (a dequantized or streamed layer then serves many): windows of up to
    // --generation_batch_size examples and kScoreTokens padded tokens, cut the same way from the first example on
    // whatever was done before, so that every rank and every resume sees the same windows; ranks take turns.
    constexpr std::int64_t kScoreTokens = 8192;
    std::size_t window = 0;
    for (std::size_t i = 0; i < data.size(); ++window) {
      std::size_t end = i;
      std::int64_t longest = 0;
      while (end < data.size() && static_cast<std::int64_t>(end - i) < o.generation_batch_size) {
        const auto len = std::max(longest, static_cast<std::int64_t>(data[end].ids.size()));
        if (end > i && len * static_cast<std::int64_t>(end - i + 1) > kScoreTokens) break;
        longest = len, ++end;
      }
      const auto from = i;
      i = end;
      bool complete = true;
      for (auto k = from; k < end; ++k) complete = complete && done.count(static_cast<std::int64_t>(k));
      if (complete || static_cast<int>(window % static_cast<std::size_t>(world.size())) != world.rank()) continue;
      const auto B = static_cast<std::int64_t>(end - from);
      auto ids = torch::zeros({B, longest}, torch::kInt64);
      auto ia = ids.accessor<std::int64_t, 2>();
      std::vector<std::int64_t> rows;
      for (std::int64_t b = 0; b < B; ++b) {
        const auto& e = data[from + static_cast<std::size_t>(b)];
        for (std::size_t t = 0; t < e.ids.size(); ++t) ia[b][static_cast<std::int64_t>(t)] = e.ids[t];
        for (auto t = first_predicted(e); t + 1 < static_cast<std::int64_t>(e.ids.size()); ++t)
          rows.push_back(b * longest + t);
      }
      const auto [vals, idx] =
          teacher.topk_at(ids.to(device), torch::tensor(rows, torch::kInt64).to(device), K, usable);
      std::int64_t row = 0;
      for (std::int64_t b = 0; b < B; ++b) {
        const auto index = static_cast<std::int64_t>(from) + b;
        const auto n = predicted_tokens(data[static_cast<std::size_t>(index)]);
        json rec = {{"index", index}, {"ids", json::array()}, {"logprobs", json::array()}};
        for (std::int64_t t = 0; t < n; ++t, ++row) {
          const auto* id = idx[row].data_ptr<std::int64_t>();
          const auto* lp = vals[row].data_ptr<float>();
          rec["ids"].push_back(std::vector<std::int64_t>(id, id + K));
          rec["logprobs"].push_back(std::vector<float>(lp, lp + K));
        }
        if (done.insert(index).second) out.add(rec.dump());
      }
      out.flush();  // one write + fsync per window: a kill loses at most the window in flight
      bar.update(static_cast<std::int64_t>(done.size()));
    }
    bar.finish();
  }
  world.barrier("teacher top-k");
  if (world.is_main()) {
    const auto n = merge_rank_files(p.topk);
    if (n >= 0) spdlog::info("teacher top-k: merged the ranks' files into {} ({} examples)", p.topk, n);
  }
  world.barrier("teacher top-k merge");
}

// ------------------------------------------------------------------------------------------------ (c) training

namespace {

struct Trainer {
  const DistillOptions& o;
  const RunPaths& p;
  torch::Device device;
  torch::ScalarType compute;
  std::vector<Example>& data;
  std::vector<std::int64_t> train_idx, val_idx;
  VocabAlign va;
  const Teacher* teacher;  // null: no online logits
  bool use_topk;
  CausalLM& student;

  /// The micro-batches of `epoch` in a fixed pseudo-random order (a function of seed and epoch only).
  std::vector<std::vector<std::int64_t>> epoch_batches(std::int64_t epoch) const {
    auto order = train_idx;
    std::mt19937_64 rng(static_cast<std::uint64_t>(o.seed) * 1000003ULL + static_cast<std::uint64_t>(epoch));
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<std::vector<std::int64_t>> out;
    for (std::size_t i = 0; i < order.size(); i += static_cast<std::size_t>(o.batch_size))
      out.emplace_back(
          order.begin() + static_cast<long>(i),
          order.begin() + static_cast<long>(std::min(order.size(), i + static_cast<std::size_t>(o.batch_size))));
    return out;
  }
  /// Micro-batches per optimizer step over all ranks: each rank computes gradient_accumulation of them.
  std::int64_t micro_per_step() const { return o.gradient_accumulation * World::get().size(); }
  std::int64_t steps_per_epoch() const {
    const auto micro = static_cast<std::int64_t>((train_idx.size() + static_cast<std::size_t>(o.batch_size) - 1) /
                                                 static_cast<std::size_t>(o.batch_size));
    return (micro + micro_per_step() - 1) / micro_per_step();
  }

  /// Examples per row when packing (0: one per row): the trainable decoder takes packed rows, the engine's other
  /// teacher families do not.
  std::int64_t pack_length() const {
    return o.pack_sequences && (!teacher || teacher->takes_packed()) ? o.max_length : 0;
  }

  /// Rows per chunk of the chunked loss: --loss_chunk_tokens, or with -1 (auto) 4096 where the CUDA training kernels
  /// compute it (CE or stored top-k: the chunk's logits held once, in the compute dtype, turned into the gradient in
  /// place) and 1024 elsewhere (the LibTorch path, which a full teacher's logits take too, holds several float32
  /// copies of a chunk).
  std::int64_t loss_chunk_tokens(const torch::Tensor& hidden, bool full_teacher) const {
    if (o.loss_chunk_tokens > 0) return o.loss_chunk_tokens;
    return !full_teacher && lal::lm::training::kernels_apply(hidden) ? 4096 : 1024;
  }

  /// The loss of one batch: student forward, teacher logits (online or stored top-k), KD + CE. With
  /// loss_chunk_tokens != 0 the output layer and the loss run together over token chunks (chunked_loss.hpp);
  /// 0 is the plain path (whole [tokens x vocab] logits), kept as the reference.
  LossParts batch_loss(const Batch& b, torch::Tensor* kl_metric = nullptr) const {
    auto h = student.hidden_states(b.student_ids, compute, b.packing, o.activation_checkpointing);
    h = h.view({-1, h.size(-1)}).index_select(0, b.rows);
    torch::Tensor tl;  // the teacher's logits at the predicted rows, teacher vocabulary
    if (teacher) tl = teacher->logits_at(b.teacher_ids, b.packing, b.rows);
    if (o.loss_chunk_tokens != 0) {
      ChunkedLossInput in;
      in.hidden = h, in.lm_head = student.lm_head(), in.targets = b.targets;
      if (tl.defined())
        in.teacher = [&](std::int64_t begin, std::int64_t count) {
          return va.teacher_to_student(tl.narrow(0, begin, count).to(torch::kFloat32));
        };
      if (use_topk && !tl.defined()) in.topk_ids = b.topk_ids, in.topk_logprobs = b.topk_logprobs;
      in.temperature = o.distillation_temperature, in.alpha = o.alpha,
      in.chunk_tokens = loss_chunk_tokens(h, tl.defined());
      return chunked_distillation_loss(in, kl_metric);
    }
    auto s = torch::linear(h, student.lm_head().to(compute)).to(torch::kFloat32);
    torch::Tensor t;
    if (tl.defined()) {
      t = va.teacher_to_student(tl.to(torch::kFloat32));
      if (kl_metric) *kl_metric = mean_kl(s.detach(), t);
    }
    if (use_topk && !t.defined()) {
      if (kl_metric)
        *kl_metric = distillation_loss_topk(s.detach(), b.topk_ids, b.topk_logprobs, b.targets, 1.0, 1.0).kd;
      return distillation_loss_topk(s, b.topk_ids, b.topk_logprobs, b.targets, o.distillation_temperature, o.alpha);
    }
    if (t.defined() && o.alpha == 0) {  // hard labels only, teacher kept for the metric
      auto parts = distillation_loss(s, torch::Tensor(), b.targets, 1, 0);
      torch::NoGradGuard g;
      parts.kd = distillation_loss(s.detach(), t, b.targets, o.distillation_temperature, 1).kd;
      return parts;
    }
    return distillation_loss(s, t, b.targets, o.distillation_temperature, o.alpha);
  }

  /// Token-weighted validation means: loss, ce, kl (-1 without teacher information). Ranks share the batches.
  json validate() const {
    torch::NoGradGuard no_grad;
    double loss = 0, ce = 0, kl = 0;
    std::int64_t tokens = 0;
    bool have_kl = false;
    World& world = World::get();
    std::size_t batch_no = 0;
    for (std::size_t i = 0; i < val_idx.size(); i += static_cast<std::size_t>(o.batch_size), ++batch_no) {
      if (static_cast<int>(batch_no % static_cast<std::size_t>(world.size())) != world.rank()) continue;
      std::vector<std::int64_t> which(
          val_idx.begin() + static_cast<long>(i),
          val_idx.begin() + static_cast<long>(std::min(val_idx.size(), i + static_cast<std::size_t>(o.batch_size))));
      const auto b = make_batch(data, which, va, device, pack_length());
      torch::Tensor klm;
      const auto parts = batch_loss(b, &klm);
      const auto n = static_cast<double>(b.tokens);
      loss += parts.total.item<double>() * n, ce += parts.ce.item<double>() * n, tokens += b.tokens;
      if (klm.defined()) kl += klm.item<double>() * n, have_kl = true;
    }
    if (world.distributed()) {
      std::vector<double> sums{loss, ce, kl, static_cast<double>(tokens), have_kl ? 1.0 : 0.0};
      world.all_reduce_sum(sums, "validation sums");
      loss = sums[0], ce = sums[1], kl = sums[2], tokens = static_cast<std::int64_t>(sums[3]), have_kl = sums[4] > 0;
    }
    const double N = static_cast<double>(std::max<std::int64_t>(tokens, 1));
    return {{"val_loss", loss / N},
            {"val_ce", ce / N},
            {"val_ppl", std::exp(ce / N)},
            {"val_kl", have_kl ? json(kl / N) : json(nullptr)},
            {"val_tokens", tokens}};
  }
};

}  // namespace

TrainSummary stage_train_and_export(const DistillOptions& o, const RunPaths& p) {
  if (o.threads > 0) torch::set_num_threads(static_cast<int>(o.threads));
  const torch::Device device(resolve_device(o));
  const auto compute = o.precision == "bf16"   ? torch::kBFloat16
                       : o.precision == "fp32" ? torch::kFloat32
                       : device.is_cuda()      ? torch::kBFloat16
                                               : torch::kFloat32;
  const bool use_topk = o.teacher_logits == "topk" || (o.teacher_logits == "auto" && o.store_topk > 0);
  const bool online = !o.teacher_model.empty() && !use_topk && o.teacher_logits != "none";
  auto data = load_examples(o, p, use_topk);

  // Vocabulary: trimmed, or the teacher's / tokenizer's.
  std::optional<lal::lm::ModelConfig> teacher_cfg;
  if (!o.teacher_model.empty())
    teacher_cfg = lal::lm::ModelConfig::from_dir(lal::lm::resolve_model_path(o.teacher_model));
  const auto tok = lal::lm::Tokenizer::from_file(tokenizer_source(o));
  std::optional<VocabMap> trim;
  if (o.trim_vocab) trim = load_or_build_vocab_map(o, p, data);
  VocabAlign va;
  std::int64_t vocab = trim ? trim->size() : 0;
  if (!trim) {
    bool dummy = false;
    vocab = student_config(o.student_config, teacher_cfg ? &*teacher_cfg : nullptr,
                           teacher_cfg ? teacher_cfg->vocab_size : static_cast<std::int64_t>(tok.vocab_size()), &dummy)
                .vocab_size;
  }
  // A vocabulary of our own making (training on text: the tokenizer's arbitrary size, Qwen's 151,665; a trimmed one)
  // is rounded up: GEMMs over a vocabulary that is not a multiple of 8 fall back to slow cuBLAS kernels
  // (core/train/BENCHMARKS.md), so published checkpoints pad theirs too. The extra rows are never produced
  // (va.usable; the engine ignores them too, past the tokenizer's size).
  if (trim || !teacher_cfg) vocab = (vocab + o.vocab_multiple - 1) / o.vocab_multiple * o.vocab_multiple;
  va.student_vocab = vocab;
  va.usable = trim ? trim->size() : std::min<std::int64_t>(vocab, static_cast<std::int64_t>(tok.vocab_size()));
  if (trim)
    va.kept = torch::tensor(std::vector<std::int64_t>(trim->kept.begin(), trim->kept.end()), torch::kInt64),
    va.old_to_new = trim->old_to_new;

  CausalLM student = make_student(o, teacher_cfg ? &*teacher_cfg : nullptr, vocab, trim ? &*trim : nullptr, device);
  std::unique_ptr<Teacher> teacher;
  if (online)
    teacher = std::make_unique<Teacher>(o, device, teacher_dequantized_cache(o, device.str(), &student.config()));

  // Validation split: a fixed pseudo-random subset (at least one example when the fraction is positive).
  std::vector<std::int64_t> all(data.size());
  std::iota(all.begin(), all.end(), 0);
  std::mt19937_64 split_rng(static_cast<std::uint64_t>(o.seed) ^ 0x5eedULL);
  std::shuffle(all.begin(), all.end(), split_rng);
  const auto n_val =
      o.validation_fraction > 0
          ? std::max<std::size_t>(1, static_cast<std::size_t>(o.validation_fraction * static_cast<double>(data.size())))
          : 0;
  Trainer tr{o,
             p,
             device,
             compute,
             data,
             {all.begin() + static_cast<long>(n_val), all.end()},
             {all.begin(), all.begin() + static_cast<long>(n_val)},
             va,
             teacher.get(),
             use_topk,
             student};
  if (tr.train_idx.empty()) throw std::runtime_error(p.data + ": too few examples to hold out a validation split");
  std::sort(tr.train_idx.begin(), tr.train_idx.end());

  World& world = World::get();
  const auto params = student.named_parameters();
  {  // every rank starts from rank 0's initial weights, whatever each drew
    std::vector<torch::Tensor> values;
    for (const auto& [name, param] : params) values.push_back(param);
    collectives::broadcast(world, values, 0, "initial weights");
  }
  // Sharded AdamW state (ZeRO-1) unless the plan resolved --shard_optimizer to off; the ranks agree (any rank whose
  // plan needs sharding makes every rank shard).
  bool shard = world.distributed() && o.shard_optimizer != "off";
  if (world.distributed()) {
    std::vector<double> votes{shard ? 1.0 : 0.0};
    world.all_reduce_sum(votes, "optimizer sharding");
    shard = votes[0] > 0;
  }
  AdamW opt(params, o.weight_decay, adamw_kernel(o.adamw, device),
            shard ? partition_parameters(params, world.size()) : std::vector<int>{}, world.rank());
  std::unique_ptr<collectives::GradientReducer> reducer;
  if (world.distributed()) {
    std::vector<torch::Tensor> tensors;
    for (const auto& [name, param] : params) tensors.push_back(param);
    reducer = std::make_unique<collectives::GradientReducer>(world, tensors);
  }
  TrainState st;
  // The global generator is part of the checkpoint; seed it here so that its state does not depend on what earlier
  // stages in this process drew from it (teacher sampling does).
  torch::manual_seed(static_cast<std::uint64_t>(o.seed));
  if (!o.resume_from.empty()) {
    const auto ck = find_resume_checkpoint(o.resume_from);
    st = load_checkpoint(ck, student, opt);
    if (world.is_main()) rewind_metrics(p, st.step);
    spdlog::info("resumed from {} at step {} (epoch {}, micro-batch {})", ck.string(), st.step, st.epoch, st.cursor);
  } else if (!step_checkpoints(p.checkpoints).empty()) {
    throw std::runtime_error(p.checkpoints + " holds checkpoints of an earlier run: continue it with --resume_from " +
                             p.work + ", or remove " + p.work + " to start over");
  } else if (world.is_main()) {
    fs::remove(p.metrics);
  }
  const auto total = o.max_steps > 0 ? std::min(o.max_steps, tr.steps_per_epoch() * o.num_epochs)
                                     : tr.steps_per_epoch() * o.num_epochs;
  const auto eval_every = o.eval_every > 0 ? o.eval_every : o.checkpoint_every;
  spdlog::info("training: {} train / {} validation examples, {} steps, student {} parameters on {}{}",
               tr.train_idx.size(), tr.val_idx.size(), total, student.parameter_count(), device.str(),
               world.distributed()
                   ? " (rank " + std::to_string(world.rank()) + " of " + std::to_string(world.size()) +
                         ", data parallel, AdamW state " + (shard ? "sharded" : "whole on each rank") + ")"
                   : std::string());
  spdlog::info(
      "training speed settings: compute {} (float32 masters), AdamW {}, loss {}, packing {}, activation "
      "checkpointing {}",
      compute == torch::kBFloat16 ? "bf16" : "fp32", adamw_kernel_name(opt.kernel()),
      o.loss_chunk_tokens == 0 ? std::string("unchunked")
                               : "chunked by " +
                                     std::to_string(tr.loss_chunk_tokens(
                                         torch::empty({0}, torch::TensorOptions(compute).device(device)), online)) +
                                     " tokens" + (online ? " (the teacher's full logits)" : ""),
      tr.pack_length() > 0 ? "on"
      : o.pack_sequences   ? "off (the teacher's family takes no packed rows)"
                           : "off",
      o.activation_checkpointing ? "on" : "off");

  ProgressBar bar("train", total, "step", o.progress && world.is_main(), st.step);
  const auto t_start = std::chrono::steady_clock::now();
  std::int64_t run_tokens = 0;
  auto batches = tr.epoch_batches(st.epoch);
  while (st.step < total) {
    // One optimizer step: the next `gradient_accumulation` x ranks micro-batches of this epoch (fewer at its end);
    // rank r computes micro-batches r, r + ranks, ... The loss weights use the step's token count over all ranks,
    // so the summed gradient equals a one-process run's with the same global batch.
    if (st.cursor >= static_cast<std::int64_t>(batches.size()))
      st.epoch++, st.cursor = 0, batches = tr.epoch_batches(st.epoch);
    const bool profiling = o.profile_step == st.step + 1 && world.is_main();
    if (profiling) lal::lm::start_trace(device.is_cuda(), "--profile_step");
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Batch> micro;
    std::int64_t step_tokens = 0;
    for (std::int64_t k = 0; k < tr.micro_per_step() && st.cursor < static_cast<std::int64_t>(batches.size());
         ++k, ++st.cursor) {
      const auto& which = batches[static_cast<std::size_t>(st.cursor)];
      for (auto i : which) step_tokens += predicted_tokens(data[static_cast<std::size_t>(i)]);
      if (k % world.size() == world.rank()) micro.push_back(make_batch(data, which, va, device, tr.pack_length()));
    }
    const double lr = learning_rate(o, st.step, total);
    // The step's loss terms stay on the device until the whole step is queued: reading one (a host sync) after each
    // backward would leave the GPU idle while the host then launches the clipping and the optimizer step.
    std::vector<std::pair<double, LossParts>> terms;
    for (std::size_t k = 0; k < micro.size(); ++k) {
      const auto& b = micro[k];
      auto parts = tr.batch_loss(b);
      const double w = static_cast<double>(b.tokens) / static_cast<double>(step_tokens);
      if (reducer && k + 1 == micro.size()) reducer->arm();  // all-reduce during the step's last backward
      (parts.total * w).backward();
      parts.total = parts.total.detach(), parts.ce = parts.ce.detach();
      if (parts.kd.defined()) parts.kd = parts.kd.detach();
      terms.emplace_back(w, std::move(parts));
    }
    if (world.distributed()) {
      reducer->finish();
      if (st.step == 0 && world.is_main())
        spdlog::info("gradient all-reduce: {} of {} buckets launched while backward ran",
                     reducer->launched_during_backward(), reducer->buckets());
    }
    const auto grad_norm_t = clip_gradients(params, o.max_grad_norm);
    opt.step(lr);
    opt.zero_grad();  // before the broadcast: the gradients' memory is free for its buffers
    opt.broadcast_updates(world);
    double loss = 0, kd = 0, ce = 0;
    for (const auto& [w, parts] : terms) {
      loss += parts.total.item<double>() * w, ce += parts.ce.item<double>() * w;
      if (parts.kd.defined()) kd += parts.kd.item<double>() * w;
    }
    const double grad_norm = grad_norm_t.item<double>();
    if (world.distributed()) {
      std::vector<double> sums{loss, ce, kd};
      world.all_reduce_sum(sums, "loss sums");
      loss = sums[0], ce = sums[1], kd = sums[2];
    }
    ++st.step;
    if (profiling) {
      const auto trace = (fs::path(p.work) / ("profile-step-" + std::to_string(st.step) + ".json")).string();
      lal::lm::stop_trace(device.is_cuda(), trace);
      spdlog::info("profiler trace of this step: {} (chrome://tracing or https://ui.perfetto.dev)", trace);
    }
    st.last_train_loss = loss;
    run_tokens += step_tokens;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    json rec = {{"step", st.step},
                {"epoch", st.epoch},
                {"loss", loss},
                {"ce", ce},
                {"lr", lr},
                {"grad_norm", grad_norm},
                {"tokens", step_tokens},
                {"tokens_per_s", static_cast<double>(step_tokens) / secs}};
    if (teacher || use_topk) rec["kd"] = kd;
    if (world.is_main()) append_metrics(p, rec);
    char extra[96];
    std::snprintf(extra, sizeof extra, "loss %.4f lr %.2e %.0f tok/s", loss, lr,
                  static_cast<double>(step_tokens) / secs);
    bar.update(st.step, extra);

    const bool last = st.step == total;
    if ((st.step % eval_every == 0 || last) && !tr.val_idx.empty()) {
      auto v = tr.validate();
      v["step"] = st.step;
      if (world.is_main()) append_metrics(p, v);
      if (v["val_loss"].get<double>() < st.best_val) {
        st.best_val = v["val_loss"].get<double>(), st.best_step = st.step;
        save_checkpoint(p, "best", student, nullptr, st);
      }
    }
    if (st.step % o.checkpoint_every == 0 || last) {
      save_checkpoint(p,
                      "step-" + std::string(8 - std::min<std::size_t>(8, std::to_string(st.step).size()), '0') +
                          std::to_string(st.step),
                      student, o.save_only_model ? nullptr : &opt, st);
      if (world.is_main()) prune_checkpoints(p, o.keep_checkpoints), draw_loss_curve(p);
    }
  }
  bar.finish();
  world.barrier("end of training");  // rank 0 has written the best checkpoint that every rank reads next
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();

  // The exported model is the best validated checkpoint (the last one without a validation split).
  TrainSummary s;
  s.steps = st.step, s.train_examples = static_cast<std::int64_t>(tr.train_idx.size());
  s.val_examples = static_cast<std::int64_t>(tr.val_idx.size()), s.student_parameters = student.parameter_count();
  s.final_train_loss = st.last_train_loss, s.best_step = st.best_step, s.best_val_loss = st.best_val;
  s.seconds = seconds, s.tokens_per_second = seconds > 0 ? static_cast<double>(run_tokens) / seconds : 0;
  const fs::path best = fs::path(p.checkpoints) / "best" / "model.safetensors";
  if (st.best_step > 0 && fs::exists(best)) student.load_state(read_safetensors(best.string()), best.string());
  if (!tr.val_idx.empty()) {
    const auto v = tr.validate();
    s.val_ce = v["val_ce"], s.val_ppl = v["val_ppl"], s.best_val_loss = v["val_loss"];
    s.val_kl = v["val_kl"].is_null() ? -1.0 : v["val_kl"].get<double>();
  }
  if (!world.is_main()) return s;  // rank 0 writes the summary and the export
  draw_loss_curve(p);
  write_file_atomic(p.summary, json{{"steps", s.steps},
                                    {"train_examples", s.train_examples},
                                    {"val_examples", s.val_examples},
                                    {"student_parameters", s.student_parameters},
                                    {"final_train_loss", s.final_train_loss},
                                    {"best_step", s.best_step},
                                    {"val_loss", s.best_val_loss},
                                    {"val_ce", s.val_ce},
                                    {"val_ppl", s.val_ppl},
                                    {"val_kl", s.val_kl >= 0 ? json(s.val_kl) : json(nullptr)},
                                    {"seconds", s.seconds},
                                    {"tokens_per_second", s.tokens_per_second},
                                    {"device", device.str()}}
                                       .dump(1) +
                                   "\n");
  if (o.save_hf_format) export_model(o, p, student, trim ? &*trim : nullptr, s);
  return s;
}

}  // namespace lal::train
