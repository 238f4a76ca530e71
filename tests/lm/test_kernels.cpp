// The fused CUDA kernels against the LibTorch path they replace (the reference), on a GPU: every tiny model family
// (Llama/Qwen2 GQA, Phi-3 partial rotary, GPT-NeoX LayerNorm + partial rotary, head dims 16 and 24) in float32
// (logits within 1e-4, greedy ids equal in every decode mode) and bfloat16 (relative logit error <= 1e-2), and
// both decode-attention kernels alone (warp and tile) on real and tiny head shapes (Qwen2.5-7B's 28
// heads over 4 of 128, Qwen2.5-0.5B, Phi-3-mini's head of 96, ...) over long, padded, per-row-length caches against a
// float64 computation.
// Without CUDA or without the kernels built, the binary prints why and exits 77 (ctest: skipped).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <utility>

#include "lal/lm/engine.hpp"
#include "lal/lm/sampling.hpp"
#include "lal/lm/transformer.hpp"
#if LAL_LM_HAVE_KERNELS
#include "../../core/lm/engine/src/cuda/kernels.hpp"
#endif

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

using namespace lal::lm;

namespace {

const char* kModels[] = {"qwen2_tied_gqa",      "llama_llama3_headdim", "llama_bias_linear_sharded",
                         "phi3_partial_rotary", "neox_parallel",        "neox_sequential"};

std::string model_dir(const std::string& name) {
  const char* root = std::getenv("LAL_LM_TINY_MODELS");
  REQUIRE_MESSAGE(root, "set LAL_LM_TINY_MODELS (ctest does; the lm.make_tiny_models test writes them)");
  return std::string(root) + "/" + name;
}

const torch::Device kCuda(torch::kCUDA, 0);

double relative_error(const torch::Tensor& out, const torch::Tensor& ref) {
  auto o = out.to(torch::kCPU, torch::kFloat64), r = ref.to(torch::kCPU, torch::kFloat64);
  return ((o - r).norm() / r.norm()).item<double>();
}
double max_abs(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kCPU, torch::kFloat64) - b.to(torch::kCPU, torch::kFloat64)).abs().max().item<double>();
}

std::unique_ptr<Engine> engine_for(const std::string& name, const std::string& kernels, const std::string& mode,
                                   const std::string& dtype) {
  ModelOptions o;
  o.model_path = model_dir(name);
  o.device = "cuda";
  o.dtype = dtype;
  o.decode_mode = mode;
  o.kernels = kernels;
  return Engine::load(o);
}

/// Random prompts of different lengths (the batch is left-padded, so the validity mask matters).
std::vector<std::vector<std::int32_t>> prompts_for(std::int64_t vocab) {
  std::vector<std::vector<std::int32_t>> out;
  std::uint32_t x = 12345;
  for (int len : {7, 3, 12}) {
    std::vector<std::int32_t> p;
    for (int i = 0; i < len; ++i) {
      x = x * 1664525u + 1013904223u;
      p.push_back(static_cast<std::int32_t>((x >> 8) % static_cast<std::uint32_t>(vocab)));
    }
    out.push_back(p);
  }
  return out;
}

}  // namespace

TEST_CASE("fused kernels: float32 prefill and decode logits equal the LibTorch path within 1e-4") {
  for (const std::string name : kModels) {
    CAPTURE(name);
    auto fused = Transformer::load(model_dir(name), kCuda, torch::kFloat32);
    auto plain = Transformer::load(model_dir(name), kCuda, torch::kFloat32);
    fused->set_fused_kernels(true);
    REQUIRE(fused->fused_kernels());
    const auto& c = fused->config();
    torch::manual_seed(7);
    const std::int64_t B = 2, T = 9, cap = 16;
    auto ids = torch::randint(c.vocab_size, {B, T}, torch::kLong).to(kCuda);
    auto pos = torch::arange(T, torch::kLong).view({1, T}).expand({B, T}).contiguous().to(kCuda);
    auto cache_f = KVCache::allocate(c, B, cap, torch::kFloat32, kCuda);
    auto cache_p = KVCache::allocate(c, B, cap, torch::kFloat32, kCuda);
    auto lf = fused->forward(ids, pos, {}, &cache_f, false);
    auto lp = plain->forward(ids, pos, {}, &cache_p, false);
    CHECK(max_abs(lf, lp) <= 1e-4);
    // One static decode step with one slot per row (rows at different lengths: row 1 one token shorter).
    auto slot = torch::tensor(std::vector<std::int64_t>{T, T - 1}, torch::kLong).to(kCuda);
    auto valid = torch::zeros({B, cap}, torch::kBool);
    valid.index_put_({0, torch::indexing::Slice(0, T + 1)}, true);
    valid.index_put_({1, torch::indexing::Slice(0, T)}, true);
    valid = valid.to(kCuda);
    auto next = torch::randint(c.vocab_size, {B, 1}, torch::kLong).to(kCuda);
    auto next_pos = slot.view({B, 1}).clone();
    auto df = fused->decode_static(next, next_pos, slot, valid, cache_f);
    auto dp = plain->decode_static(next, next_pos, slot, valid, cache_p);
    CHECK(max_abs(df, dp) <= 1e-4);
    for (std::size_t l = 0; l < cache_f.keys.size(); ++l) {
      CHECK(max_abs(cache_f.keys[l], cache_p.keys[l]) <= 1e-5);
      CHECK(max_abs(cache_f.values[l], cache_p.values[l]) <= 1e-5);
    }
  }
}

