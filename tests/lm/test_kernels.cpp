// The fused CUDA kernels against the LibTorch path they replace (the reference), on a GPU: every tiny model family
// (Llama/Qwen2 GQA, Phi-3 partial rotary, GPT-NeoX LayerNorm + partial rotary, head dims 16 and 24) in float32
// (logits within 1e-4, greedy ids equal in every decode mode) and bfloat16 (relative logit error <= 1e-2), and
// the decode-attention kernel alone on real shapes (Qwen2.5-7B: 28 heads over 4 kv heads, head_dim 128) over
// long, padded, per-row-length caches against a float64 computation.
// Without CUDA or without the kernels built, the binary prints why and exits 77 (ctest: skipped).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "lal/lm/engine.hpp"
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
    const auto prompts = prompts_for(reference->usable_vocab());
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

TEST_CASE("decode attention kernel: Qwen2.5-7B heads over long, padded caches of different lengths, vs float64") {
  const int H = 28, KV = 4, D = 128;
  const std::int64_t B = 3, cap = 3000;
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    CAPTURE(dtype);
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
    for (int splits : {1, cuda::decode_attention_splits(B, KV, cap), 64}) {
      CAPTURE(splits);
      auto out = torch::full({B, H * D}, std::nan(""), opts);  // poisoned: every element must be written
      auto scratch = torch::empty({splits * B * H * (D + 2)}, opts.dtype(torch::kFloat32));
      REQUIRE(cuda::decode_attention(qkv.data_ptr(), L, B, keys.data_ptr(), values.data_ptr(), cap,
                                     slots.data_ptr<std::int64_t>(), 1, valid.data_ptr<bool>(), scale, out.data_ptr(),
                                     splits, scratch.data_ptr<float>(), type, stream));
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
      auto got = out.to(torch::kCPU, torch::kFloat64).view({B, H, D});
      CHECK(torch::isfinite(got).all().item<bool>());
      const double err = relative_error(got, ref);
      CAPTURE(err);
      CHECK(err <= (dtype == torch::kFloat32 ? 1e-5 : 1e-2));
    }
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
