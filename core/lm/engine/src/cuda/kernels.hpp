// lal::lm::cuda — fused CUDA kernels for the decoder's small per-token operations (built only when CMake finds
// the CUDA toolkit and LibTorch has CUDA; see core/lm/engine/CMakeLists.txt). Plain C++ over raw device pointers:
// neither LibTorch nor CUDA headers are needed to include this, so transformer.cpp calls these with tensors'
// data pointers and LibTorch's current stream, and they are captured in CUDA graphs like any other kernel.
//
// Every kernel rounds as the LibTorch ops it replaces do (transformer.cpp, the unfused path, is the reference):
// arithmetic in float32, each intermediate that LibTorch stores in the model dtype rounded to it at the same point.
// THREADING: launches are asynchronous on `stream`; the functions are reentrant.
// ERRORS: a launch failure throws std::runtime_error naming the kernel and CUDA's message.
#pragma once

#include <cstdint>

namespace lal::lm::cuda {

enum class ScalarType { Float32, BFloat16, Float16 };

/// out[r] = norm(residual[r] + delta[r]) * weight with RMSNorm in float32 (x * rsqrt(mean(x^2) + eps), rounded to
/// the dtype, then times weight, rounded); residual[r] is updated to residual + delta (rounded), as `h = h + delta`
/// followed by the norm. delta == nullptr: no add, residual is only read. All [rows, cols], contiguous.
void add_rms_norm(void* residual, const void* delta, void* out, const void* weight, std::int64_t rows,
                  std::int64_t cols, float eps, ScalarType type, void* stream);

/// out[r] = (x[r] - mean) * rsqrt(var + eps) * weight + bias, in float32, rounded once (torch.layer_norm).
void layer_norm(const void* x, void* out, const void* weight, const void* bias, std::int64_t rows, std::int64_t cols,
                float eps, ScalarType type, void* stream);

/// Where the heads of one token sit in a fused q/k/v row: head h of kind k at offset0 + h * stride (elements).
/// Llama/Qwen2/Phi-3 ([q heads | k heads | v heads]): q 0 + h*D, k H*D + h*D, v (H+KV)*D + h*D.
/// GPT-NeoX (per head [q_h | k_h | v_h]): q 0 + h*3D, k D + h*3D, v 2D + h*3D.
struct QkvLayout {
  std::int64_t token_stride = 0;  // elements from one token's row to the next
  std::int64_t q_offset = 0, q_stride = 0, k_offset = 0, k_stride = 0, v_offset = 0, v_stride = 0;
  int heads = 0, kv_heads = 0, head_dim = 0;
};

/// Rotate-half rotary embedding, in place, on the first `rotary_dim` channels of every q and k head of `tokens`
/// rows of `qkv`; token t is at position positions[t] (int64), angle = float(position) * inv_freq[j] (float32
/// [rotary_dim/2]); cos/sin rounded to the dtype, each product rounded, then the sum (the unfused path's order).
void rotary(void* qkv, const QkvLayout& layout, std::int64_t tokens, const std::int64_t* positions,
            const float* inv_freq, int rotary_dim, ScalarType type, void* stream);

/// out[r, i] = silu(gate_up[r, i]) * gate_up[r, I + i] (silu rounded to the dtype, then the product).
void swiglu(const void* gate_up, void* out, std::int64_t rows, std::int64_t inner, ScalarType type, void* stream);

/// One decode token per row b: its k and v heads from `qkv` ([B, token_stride]) into the caches
/// [*, KV, capacity, D] (row b at b * KV * capacity * D) at slot slots[b * slot_stride] (slot_stride 0: one slot
/// for every row).
void kv_append(const void* qkv, const QkvLayout& layout, std::int64_t batch, void* k_cache, void* v_cache,
               std::int64_t capacity, const std::int64_t* slots, std::int64_t slot_stride, ScalarType type,
               void* stream);

/// rotary() and kv_append() of one decode token per row in one kernel: q rotated in place in `qkv`, k rotated on
/// its way into the cache (the rotated k is not written back to `qkv`), v copied. Rounds exactly as rotary()
/// followed by kv_append() (the caches and q hold the same bits). Row b is at position positions[b].
void rotary_kv_append(void* qkv, const QkvLayout& layout, std::int64_t batch, const std::int64_t* positions,
                      const float* inv_freq, int rotary_dim, void* k_cache, void* v_cache, std::int64_t capacity,
                      const std::int64_t* slots, std::int64_t slot_stride, ScalarType type, void* stream);

/// How decode attention runs. The defaults are the fast paths measured on an H200 (docs/benchmarks.md); the engine
/// reads its choice once from the environment (attention_choice_from_env), tests set it directly.
struct AttentionChoice {
  bool tiles = true;        ///< the tile kernel where it fits the head size (false: the warp kernel always)
  int heads_per_block = 0;  ///< the tile kernel's query heads per block: 1, 2, 4 or 8; 0 = chosen by batch
  int splits = 0;           ///< key splits (decode_attention_splits): 1 to 64; 0 = chosen by batch and capacity
};

/// LAL_CUDA_ATTENTION=tile|warp, LAL_CUDA_ATTENTION_HEADS=1|2|4|8 and LAL_CUDA_ATTENTION_SPLITS=1..64 (unset or
/// empty: the default), to measure one setting against another. Throws std::invalid_argument naming the variable and
/// its value for anything else.
AttentionChoice attention_choice_from_env();

/// Decode attention, one query token per row, grouped-query aware (each k/v head read once for its H/KV query
/// heads): row b attends to cache slots j <= slots[b * slot_stride] with valid[b * capacity + j] (bool; nullptr =
/// all), softmax in float32, split over the keys into `splits` parts (combined exactly by a second kernel) so that
/// long contexts fill the GPU. out [B, H * D] in the dtype. `scratch` holds splits * B * H * (D + 2) floats when
/// splits > 1; a row's keys go to as few splits as hold >= 32 keys each (splits past them do nothing). Two kernels:
/// "tile" (16-byte loads, a tile's scores in shared memory; used where choice.tiles and head_dim * sizeof(T) is a
/// multiple of 16 of at most 512 bytes and the rows are 16-byte aligned) and "warp" (any head_dim <= 256). Returns
/// false (launching nothing) for shapes it does not handle (head_dim > 256, H/KV > 8, splits > 64); the caller then
/// uses the unfused path.
bool decode_attention(const void* qkv, const QkvLayout& layout, std::int64_t batch, const void* k_cache,
                      const void* v_cache, std::int64_t capacity, const std::int64_t* slots, std::int64_t slot_stride,
                      const bool* valid, float scale, void* out, int splits, float* scratch,
                      const AttentionChoice& choice, ScalarType type, void* stream);

/// Matrix times a few vectors for decode steps (cuBLAS's GEMM at 1-4 rows reads the weights below the copy
/// bandwidth): out[b, n] = sum_j x[b, j] * w[n, j] (+ bias[n]) for b < rows, in float32, rounded once to the dtype
/// (as the GEMM's output). x [rows, k] and w [n, k] contiguous, 16-byte aligned, k a multiple of 16 bytes;
/// `float_out`: out is float32 holding the dtype-rounded values (the lm head's `linear(...).to(float32)`).
/// Returns false (launching nothing) when rows > kGemvMaxRows or the layout does not fit; the caller then uses
/// the GEMM.
/// Two weight rows per warp, 4 16-byte loads of each in flight per lane.
constexpr std::int64_t kGemvMaxRows = 4;
bool gemv(const void* x, const void* w, const void* bias, void* out, bool float_out, std::int64_t rows, std::int64_t n,
          std::int64_t k, ScalarType type, void* stream);

/// The gated MLP's input projection and SwiGLU in one kernel: w is the fused [gate | up] matrix [2 * inner, k];
/// out[b, i] = silu(g) * u with g, u the two rows' outputs (+ bias) rounded to the dtype, silu rounded, then the
/// product (as linear() followed by swiglu()). Same conditions and return value as gemv().
bool gemv_swiglu(const void* x, const void* w, const void* bias, void* out, std::int64_t rows, std::int64_t inner,
                 std::int64_t k, ScalarType type, void* stream);

/// The raw distribution of float32 logits [rows, vocab] (contiguous) in two kernels: columns >= usable are set to
/// -inf in place first; then per row the log normaliser log_z = max + log(sum exp(x - max)), the entropy
/// -sum p log p (nats), the first argmax of logits + suppress (suppress float32, row r at r * suppress_stride, 0:
/// one row for all; nullptr: none; NaN counts as the largest, as torch.argmax) and its log-probability
/// logits[argmax] - log_z. `scratch` holds token_stats_scratch(rows, vocab) floats. rows <= 65535, vocab < 2^31
/// (std::invalid_argument otherwise).
void token_stats(float* logits, std::int64_t rows, std::int64_t vocab, std::int64_t usable, const float* suppress,
                 std::int64_t suppress_stride, float* log_z, float* entropy, std::int64_t* argmax, float* logprob,
                 float* scratch, void* stream);
std::int64_t token_stats_scratch(std::int64_t rows, std::int64_t vocab);

/// The sampler's Gumbel-max choice (sampling.cpp: argmax over i of double(scores[r, i]) - log(-log(u)); the first
/// index on ties, NaN the largest) in two kernels instead of LibTorch's ~20 passes over [rows, vocab] in int64 and
/// float64: the same float64 operations, so the same ids. u is the counter noise: noise_per_row, that of
/// counter_uniform_rows() at seed[r], column[r] (int64 [rows]); else that of counter_uniform() at seed[0], column[0]
/// over the whole [rows, vocab]. scores float32 [rows, vocab] contiguous. ids[r] is written for rows with greedy[r]
/// false (greedy nullptr: every row). `scratch` holds gumbel_scratch(rows, vocab) doubles. rows <= 65535,
/// vocab < 2^31 (std::invalid_argument otherwise).
void gumbel_choose(const float* scores, std::int64_t rows, std::int64_t vocab, const std::int64_t* seed,
                   const std::int64_t* column, bool noise_per_row, const bool* greedy, std::int64_t* ids,
                   double* scratch, void* stream);
std::int64_t gumbel_scratch(std::int64_t rows, std::int64_t vocab);

/// How many key splits decode_attention should use for this batch and capacity: choice.splits when set, else ~2
/// blocks per multiprocessor for each (row, kv head), at most one per 32 slots of capacity, at most 64.
int decode_attention_splits(std::int64_t batch, int kv_heads, std::int64_t capacity,
                            const AttentionChoice& choice = {});

// ---- training (the backward passes of the fused forward kernels, and the output layer's loss) ----------------------
// Used by the trainable decoder in grad mode (blocks.cpp: autograd functions around them) and by the trainer's
// chunked loss (lal/lm/training_kernels.hpp); the LibTorch ops are the reference (CPU, and without nvcc).

/// Backward of out = norm(x) * weight (add_rms_norm without delta): n = x * r with r = rsqrt(mean(x^2) + eps);
/// grad_x = r * (dn - n * mean(dn * n)) with dn = grad_out * weight, in float32, rounded once (one warp per row;
/// r of each row into rstd [rows]); the weight's gradient sum over rows of grad_out * round(n) as float32 partial
/// sums over chunks of rows: grad_weight_partial [rms_norm_backward_blocks(rows), cols] (summed by the caller).
void rms_norm_backward(const void* x, const void* weight, const void* grad_out, void* grad_x, float* rstd,
                       float* grad_weight_partial, std::int64_t rows, std::int64_t cols, float eps, ScalarType type,
                       void* stream);
int rms_norm_backward_blocks(std::int64_t rows);

/// Backward of swiglu(): grad_gate_up [rows, 2 * inner] from gate_up and grad_out [rows, inner]:
/// d gate = grad_out * up * silu'(gate), d up = grad_out * round(silu(gate)), in float32, rounded once.
void swiglu_backward(const void* gate_up, const void* grad_out, void* grad_gate_up, std::int64_t rows,
                     std::int64_t inner, ScalarType type, void* stream);

/// Per row of logits [rows, cols] (contiguous): max, log sum exp(x - max) and log sum exp((x - max) * inv_temperature),
/// float32 [rows] each, in one read of the row.
void logit_row_stats(const void* logits, std::int64_t rows, std::int64_t cols, float inv_temperature, float* row_max,
                     float* log_sum, float* log_sum_t, ScalarType type, void* stream);

/// In place: logits[r, v] = ce_coef * exp(x - max - log_sum) + kd_coef[r] * exp((x - max) * inv_temperature -
/// log_sum_t) (kd_coef nullptr: 0), computed in float32 and rounded once: the dense part of the loss's gradient
/// with respect to the logits (the caller overwrites the few target / top-k entries).
void logit_softmax_gradient(void* logits, std::int64_t rows, std::int64_t cols, const float* row_max,
                            const float* log_sum, const float* log_sum_t, float inv_temperature, float ce_coef,
                            const float* kd_coef, ScalarType type, void* stream);

/// Rotate-half rotary embedding for training, out of place, with grouped-query attention's expansion. Forward
/// (backward false): row_data [tokens, (H + 2 KV) * D] is a fused projection output [q heads | k heads | v heads];
/// q, k, v [tokens, H * D] receive the q heads and the k heads rotated on their first `rotary_dim` channels by the
/// tables cos and signed_sin ([tokens, rotary_dim] in the dtype; signed_sin = [-sin | sin]), rounded as the LibTorch
/// ops do (each product, then the sum), and the v heads copied, each k/v head repeated for the H / KV query heads of
/// its group. Backward: q/k/v hold their gradients; row_data receives the row's gradient (a group's gradients
/// summed, the transposed rotation; float32, rounded once). H % KV == 0 (3 H <= 65 535), D even and <= 2048,
/// rotary_dim even and <= D (std::invalid_argument otherwise).
void rotary_train(void* row_data, void* q, void* k, void* v, std::int64_t tokens, int heads, int kv_heads, int head_dim,
                  int rotary_dim, const void* cos, const void* signed_sin, bool backward, ScalarType type,
                  void* stream);

}  // namespace lal::lm::cuda