TEST_CASE("fused kernels: bfloat16 logits within 1e-2 (relative) of the LibTorch path, no further from float32") {
  for (const std::string name : kModels) {
    CAPTURE(name);
    auto fused = Transformer::load(model_dir(name), kCuda, torch::kBFloat16);
    auto plain = Transformer::load(model_dir(name), kCuda, torch::kBFloat16);
    auto exact = Transformer::load(model_dir(name), kCuda, torch::kFloat32);
    fused->set_fused_kernels(true);
    const auto& c = fused->config();
    torch::manual_seed(11);
    const std::int64_t B = 3, T = 20, cap = 64;
    auto ids = torch::randint(c.vocab_size, {B, T}, torch::kLong).to(kCuda);
    auto pos = torch::arange(T, torch::kLong).view({1, T}).expand({B, T}).contiguous().to(kCuda);
    auto cache_f = KVCache::allocate(c, B, cap, torch::kBFloat16, kCuda);
    auto cache_p = KVCache::allocate(c, B, cap, torch::kBFloat16, kCuda);
    auto cache_e = KVCache::allocate(c, B, cap, torch::kFloat32, kCuda);
    auto lf = fused->forward(ids, pos, {}, &cache_f, false);
    auto lp = plain->forward(ids, pos, {}, &cache_p, false);
    exact->forward(ids, pos, {}, &cache_e, false);
    const double prefill_error = relative_error(lf, lp);
    CAPTURE(prefill_error);
    CHECK(prefill_error <= 1e-2);
    auto valid = torch::zeros({B, cap}, torch::kBool);
    valid.narrow(1, 0, T + 1).fill_(true);
    valid = valid.to(kCuda);
    auto slot = torch::full({1}, T, torch::TensorOptions().dtype(torch::kLong).device(kCuda));
    auto next = torch::randint(c.vocab_size, {B, 1}, torch::kLong).to(kCuda);
    auto next_pos = torch::full({B, 1}, T, torch::TensorOptions().dtype(torch::kLong).device(kCuda));
    auto df = fused->decode_static(next, next_pos, slot, valid, cache_f);
    auto dp = plain->decode_static(next, next_pos, slot, valid, cache_p);
    auto de = exact->decode_static(next, next_pos, slot, valid, cache_e);
    // Two bf16 computations differ by bf16 rounding; the fused one (float32 softmax and P.V) must be no further
    // from the float32 result than the LibTorch one.
    const double decode_error = relative_error(df, dp);
    const double fused_vs_fp32 = relative_error(df, de), torch_vs_fp32 = relative_error(dp, de);
    CAPTURE(decode_error);
    CAPTURE(fused_vs_fp32);
    CAPTURE(torch_vs_fp32);
    MESSAGE(name << ": bf16 decode logits, fused vs LibTorch " << decode_error << ", vs float32: fused "
                 << fused_vs_fp32 << ", LibTorch " << torch_vs_fp32);
    CHECK(decode_error <= 2e-2);
    CHECK(fused_vs_fp32 <= std::max(1e-2, 1.25 * torch_vs_fp32));
  }
}

TEST_CASE("fused kernels: float32 greedy ids equal the LibTorch path in every decode mode") {
  for (const std::string name : kModels) {
    CAPTURE(name);
    GenerateOptions opts;
    opts.sampling.greedy = true;
    opts.max_new_tokens = 24;
    opts.stop_at_eos = false;
    auto reference = engine_for(name, "torch", "dynamic", "float32");
    const auto batch = prompts_for(reference->usable_vocab());
    // Three rows (cuBLAS for the matrices) and one (the GEMV kernels, the lm head's float32 logits included).
    for (const auto& prompts : {batch, decltype(batch){batch[0]}}) {
      CAPTURE(prompts.size());
      auto want = reference->generate(prompts, opts);
      for (const char* mode : {"dynamic", "static", "graph"}) {
        CAPTURE(mode);
        auto engine = engine_for(name, "fused", mode, "float32");
        REQUIRE(engine->fused_kernels());
        for (int run = 0; run < 2; ++run) {
          auto got = engine->generate(prompts, opts);
          for (std::size_t p = 0; p < prompts.size(); ++p) {
            CAPTURE(p);
            CHECK(got[p].ids == want[p].ids);
          }
        }
      }
    }
  }
}

