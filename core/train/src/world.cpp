// lal::train::World over c10d: TCPStore rendezvous, ProcessGroupGloo (CPU) / ProcessGroupNCCL (CUDA).
#include "lal/train/world.hpp"

#include <spdlog/spdlog.h>
#include <torch/csrc/autograd/function_hook.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <tuple>

#include "collectives.hpp"
#if defined(LAL_TRAIN_HAVE_GLOO)
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if defined(LAL_TRAIN_HAVE_NCCL)
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace lal::train {

namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

int env_int(const char* name, int min, int max) {
  const char* v = env(name);
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (end == v || *end != '\0' || n < min || n > max)
    throw std::runtime_error(std::string("environment variable ") + name + "='" + v + "' is not an integer in [" +
                             std::to_string(min) + ", " + std::to_string(max) + "]");
  return static_cast<int>(n);
}

std::chrono::milliseconds collective_timeout() {
  return std::chrono::milliseconds(1000LL *
                                   (env("LAL_DIST_TIMEOUT_S") ? env_int("LAL_DIST_TIMEOUT_S", 1, 86400) : 600));
}

}  // namespace

WorldEnv WorldEnv::from_environment() {
  WorldEnv w;
  if (env("WORLD_SIZE") || env("RANK")) {
    if (!env("WORLD_SIZE") || !env("RANK"))
      throw std::runtime_error("a distributed run needs both RANK and WORLD_SIZE (as torchrun sets them)");
    w.launcher = "torchrun";
    w.size = env_int("WORLD_SIZE", 1, 1 << 20);
    w.rank = env_int("RANK", 0, w.size - 1);
    w.local_rank = env("LOCAL_RANK") ? env_int("LOCAL_RANK", 0, 1 << 16) : 0;
  } else if (env("SLURM_NTASKS") && env("SLURM_PROCID") && env_int("SLURM_NTASKS", 1, 1 << 20) > 1) {
    w.launcher = "slurm";
    w.size = env_int("SLURM_NTASKS", 1, 1 << 20);
    w.rank = env_int("SLURM_PROCID", 0, w.size - 1);
    w.local_rank = env("SLURM_LOCALID") ? env_int("SLURM_LOCALID", 0, 1 << 16) : 0;
    if (!env("MASTER_ADDR"))
      throw std::runtime_error("a Slurm run of " + std::to_string(w.size) +
                               " tasks needs MASTER_ADDR (and MASTER_PORT): export them in the batch script, e.g. "
                               "MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1)");
  }
  if (w.size > 1) {
    if (env("MASTER_ADDR"))
      w.master_addr = env("MASTER_ADDR");
    else if (w.launcher == "torchrun")
      throw std::runtime_error(
          "RANK/WORLD_SIZE are set but MASTER_ADDR is not: start the ranks with torchrun, or "
          "export MASTER_ADDR and MASTER_PORT");
    if (env("MASTER_PORT")) w.master_port = env_int("MASTER_PORT", 1, 65535);
  }
  return w;
}

struct World::Impl {
  c10::intrusive_ptr<c10d::Store> store;
#if defined(LAL_TRAIN_HAVE_GLOO)
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#endif
#if defined(LAL_TRAIN_HAVE_NCCL)
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
  torch::Device device{torch::kCPU};

  // One call for both backends (ProcessGroup in LibTorch 1.x, Backend in 2.x: the same collective signatures).
  template <typename F>
  void run(const char* what, F&& f) {
    try {
#if defined(LAL_TRAIN_HAVE_NCCL)
      if (nccl) return f(*nccl);
#endif
#if defined(LAL_TRAIN_HAVE_GLOO)
      f(*gloo);
#endif
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("distributed ") + what + " failed: " + e.what());
    }
  }
};

World& World::get() {
  static World w;
  return w;
}

void World::init(const WorldEnv& env, const std::string& device) {
  env_ = env;
  if (env.size <= 1) return;
  auto impl = std::make_shared<Impl>();
  impl->device = torch::Device(device);
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(env.master_port);
  // torchrun's agent already serves the store at MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE): every rank is a client.
  const char* agent_store = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  so.isServer = env.rank == 0 && !(agent_store && std::string(agent_store) == "True");
  so.numWorkers = static_cast<std::size_t>(env.size);
  so.waitWorkers = true;
  so.timeout = collective_timeout();
  try {
    impl->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(env.rank) + " of " + std::to_string(env.size) +
                             ": no rendezvous at " + env.master_addr + ":" + std::to_string(env.master_port) +
                             " (MASTER_ADDR:MASTER_PORT): " + e.what());
  }
