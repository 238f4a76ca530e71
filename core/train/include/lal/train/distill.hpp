// lal::train — `lal distill` / `lal train` as stages over one work directory. Torch-free header.
//
// Layout (run = <output_dir>/<hf_model_name>):
//   <run>-work/questions.jsonl      (a) the prompts (generated from templates when no --questions file exists)
//   <run>-work/data.jsonl           (b) teacher answers (prompt ids, completion ids, text), appended per batch
//                                       — or, for corpus training, the tokenized corpus
//   <run>-work/topk.jsonl           (b') the teacher's top-k log-probabilities per answer position (--store_topk)
//   <run>-work/vocab_map.json       kept token ids when --trim_vocab
//   <run>-work/checkpoints/step-N/  (c) model + optimizer + trainer state, written to a temp dir and renamed
//   <run>-work/checkpoints/best/    the checkpoint with the lowest validation loss
//   <run>-work/metrics.jsonl, loss.svg, options.yaml, summary.json
//   <run>/                          (d) the Hugging Face export (config.json, model.safetensors, tokenizer, card)
// Every stage can be killed at any point and re-run: (a) and (b) continue where their files end (a torn last line
// is dropped); (c) continues from `--resume_from` (the work dir or one checkpoint) and then equals an
// uninterrupted run; (d) writes to a temp dir and renames.
// ERRORS: std::runtime_error / OptionError naming the file, key or option; the CLI turns them into exit code 1/2.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lal/lm/model_config.hpp"
#include "lal/train/options.hpp"