#if LAL_LM_HAVE_KERNELS
TEST_CASE("the trainable decoder on CUDA: fused kernels without gradients, LibTorch ops with them, same logits") {
  for (const std::string name : kModels) {
    CAPTURE(name);
    ParameterOptions trainable;
    trainable.trainable = true;
    auto model = Transformer::load(model_dir(name), kCuda, torch::kFloat32, {}, trainable);
    model->set_fused_kernels(true);
    const auto& c = model->config();
    torch::manual_seed(5);
    auto ids = torch::randint(c.vocab_size, {2, 12}, torch::kLong).to(kCuda);
    for (auto compute : {torch::kFloat32, torch::kBFloat16}) {
      const std::string dtype = c10::toString(compute);
      CAPTURE(dtype);
      auto with_grad = model->logits(ids, compute);  // autograd: the LibTorch ops
      REQUIRE(with_grad.requires_grad());
      torch::Tensor fused;
      {
        torch::NoGradGuard no_grad;
        fused = model->logits(ids, compute);  // no gradient: the fused kernels
      }
      if (compute == torch::kFloat32)
        CHECK(max_abs(fused, with_grad.detach()) <= 1e-4);
      else
        CHECK(relative_error(fused, with_grad.detach()) <= 1e-2);
      with_grad.pow(2).mean().backward();
      for (const auto& [tensor, param] : model->named_parameters()) {
        CAPTURE(tensor);
        REQUIRE(param.grad().defined());
        CHECK(param.grad().isfinite().all().item<bool>());
      }
    }
  }
}

namespace {

struct AttentionShape {
  int H, KV, D;
};

/// Both decode-attention kernels (AttentionChoice::tiles) on one shape and dtype, over long, padded caches of
/// different lengths per row, with 1, the engine's and 64 splits, the tile kernel with 1 to all query heads per block:
/// against a float64 computation over the cache.
void check_decode_attention(const AttentionShape sh, torch::ScalarType dtype) {
  const int H = sh.H, KV = sh.KV, D = sh.D;
  const std::int64_t B = 3, cap = 3000;
  torch::manual_seed(3);
  auto opts = torch::TensorOptions().dtype(dtype).device(kCuda);
  auto qkv = torch::randn({B, 1, (H + 2 * KV) * D}, opts);
  auto keys = torch::randn({B, KV, cap, D}, opts);
  auto values = torch::randn({B, KV, cap, D}, opts);
  auto slots = torch::tensor(std::vector<std::int64_t>{2999, 17, 1500}, torch::kLong).to(kCuda);
  auto valid = torch::rand({B, cap}) > 0.2;  // padding and holes
  valid.index_put_({torch::indexing::Slice(), 0}, true);
  valid = valid.to(kCuda);
  cuda::QkvLayout L;
  L.heads = H, L.kv_heads = KV, L.head_dim = D, L.token_stride = (H + 2 * KV) * D;
  L.q_offset = 0, L.k_offset = H * D, L.v_offset = (H + KV) * D, L.q_stride = L.k_stride = L.v_stride = D;
  auto type = dtype == torch::kFloat32 ? cuda::ScalarType::Float32 : cuda::ScalarType::BFloat16;
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  cuda::kv_append(qkv.data_ptr(), L, B, keys.data_ptr(), values.data_ptr(), cap, slots.data_ptr<std::int64_t>(), 1,
                  type, stream);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // float64 reference over the cache, after the append.
  auto k64 = keys.to(torch::kCPU, torch::kFloat64), v64 = values.to(torch::kCPU, torch::kFloat64);
  auto q64 = qkv.to(torch::kCPU, torch::kFloat64).view({B, H + 2 * KV, D});
  auto mask = valid.cpu();
  auto slot_cpu = slots.cpu();
  auto ref = torch::empty({B, H, D}, torch::kFloat64);
  for (std::int64_t b = 0; b < B; ++b) {
    const auto len = slot_cpu[b].item<std::int64_t>() + 1;
    auto keep = mask[b].narrow(0, 0, len);
    for (int h = 0; h < H; ++h) {
      auto k = k64[b][h / (H / KV)].narrow(0, 0, len), v = v64[b][h / (H / KV)].narrow(0, 0, len);
      auto s = torch::matmul(k, q64[b][h]) * static_cast<double>(scale);
      s = s.masked_fill(keep.logical_not(), -INFINITY);
      ref[b][h] = torch::matmul(torch::softmax(s, 0), v);
    }
  }
  // The warp kernel; the tile kernel with the engine's query heads per block, then 1, 2 and 4 of them.
  cuda::AttentionChoice warp, tile, tile1, tile2, tile4;
  warp.tiles = false;
  tile1.heads_per_block = 1, tile2.heads_per_block = 2, tile4.heads_per_block = 4;
  const std::pair<const char*, cuda::AttentionChoice> settings[] = {
      {"warp", warp}, {"tile", tile}, {"tile, 1 head a block", tile1}, {"tile, 2", tile2}, {"tile, 4", tile4}};
  for (const auto& [name, choice] : settings)
    for (int splits : {1, cuda::decode_attention_splits(B, KV, cap), 64}) {
      CAPTURE(name);
      CAPTURE(splits);
      auto out = torch::full({B, H * D}, std::nan(""), opts);  // poisoned: every element must be written
      auto scratch = torch::empty({splits * B * H * (D + 2)}, opts.dtype(torch::kFloat32));
      REQUIRE(cuda::decode_attention(qkv.data_ptr(), L, B, keys.data_ptr(), values.data_ptr(), cap,
                                     slots.data_ptr<std::int64_t>(), 1, valid.data_ptr<bool>(), scale, out.data_ptr(),
                                     splits, scratch.data_ptr<float>(), choice, type, stream));
      auto got = out.to(torch::kCPU, torch::kFloat64).view({B, H, D});
      CHECK(torch::isfinite(got).all().item<bool>());
      const double err = relative_error(got, ref);
      CAPTURE(err);
      CHECK(err <= (dtype == torch::kFloat32 ? 1e-5 : 1e-2));
    }
}

}  // namespace