#if defined(LAL_TRAIN_HAVE_NCCL)
  if (impl->device.is_cuda()) {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = collective_timeout();
    impl->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl->store, env.rank, env.size, opts);
    backend_ = "nccl";
  }
#endif
  if (backend_ != "nccl") {
#if defined(LAL_TRAIN_HAVE_GLOO)
    auto opts = c10d::ProcessGroupGloo::Options::create();
    opts->timeout = collective_timeout();
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    impl->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, env.rank, env.size, opts);
    backend_ = "gloo";
#else
    throw std::runtime_error("a distributed run on " + device +
                             " needs c10d's Gloo backend, and this lal was built without the gloo headers");
#endif
  }
  impl_ = std::move(impl);
  spdlog::info("distributed: rank {} of {} (local rank {}, {}), c10d {} on {}, rendezvous {}:{}", env.rank, env.size,
               env.local_rank, env.launcher, backend_, device, env.master_addr, env.master_port);
}

void World::shutdown() {
  impl_.reset();
  env_ = WorldEnv{};
  backend_ = "none";
}

void World::barrier(const char* what) {
  if (!distributed()) return;
  // A tiny all-reduce is a barrier on every backend (Gloo's barrier() and NCCL's differ in what they wait for).
  std::vector<double> one{1.0};
  all_reduce_sum(one, what);
}

void World::all_reduce_sum(std::vector<double>& values, const char* what) {
  if (!distributed() || values.empty()) return;
  auto t = torch::tensor(values, torch::kFloat64).to(impl_->device);
  collectives::all_reduce_sum(*this, {t}, what);
  t = t.to(torch::kCPU);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = t[static_cast<std::int64_t>(i)].item<double>();
}

// ------------------------------------------------------------------------------------------------ collectives