namespace lal::train {

struct RunPaths {
  std::string work, questions, data, topk, vocab_map, checkpoints, metrics, loss_svg, options, summary, export_dir;
  static RunPaths of(const DistillOptions& o);
};

struct TrainSummary {
  std::int64_t steps = 0, train_examples = 0, val_examples = 0, student_parameters = 0;
  double final_train_loss = 0, best_val_loss = 0, val_ce = 0, val_ppl = 0, val_kl = -1;
  std::int64_t best_step = -1;
  double seconds = 0, tokens_per_second = 0;
};

/// All stages in order; returns the process exit code (0). With dry_run, prints the plan only.
int run_distill(const DistillOptions& o);
/// The plan (stages, paths, architectures, step counts, memory estimate) as text.
/// `fits`, when given, receives the plan's verdict (the estimate within the devices' memory).
std::string describe_plan(const DistillOptions& o, bool* fits = nullptr);

// The stages, individually (run_distill calls them in this order).
void stage_questions(const DistillOptions& o, const RunPaths& p);
void stage_teacher_data(const DistillOptions& o, const RunPaths& p);
void stage_corpus_data(const DistillOptions& o, const RunPaths& p);
void stage_teacher_topk(const DistillOptions& o, const RunPaths& p);              // LibTorch; all ranks call it
TrainSummary stage_train_and_export(const DistillOptions& o, const RunPaths& p);  // LibTorch

/// What the run needs in memory (bytes); see estimate_memory().
struct MemoryEstimate {
  double teacher = 0, student = 0, activations = 0, logits = 0;
  double train_device = 0;         ///< peak on one device while training
  double generation_device = 0;    ///< peak on one device while the teacher generates
  double teacher_layer_dense = 0;  ///< one teacher layer's linear weights, dense in the compute dtype
  bool teacher_online = false;     ///< the teacher runs in every training step (its logits are not stored)
  double peak_device() const;
  bool fits(std::int64_t capacity) const;  ///< with 5 % headroom
};
MemoryEstimate estimate_memory(const DistillOptions& o, const lal::lm::ModelConfig* teacher,
                               const lal::lm::ModelConfig& student, const std::string& device, const std::string& quant,
                               int ranks);
/// What the run writes under --output_dir at its peak (bytes): step checkpoints (float32 weights + AdamW moments),
/// --keep_checkpoints + 1 of them at once while the oldest is pruned (fewer when the run makes fewer), the best
/// checkpoint (float32 weights, with a validation split) and the export. `steps`: the planned optimizer steps, 0 when
/// unknown (corpus training before tokenizing).
struct DiskEstimate {
  double step_checkpoint = 0, step_checkpoints_at_once = 0, best = 0, export_bytes = 0;
  double total() const { return step_checkpoint * step_checkpoints_at_once + best + export_bytes; }
  bool fits(std::int64_t available) const;  ///< with 5 % headroom
};
DiskEstimate estimate_disk(const DistillOptions& o, const lal::lm::ModelConfig& student, std::int64_t steps);
/// Changes to the options that would make the run fit `capacity` bytes per device, each with its estimate.
std::vector<std::string> fitting_alternatives(const DistillOptions& o, const lal::lm::ModelConfig* teacher,
                                              const std::string& device, const std::string& quant, int ranks,
                                              std::int64_t capacity);
/// --teacher_logits auto without --store_topk: the teacher's logits online (a teacher forward in every training step)
/// when the run fits `capacity` bytes per device that way; else, when that fits, the teacher's top-kAutoStoreTopk
/// log-probabilities stored while it generates (no teacher while training: store_topk set); else `o` unchanged.
inline constexpr std::int64_t kAutoStoreTopk = 64;
DistillOptions resolve_teacher_logits(const DistillOptions& o, const lal::lm::ModelConfig& teacher,
                                      const lal::lm::ModelConfig& student, const std::string& device,
                                      const std::string& quant, int ranks, std::int64_t capacity);
/// --shard_optimizer auto on more than one rank: "off" (every rank keeps the whole AdamW state: no all-gather of the
/// weights after each step) when the run fits `capacity` bytes per device that way, else "on" (ZeRO-1); otherwise
/// `o` unchanged.
DistillOptions resolve_optimizer_sharding(const DistillOptions& o, const lal::lm::ModelConfig* teacher,
                                          const lal::lm::ModelConfig& student, const std::string& device,
                                          const std::string& quant, int ranks, std::int64_t capacity);
/// The same for this run's teacher, student (--student_config resolved), devices and ranks (torchrun's environment).
DistillOptions resolve_optimizer_sharding(const DistillOptions& o);
/// The largest of half-teacher, qwen2.5-1.5b, qwen2.5-0.5b, demo, tiny (none over half the teacher) whose run fits
/// `capacity` bytes per device (with resolve_teacher_logits' choice); the smallest when none does (the plan then says
/// it does not fit).
std::string choose_student(const DistillOptions& o, const lal::lm::ModelConfig& teacher, const std::string& device,
                           const std::string& quant, int ranks, std::int64_t capacity);
/// --student_config as given, or `auto` resolved with choose_student() for the devices of this run.
std::string resolve_student(const DistillOptions& o);

/// The memory one rank may use on `device`: the GPU's total (capped by --max_gpu_memory), or the host's available
/// memory for "cpu". LibTorch.
struct DeviceCapacity {
  std::int64_t bytes = 0;
  std::string what;  ///< "cuda:0 (NVIDIA H200)", "cpu (MemAvailable)"
};
DeviceCapacity device_capacity(const DistillOptions& o, const std::string& device);
/// Device bytes a quantized teacher may spend on keeping layers dequantized (lal::lm::WeightOptions::
/// dequantized_cache_bytes) beside a stage that needs `need` bytes: the device's capacity (--max_gpu_memory
/// honoured) less `need` and a margin of 10 % (at least 4 GiB). 0 on the CPU, without quantization, with
/// --cpu_offload.
std::int64_t spare_for_dequantized(const DistillOptions& o, const std::string& device, double need);
/// spare_for_dequantized() beside the plan's estimate: of the teacher's generation (and scoring) when `student` is
/// null, else of the training with that student (online teacher).
std::int64_t teacher_dequantized_cache(const DistillOptions& o, const std::string& device,
                                       const lal::lm::ModelConfig* student);
/// Hands the memory LibTorch's CUDA caching allocator keeps for reuse back to the driver (between stages: what the
/// teacher's generation held, its KV caches and dequantized layers, is not left in blocks the training may not fit
/// into). No-op on the CPU.
void release_cached_device_memory(const std::string& device);
/// Caps LibTorch's CUDA caching allocator at --max_gpu_memory on `device` (no-op on CPU or without the option).
void apply_gpu_memory_cap(const DistillOptions& o, const std::string& device);

/// Checks the training-speed options against this LibTorch on `device` (--adamw fused where it has no fused kernel):
/// throws std::runtime_error naming the option, before any stage runs (also for --dry_run). LibTorch.
void check_speed_options(const DistillOptions& o, const std::string& device);

/// "cuda" when a GPU is visible and not --use_cpu_only, else "cpu" (or --device when given).
std::string resolve_device(const DistillOptions& o);
/// --quantize auto resolved for `device`: int4 on CUDA, none on CPU.
std::string resolve_quantize(const DistillOptions& o, const std::string& device);

}  // namespace lal::train