TEST_CASE("decode attention kernels: real and tiny head shapes over long, padded caches, vs float64") {
  // Qwen2.5-7B (28 heads over 4, head 128), Qwen2.5-0.5B (14 over 2, head 64), Phi-3-mini (32 over 32, head 96:
  // the tile kernel's 12 vectors on 16 lanes), tiny models' heads of 24 and 16, and 8 heads over 1 of 256 (float32:
  // past the tile kernel's 32 vectors, the warp kernel runs for both settings).
  for (const AttentionShape sh : {AttentionShape{28, 4, 128}, AttentionShape{14, 2, 64}, AttentionShape{32, 32, 96},
                                  AttentionShape{6, 2, 24}, AttentionShape{4, 4, 16}, AttentionShape{8, 1, 256}})
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      CAPTURE(sh.H);
      CAPTURE(sh.KV);
      CAPTURE(sh.D);
      CAPTURE(dtype);
      check_decode_attention(sh, dtype);
    }
}

TEST_CASE("decode attention: LAL_CUDA_ATTENTION(_HEADS, _SPLITS) values it does not know are refused by name") {
  const std::pair<const char*, const char*> bad[] = {
      {"LAL_CUDA_ATTENTION", "fast"},     {"LAL_CUDA_ATTENTION_HEADS", "fast"}, {"LAL_CUDA_ATTENTION_HEADS", "3"},
      {"LAL_CUDA_ATTENTION_SPLITS", "0"}, {"LAL_CUDA_ATTENTION_SPLITS", "65"},  {"LAL_CUDA_ATTENTION_SPLITS", "8x"}};
  for (const auto& [variable, value] : bad) {
    CAPTURE(variable);
    CAPTURE(value);
    ::setenv(variable, value, 1);
    std::string message;
    try {
      cuda::attention_choice_from_env();
    } catch (const std::invalid_argument& e) {
      message = e.what();
    }
    ::unsetenv(variable);
    CHECK(message.find(std::string(variable) + "=" + value) != std::string::npos);
  }
  ::setenv("LAL_CUDA_ATTENTION", "warp", 1);
  ::setenv("LAL_CUDA_ATTENTION_HEADS", "2", 1);
  ::setenv("LAL_CUDA_ATTENTION_SPLITS", "5", 1);
  const auto choice = cuda::attention_choice_from_env();
  ::unsetenv("LAL_CUDA_ATTENTION");
  ::unsetenv("LAL_CUDA_ATTENTION_HEADS");
  ::unsetenv("LAL_CUDA_ATTENTION_SPLITS");
  CHECK(!choice.tiles);
  CHECK(choice.heads_per_block == 2);
  CHECK(cuda::decode_attention_splits(1, 4, 4096, choice) == 5);
  const auto unset = cuda::attention_choice_from_env();
  CHECK(unset.tiles);
  CHECK(unset.heads_per_block == 0);
  CHECK(unset.splits == 0);
}