namespace collectives {

namespace {

/// The most a broadcast packs into one buffer.
constexpr std::int64_t kBroadcastBucketBytes = std::int64_t{256} << 20;

/// Tensors grouped by (dtype, device), then cut into buckets of at most `bucket_bytes` (one tensor at least).
std::vector<std::vector<torch::Tensor>> buckets(const std::vector<torch::Tensor>& tensors, std::int64_t bucket_bytes) {
  std::map<std::tuple<int, int, int>, std::vector<std::vector<torch::Tensor>>> groups;
  for (const auto& t : tensors) {
    auto& g = groups[{static_cast<int>(t.scalar_type()), static_cast<int>(t.device().type()), t.device().index()}];
    std::int64_t bytes = 0;
    if (!g.empty())
      for (const auto& x : g.back()) bytes += x.numel() * static_cast<std::int64_t>(x.element_size());
    if (g.empty() || bytes + t.numel() * static_cast<std::int64_t>(t.element_size()) > bucket_bytes) g.emplace_back();
    g.back().push_back(t);
  }
  std::vector<std::vector<torch::Tensor>> out;
  for (auto& [key, list] : groups)
    for (auto& b : list) out.push_back(std::move(b));
  return out;
}

torch::Tensor pack(const std::vector<torch::Tensor>& ts) {
  std::vector<torch::Tensor> flat;
  for (const auto& t : ts) flat.push_back(t.reshape({-1}));
  return torch::cat(flat);
}

void unpack(const torch::Tensor& flat, const std::vector<torch::Tensor>& ts) {
  torch::NoGradGuard no_grad;
  std::int64_t off = 0;
  for (const auto& t : ts) {
    const_cast<torch::Tensor&>(t).copy_(flat.narrow(0, off, t.numel()).view_as(t));
    off += t.numel();
  }
}

}  // namespace

void all_reduce_sum(World& world, const std::vector<torch::Tensor>& tensors, const char* what,
                    std::int64_t bucket_bytes) {
  if (!world.distributed() || tensors.empty()) return;
  torch::NoGradGuard no_grad;
  const auto bs = buckets(tensors, bucket_bytes);
  std::vector<torch::Tensor> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  world.impl()->run(what, [&](auto& pg) {
    for (const auto& b : bs) {
      std::vector<torch::Tensor> one{pack(b)};
      c10d::AllreduceOptions ao;
      ao.reduceOp = c10d::ReduceOp::SUM;
      works.push_back(pg.allreduce(one, ao));
      flats.push_back(one[0]);
    }
    for (auto& w : works) w->wait();
  });
  for (std::size_t i = 0; i < bs.size(); ++i) unpack(flats[i], bs[i]);
}

void broadcast(World& world, const std::vector<torch::Tensor>& tensors, int root, const char* what) {
  if (!world.distributed() || tensors.empty()) return;
  torch::NoGradGuard no_grad;
  // Buckets of at most kBroadcastBucketBytes, one after the other: the packed copy is the only extra memory (a
  // 7.6 B student's parameters in one flat buffer were 14 GiB more on a full GPU). A bucket of one contiguous
  // tensor is sent in place.
  const auto bs = buckets(tensors, kBroadcastBucketBytes);
  world.impl()->run(what, [&](auto& pg) {
    for (const auto& b : bs) {
      const bool in_place = b.size() == 1 && b[0].is_contiguous();
      std::vector<torch::Tensor> one{in_place ? b[0] : pack(b)};
      c10d::BroadcastOptions bo;
      bo.rootRank = root;
      pg.broadcast(one, bo)->wait();
      if (!in_place) unpack(one[0], b);
    }
  });
}

void share_owned(World& world, const std::vector<torch::Tensor>& tensors, const std::vector<int>& owner,
                 const char* what, std::int64_t piece_bytes) {
  if (!world.distributed() || tensors.empty()) return;
  if (owner.size() != tensors.size()) throw std::logic_error("share_owned: one owner per tensor");
  torch::NoGradGuard no_grad;
  const int n = world.size(), me = world.rank();
  // Per dtype (the same on every rank: all ranks hold every tensor), each rank's share cut into pieces.
  std::map<int, std::vector<std::vector<torch::Tensor>>> shares;  // dtype -> rank -> tensors
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    auto& by_rank = shares[static_cast<int>(tensors[i].scalar_type())];
    by_rank.resize(static_cast<std::size_t>(n));
    by_rank.at(static_cast<std::size_t>(owner[i])).push_back(tensors[i]);
  }
  world.impl()->run(what, [&](auto& pg) {
    for (const auto& [dtype, by_rank] : shares) {
      std::vector<std::vector<std::vector<torch::Tensor>>> pieces;  // rank -> round -> tensors
      std::size_t rounds = 0;
      for (const auto& share : by_rank) {
        pieces.push_back(share.empty() ? std::vector<std::vector<torch::Tensor>>{} : buckets(share, piece_bytes));
        rounds = std::max(rounds, pieces.back().size());
      }
      auto numel = [](const std::vector<torch::Tensor>& ts) {
        std::int64_t k = 0;
        for (const auto& t : ts) k += t.numel();
        return k;
      };
      const auto& mine = pieces[static_cast<std::size_t>(me)];
      const auto opts = tensors.front().options().dtype(static_cast<torch::ScalarType>(dtype));
      for (std::size_t j = 0; j < rounds; ++j) {
        std::int64_t width = 0;
        for (const auto& p : pieces)
          if (j < p.size()) width = std::max(width, numel(p[j]));
        auto send = torch::empty({width}, opts);
        const std::int64_t used = j < mine.size() ? numel(mine[j]) : 0;
        if (used > 0) {
          std::vector<torch::Tensor> flat;
          for (const auto& t : mine[j]) flat.push_back(t.reshape({-1}));
          auto head = send.narrow(0, 0, used);
          torch::cat_out(head, flat);
        }
        if (used < width) send.narrow(0, used, width - used).zero_();
        std::vector<torch::Tensor> in{send};
        std::vector<std::vector<torch::Tensor>> out(1);
        for (int r = 0; r < n; ++r) out[0].push_back(torch::empty({width}, opts));
        pg.allgather(out, in)->wait();
        for (int r = 0; r < n; ++r) {
          const auto& p = pieces[static_cast<std::size_t>(r)];
          if (r != me && j < p.size()) unpack(out[0][static_cast<std::size_t>(r)], p[j]);
        }
      }
    }
  });
}

// ------------------------------------------------------------------------------------------------ overlapped reduce

struct GradientReducer::State {
  World* world = nullptr;
  std::vector<torch::Tensor> params;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;  // kept alive: they hold the hooks
  std::vector<std::vector<std::size_t>> buckets;                     // parameter indices, launch order
  std::vector<std::size_t> bucket_of;
  std::mutex mutex;
  bool armed = false;
  std::vector<char> ready;             // per parameter, this backward
  std::vector<std::size_t> remaining;  // per bucket
  std::size_t next = 0;                // next bucket to launch
  std::vector<torch::Tensor> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  int during_backward = 0;
  std::string late;  // a gradient that arrived after its bucket was launched