namespace {

cuda::ScalarType kernel_type_of(torch::ScalarType t) {
  return t == torch::kFloat32    ? cuda::ScalarType::Float32
         : t == torch::kBFloat16 ? cuda::ScalarType::BFloat16
                                 : cuda::ScalarType::Float16;
}
void* current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
double tolerance_of(torch::ScalarType t) { return t == torch::kFloat32 ? 1e-5 : t == torch::kBFloat16 ? 1e-2 : 2e-3; }

}  // namespace

TEST_CASE("rotary + K/V append in one kernel: the same bits as rotary() then kv_append()") {
  struct Shape {
    int H, KV, D, rot;
    bool per_head;
  };
  for (const Shape sh : {Shape{28, 4, 128, 128, false}, Shape{6, 2, 24, 12, false}, Shape{4, 4, 16, 4, true}}) {
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      CAPTURE(sh.H);
      CAPTURE(sh.rot);
      CAPTURE(dtype);
      const std::int64_t B = 3, cap = 40;
      cuda::QkvLayout L;
      L.heads = sh.H, L.head_dim = sh.D;
      if (sh.per_head) {
        L.kv_heads = sh.H, L.token_stride = 3 * sh.H * sh.D;
        L.q_offset = 0, L.k_offset = sh.D, L.v_offset = 2 * sh.D, L.q_stride = L.k_stride = L.v_stride = 3 * sh.D;
      } else {
        L.kv_heads = sh.KV, L.token_stride = (sh.H + 2 * sh.KV) * sh.D;
        L.q_offset = 0, L.k_offset = sh.H * sh.D, L.v_offset = (sh.H + sh.KV) * sh.D;
        L.q_stride = L.k_stride = L.v_stride = sh.D;
      }
      torch::manual_seed(21);
      auto opts = torch::TensorOptions().dtype(dtype).device(kCuda);
      auto qkv = torch::randn({B, 1, L.token_stride}, opts);
      auto positions = torch::tensor(std::vector<std::int64_t>{5, 1234, 17}, torch::kLong).to(kCuda);
      auto slots = torch::tensor(std::vector<std::int64_t>{3, 39, 0}, torch::kLong).to(kCuda);
      auto inv_freq = (1.0 / torch::pow(10000.0, torch::arange(0, sh.rot, 2, torch::kFloat32) / sh.rot)).to(kCuda);
      auto k1 = torch::randn({B, L.kv_heads, cap, sh.D}, opts), v1 = torch::randn({B, L.kv_heads, cap, sh.D}, opts);
      auto k2 = k1.clone(), v2 = v1.clone(), qkv2 = qkv.clone();
      const auto type = kernel_type_of(dtype);
      cuda::rotary(qkv.data_ptr(), L, B, positions.data_ptr<std::int64_t>(), inv_freq.data_ptr<float>(), sh.rot, type,
                   current_stream());
      cuda::kv_append(qkv.data_ptr(), L, B, k1.data_ptr(), v1.data_ptr(), cap, slots.data_ptr<std::int64_t>(), 1, type,
                      current_stream());
      cuda::rotary_kv_append(qkv2.data_ptr(), L, B, positions.data_ptr<std::int64_t>(), inv_freq.data_ptr<float>(),
                             sh.rot, k2.data_ptr(), v2.data_ptr(), cap, slots.data_ptr<std::int64_t>(), 1, type,
                             current_stream());
      CHECK(torch::equal(k1, k2));
      CHECK(torch::equal(v1, v2));
      // q heads: rotated in place the same way (k and v columns of the row are left as they were).
      for (int h = 0; h < sh.H; ++h) {
        auto q1 = qkv.select(1, 0).narrow(1, L.q_offset + h * L.q_stride, sh.D);
        auto q2 = qkv2.select(1, 0).narrow(1, L.q_offset + h * L.q_stride, sh.D);
        CHECK(torch::equal(q1, q2));
      }
      CHECK(!torch::equal(k1, k2.roll(1, 2)));  // the comparison can fail: the caches are not constant
    }
  }
}

TEST_CASE("small-batch GEMV and GEMV + SwiGLU against float64, and what they refuse") {
  struct Shape {
    std::int64_t n, k;
    bool bias;
  };
  for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16}) {
    // 18 944: K >= kGemvSplitK, a block's warps split K (the 7B shape's down projection)
    for (const Shape sh :
         {Shape{37, 64, false}, Shape{1152, 896, true}, Shape{301, 4864, true}, Shape{301, 18944, true}}) {
      for (std::int64_t rows = 1; rows <= cuda::kGemvMaxRows; ++rows) {
        CAPTURE(dtype);
        CAPTURE(sh.n);
        CAPTURE(sh.k);
        CAPTURE(rows);
        torch::manual_seed(static_cast<std::uint64_t>(sh.n * 10 + rows));
        auto opts = torch::TensorOptions().dtype(dtype).device(kCuda);
        auto x = torch::randn({rows, sh.k}, opts);
        auto w = (torch::randn({2 * sh.n, sh.k}, opts) * 0.05).to(dtype);
        auto b = sh.bias ? torch::randn({2 * sh.n}, opts) : torch::Tensor();
        const auto type = kernel_type_of(dtype);
        auto x64 = x.to(torch::kCPU, torch::kFloat64), w64 = w.to(torch::kCPU, torch::kFloat64);
        auto ref = torch::matmul(x64, w64.t());
        if (b.defined()) ref = ref + b.to(torch::kCPU, torch::kFloat64);
        // Plain, dtype output, all 2n rows (n odd or even: 2n + 1 rows too, below).
        auto out = torch::full({rows, 2 * sh.n}, std::nan(""), opts);
        REQUIRE(cuda::gemv(x.data_ptr(), w.data_ptr(), b.defined() ? b.data_ptr() : nullptr, out.data_ptr(), false,
                           rows, 2 * sh.n, sh.k, type, current_stream()));
        CHECK(torch::isfinite(out).all().item<bool>());
        CHECK(relative_error(out, ref) <= tolerance_of(dtype));
        // An odd row count, float32 output holding the dtype-rounded values.
        const auto odd = 2 * sh.n - 1;
        auto outf = torch::full({rows, odd}, std::nan(""), opts.dtype(torch::kFloat32));
        REQUIRE(cuda::gemv(x.data_ptr(), w.data_ptr(), b.defined() ? b.data_ptr() : nullptr, outf.data_ptr(), true,
                           rows, odd, sh.k, type, current_stream()));
        CHECK(torch::isfinite(outf).all().item<bool>());
        CHECK(relative_error(outf, ref.narrow(1, 0, odd)) <= tolerance_of(dtype));
        CHECK(torch::equal(outf, outf.to(dtype).to(torch::kFloat32)));  // rounded to the dtype
        // SwiGLU over [gate | up]: silu(g) * u with g, u rounded to the dtype (linear() then swiglu()).
        auto gated = torch::full({rows, sh.n}, std::nan(""), opts);
        REQUIRE(cuda::gemv_swiglu(x.data_ptr(), w.data_ptr(), b.defined() ? b.data_ptr() : nullptr, gated.data_ptr(),
                                  rows, sh.n, sh.k, type, current_stream()));
        auto g = ref.narrow(1, 0, sh.n), u = ref.narrow(1, sh.n, sh.n);
        auto want = g * torch::sigmoid(g) * u;
        CHECK(torch::isfinite(gated).all().item<bool>());
        CHECK(relative_error(gated, want) <= 2 * tolerance_of(dtype));
        // And against the LibTorch ops the fused path replaces.
        auto torch_out = b.defined() ? torch::linear(x, w, b) : torch::linear(x, w);
        CHECK(relative_error(out, torch_out) <= tolerance_of(dtype));
      }
    }
    auto opts = torch::TensorOptions().dtype(dtype).device(kCuda);
    auto x = torch::randn({cuda::kGemvMaxRows + 1, 64}, opts), w = torch::randn({8, 64}, opts);
    auto out = torch::empty({cuda::kGemvMaxRows + 1, 8}, opts);
    const auto type = kernel_type_of(dtype);
    CHECK_FALSE(cuda::gemv(x.data_ptr(), w.data_ptr(), nullptr, out.data_ptr(), false, cuda::kGemvMaxRows + 1, 8, 64,
                           type, current_stream()));
    CHECK_FALSE(cuda::gemv(x.data_ptr(), w.data_ptr(), nullptr, out.data_ptr(), false, 1, 8, 2, type,
                           current_stream()));  // k = 2: not a whole 16-byte vector
    CHECK_FALSE(cuda::gemv_swiglu(static_cast<char*>(x.data_ptr()) + 4, w.data_ptr(), nullptr, out.data_ptr(), 1, 4, 32,
                                  type, current_stream()));  // misaligned
  }
}