  void reset() {  // caller holds mutex
    ready.assign(params.size(), 0);
    remaining.clear();
    for (const auto& b : buckets) remaining.push_back(b.size());
    next = 0, flats.clear(), works.clear(), during_backward = 0, late.clear();
  }
  void launch_ready(bool in_backward) {  // caller holds mutex
    while (next < buckets.size() && remaining[next] == 0) {
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> flat;
      for (auto i : buckets[next]) {
        const auto& g = params[i].grad();
        flat.push_back(g.defined() ? g.reshape({-1}) : torch::zeros({params[i].numel()}, params[i].options()));
      }
      std::vector<torch::Tensor> one{torch::cat(flat)};
      // The bucket becomes the gradients' storage (views), so a gradient is not held twice while backward runs,
      // and the reduced values are in place when the all-reduce completes.
      std::int64_t off = 0;
      for (auto i : buckets[next]) {
        auto& p = params[i];
        p.mutable_grad() = one[0].narrow(0, off, p.numel()).view_as(p);
        off += p.numel();
      }
      world->impl()->run("gradient all-reduce (overlapped)", [&](auto& pg) {
        c10d::AllreduceOptions ao;
        ao.reduceOp = c10d::ReduceOp::SUM;
        works.push_back(pg.allreduce(one, ao));
      });
      flats.push_back(one[0]);
      if (in_backward) ++during_backward;
      ++next;
    }
  }
};

namespace {
struct ReadyHook : torch::autograd::FunctionPostHook {
  ReadyHook(std::weak_ptr<GradientReducer::State> s, std::size_t i) : state(std::move(s)), index(i) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    auto s = state.lock();
    if (!s) return outputs;
    std::lock_guard<std::mutex> lock(s->mutex);
    if (!s->armed) return outputs;
    const auto b = s->bucket_of[index];
    if (b < s->next) {
      s->late = "parameter " + std::to_string(index);
      return outputs;
    }
    if (!s->ready[index]) s->ready[index] = 1, --s->remaining[b];
    s->launch_ready(true);
    return outputs;
  }
  std::weak_ptr<GradientReducer::State> state;
  std::size_t index;
};
}  // namespace

GradientReducer::GradientReducer(World& world, const std::vector<torch::Tensor>& params, std::int64_t bucket_bytes)
    : state_(std::make_shared<State>()) {
  auto& s = *state_;
  s.world = &world, s.params = params;
  s.bucket_of.assign(params.size(), 0);
  std::int64_t bytes = bucket_bytes;
  for (std::size_t k = params.size(); k-- > 0;) {
    const auto b = params[k].numel() * static_cast<std::int64_t>(params[k].element_size());
    const bool same_kind =
        !s.buckets.empty() && params[s.buckets.back().front()].options().type_equal(params[k].options());
    if (s.buckets.empty() || bytes + b > bucket_bytes || !same_kind) s.buckets.emplace_back(), bytes = 0;
    s.buckets.back().push_back(k);
    s.bucket_of[k] = s.buckets.size() - 1;
    bytes += b;
  }
  for (std::size_t k = 0; k < params.size(); ++k) {
    auto acc = torch::autograd::impl::grad_accumulator(params[k]);
    if (!acc) throw std::logic_error("GradientReducer: a parameter is not a leaf that requires grad");
    acc->add_post_hook(std::make_unique<ReadyHook>(state_, k));
    s.accumulators.push_back(std::move(acc));
  }
}

GradientReducer::~GradientReducer() = default;

void GradientReducer::arm() {
  auto& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  s.reset();
  s.armed = true;
}

void GradientReducer::finish() {
  auto& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.armed) s.reset();  // no backward on this rank this step
  s.armed = false;
  if (!s.late.empty())
    throw std::logic_error("GradientReducer: the gradient of " + s.late + " arrived after its bucket was reduced");
  for (auto& r : s.remaining) r = 0;  // whatever did not arrive counts as zero
  s.launch_ready(false);
  s.world->impl()->run("gradient all-reduce (overlapped)", [&](auto&) {
    for (auto& w : s.works) w->wait();
  });
  s.flats.clear(), s.works.clear();  // the gradients are views of the reduced buckets
}

int GradientReducer::launched_during_backward() const { return state_->during_backward; }
int GradientReducer::buckets() const { return static_cast<int>(state_->buckets.size()); }

}  // namespace collectives

}  // namespace lal::train