TEST_CASE("token statistics kernel: log normaliser, entropy, argmax with suppress, against float64") {
  for (std::int64_t B : {1, 3, 40}) {
    for (bool shared_suppress : {false, true}) {
      CAPTURE(B);
      CAPTURE(shared_suppress);
      const std::int64_t V = 50000, usable = 49990;
      torch::manual_seed(static_cast<std::uint64_t>(B) + shared_suppress);
      auto logits = (torch::randn({B, V}) * 3).to(kCuda);
      // Row 0: its best two entries tie (the lower index wins); the best usable entry suppressed in row 1 (or in
      // every row with the shared suppress row); a huge value past `usable` (it must never win).
      logits.index_put_({0, 100}, 40.0f);
      logits.index_put_({0, 7}, 40.0f);
      logits.index_put_({torch::indexing::Slice(), V - 3}, 1000.0f);
      auto suppress = torch::zeros({shared_suppress ? 1 : B, V}, torch::kFloat32);
      if (B > 1) {
        const auto best1 = logits[1].narrow(0, 0, usable).argmax().item<std::int64_t>();
        suppress.index_put_({shared_suppress ? 0 : 1, best1}, -INFINITY);
      }
      suppress = suppress.to(kCuda);
      auto ref_logits = logits.to(torch::kCPU, torch::kFloat64).clone();
      ref_logits.narrow(1, usable, V - usable).fill_(-INFINITY);
      auto log_z_ref = torch::logsumexp(ref_logits, 1);
      auto logp = ref_logits - log_z_ref.view({B, 1});
      auto p = logp.exp();
      auto entropy_ref = -(p * logp.masked_fill(p == 0, 0)).sum(1);
      auto argmax_ref = (ref_logits + suppress.to(torch::kCPU, torch::kFloat64)).argmax(1);

      auto opts = logits.options();
      auto log_z = torch::empty({B}, opts), entropy = torch::empty({B}, opts), logprob = torch::empty({B}, opts);
      auto argmax = torch::empty({B}, opts.dtype(torch::kLong));
      auto scratch = torch::empty({cuda::token_stats_scratch(B, V)}, opts);
      cuda::token_stats(logits.data_ptr<float>(), B, V, usable, suppress.data_ptr<float>(), shared_suppress ? 0 : V,
                        log_z.data_ptr<float>(), entropy.data_ptr<float>(), argmax.data_ptr<std::int64_t>(),
                        logprob.data_ptr<float>(), scratch.data_ptr<float>(), current_stream());
      CHECK(torch::equal(argmax.cpu(), argmax_ref));
      CHECK(argmax[0].item<std::int64_t>() == 7);
      CHECK(torch::isinf(logits.narrow(1, usable, V - usable)).all().item<bool>());  // filled with -inf
      CHECK(max_abs(log_z, log_z_ref) <= 1e-4);
      CHECK(max_abs(entropy, entropy_ref) <= 1e-4);
      CHECK(max_abs(logprob, logp.gather(1, argmax_ref.view({B, 1})).view({B})) <= 1e-4);
    }
  }
}

TEST_CASE("choose_tokens with the token-statistics kernel: the LibTorch ops' ids, log-probabilities, entropies") {
  const std::int64_t B = 3, V = 1000, usable = 990;
  torch::manual_seed(4);
  auto base = (torch::randn({B, V}) * 2).to(kCuda);
  auto history = torch::randint(V, {B, 6}, torch::kLong).to(kCuda);
  auto seed = torch::full({1}, 99, torch::TensorOptions().dtype(torch::kLong).device(kCuda));
  auto column = torch::full({1}, 3, torch::TensorOptions().dtype(torch::kLong).device(kCuda));
  auto suppress = torch::zeros({1, V}, torch::kFloat32);
  suppress.index_put_({0, base[0].narrow(0, 0, usable).argmax().item<std::int64_t>()}, -INFINITY);
  suppress = suppress.to(kCuda);
  SamplingOptions greedy;
  greedy.greedy = true;
  SamplingOptions sampled;
  sampled.greedy = false;
  sampled.temperature = 0.8f;
  sampled.top_p = 0.9f;
  sampled.repetition_penalty = 1.3f;
  for (const auto& s : {greedy, sampled}) {
    CAPTURE(s.greedy);
    auto a = base.clone(), b = base.clone();
    auto fused = choose_tokens(a, usable, s, history, seed, column, suppress, /*fused_kernels=*/true);
    auto plain = choose_tokens(b, usable, s, history, seed, column, suppress, /*fused_kernels=*/false);
    CHECK(torch::equal(fused.ids.cpu(), plain.ids.cpu()));
    CHECK(max_abs(fused.logprob, plain.logprob) <= 1e-5);
    CHECK(max_abs(fused.entropy, plain.entropy) <= 1e-4);
    CHECK(torch::equal(a, b));  // both filled the padding entries with -inf
  }
  // Per-row settings (the scheduler's): greedy row 0, sampled rows 1 and 2.
  RowSampling rows;
  auto fopts = torch::TensorOptions().dtype(torch::kFloat32).device(kCuda);
  rows.greedy = torch::tensor(std::vector<int>{1, 0, 0}).to(torch::kBool).to(kCuda);
  rows.temperature = torch::tensor(std::vector<float>{1.0f, 0.7f, 1.2f}).to(fopts);
  rows.top_k = torch::tensor(std::vector<std::int64_t>{0, 0, 0}).to(kCuda);
  rows.top_p = torch::tensor(std::vector<float>{1.0f, 1.0f, 0.95f}).to(fopts);
  rows.min_p = torch::zeros({B}, fopts);
  rows.repetition_penalty = torch::ones({B}, fopts);
  rows.seed = torch::tensor(std::vector<std::int64_t>{1, 2, 3}).to(kCuda);
  auto row_suppress = suppress.expand({B, V}).contiguous();
  // Sampled rows: the Gumbel kernel's noise and choice, and with top-k the one sort for top-k and top-p, give the
  // ops' ids at every step (column) of the noise.
  std::set<std::int64_t> drawn;  // row 1's sampled ids over the steps
  for (bool sampled_rows : {false, true})
    for (bool top_k : {false, true})
      for (std::int64_t step = 0; step < (sampled_rows ? 16 : 1); ++step) {
        CAPTURE(sampled_rows);
        CAPTURE(top_k);
        CAPTURE(step);
        RowSamplingUse use;
        use.sampled = sampled_rows;
        use.top_p = sampled_rows;
        use.top_k = sampled_rows && top_k;
        rows.top_k = torch::tensor(std::vector<std::int64_t>{0, use.top_k ? 40 : 0, use.top_k ? 8 : 0}).to(kCuda);
        auto columns = torch::tensor(std::vector<std::int64_t>{4 + step, 5 + step, 6 + step}).to(kCuda);
        auto a = base.clone(), b = base.clone();
        auto fused = choose_tokens_rows(a, usable, rows, use, history, columns, row_suppress, true);
        auto plain = choose_tokens_rows(b, usable, rows, use, history, columns, row_suppress, false);
        CHECK(torch::equal(fused.ids.cpu(), plain.ids.cpu()));
        CHECK(max_abs(fused.logprob, plain.logprob) <= 1e-5);
        CHECK(max_abs(fused.entropy, plain.entropy) <= 1e-4);
        if (sampled_rows) drawn.insert(fused.ids.cpu()[1].item<std::int64_t>());
      }
  CHECK(drawn.size() > 1);  // the noise changes with the step: the comparisons saw real draws
}

TEST_CASE("Gumbel kernel: the counter noise's draw over a Qwen-sized vocabulary, per row and shared, vs the ops") {
  const std::int64_t B = 4, V = 152064;
  torch::manual_seed(11);
  auto logits = (torch::randn({B, V}) * 3).to(kCuda);
  logits[1].fill_(0.0f);  // all equal: the noise alone decides
  auto fopts = torch::TensorOptions().dtype(torch::kFloat32).device(kCuda);
  auto lopts = torch::TensorOptions().dtype(torch::kLong).device(kCuda);
  for (std::int64_t column = 0; column < 4; ++column) {
    CAPTURE(column);
    // Per row (the scheduler's): rows 0 and 2 sampled, 1 and 3 greedy in choose_tokens_rows.
    RowSampling rows;
    rows.greedy = torch::tensor(std::vector<int>{0, 0, 1, 0}).to(torch::kBool).to(kCuda);
    rows.temperature = torch::tensor(std::vector<float>{1.0f, 1.0f, 1.0f, 0.5f}).to(fopts);
    rows.top_k = torch::zeros({B}, lopts);
    rows.top_p = torch::ones({B}, fopts);
    rows.min_p = torch::zeros({B}, fopts);
    rows.repetition_penalty = torch::ones({B}, fopts);
    rows.seed = torch::tensor(std::vector<std::int64_t>{7, 8, 9, -3}).to(kCuda);
    auto history = torch::zeros({B, 1}, lopts);
    auto columns = torch::tensor(std::vector<std::int64_t>{column, column + 100, column, column}).to(kCuda);
    RowSamplingUse use;
    use.sampled = true;
    auto a = logits.clone(), b = logits.clone();
    auto fused = choose_tokens_rows(a, V, rows, use, history, columns, {}, true);
    auto plain = choose_tokens_rows(b, V, rows, use, history, columns, {}, false);
    CHECK(torch::equal(fused.ids.cpu(), plain.ids.cpu()));
    // One seed for all rows (Engine::generate's sampler).
    SamplingOptions s;
    s.temperature = 0.9f;
    auto seed = torch::full({1}, 12345, lopts), col = torch::full({1}, column, lopts);
    a = logits.clone(), b = logits.clone();
    auto fused_shared = choose_tokens(a, V, s, history, seed, col, {}, true);
    auto plain_shared = choose_tokens(b, V, s, history, seed, col, {}, false);
    CHECK(torch::equal(fused_shared.ids.cpu(), plain_shared.ids.cpu()));
  }
}
#endif

int main(int argc, char** argv) {
  if (!Transformer::kernels_built() || !torch::cuda::is_available()) {
    std::printf("skipped: %s\n", !Transformer::kernels_built()
                                     ? "this build has no fused CUDA kernels (no CUDA toolkit or CPU LibTorch)"
                                     : "no CUDA device");
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
