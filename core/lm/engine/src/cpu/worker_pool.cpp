// The decode steps' thread pool (worker_pool.hpp).
#include "worker_pool.hpp"

#include <algorithm>
#include <chrono>

namespace lal::lm::cpu {

namespace {

/// Set on pool threads while they run a body, and on the caller inside run(): a nested run() is serial.
thread_local bool inside_pool = false;

/// How long a worker spins for the next job before it sleeps: a decode step's regions follow each other within
/// tens of microseconds; between steps and requests the worker sleeps.
constexpr std::chrono::microseconds kSpin{200};

}  // namespace

WorkerPool::WorkerPool(int threads) {
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void WorkerPool::work(Job& job) {
  for (;;) {
    const std::int64_t begin = job.next.fetch_add(job.chunk, std::memory_order_relaxed);
    if (begin >= job.n) return;
    try {
      (*job.body)(begin, std::min(job.n, begin + job.chunk));
    } catch (...) {
      std::lock_guard<std::mutex> lock(job.error_mutex);
      if (!job.error) job.error = std::current_exception();
    }
  }
}

void WorkerPool::worker_loop() {
  inside_pool = true;
  std::uint64_t seen = generation_.load(std::memory_order_acquire);
  for (;;) {
    // Wait for a new generation: spin first, then sleep.
    const auto spin_until = std::chrono::steady_clock::now() + kSpin;
    while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_until)
      std::this_thread::yield();
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (generation_.load(std::memory_order_acquire) == seen) {
        sleeping_.fetch_add(1, std::memory_order_acq_rel);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        sleeping_.fetch_sub(1, std::memory_order_acq_rel);
      }
      if (stop_) return;
      seen = generation_.load(std::memory_order_acquire);
      if (job_ && job_->open) {
        job = job_;
        job->active.fetch_add(1, std::memory_order_acq_rel);
      }
    }
    if (!job) continue;  // the caller finished that job alone
    work(*job);
    job->active.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void WorkerPool::run(std::int64_t n, std::int64_t chunk, const std::function<void(std::int64_t, std::int64_t)>& body) {
  if (n <= 0) return;
  chunk = std::max<std::int64_t>(1, chunk);
  if (workers_.empty() || inside_pool || n <= chunk) return body(0, n);
  auto job = std::make_shared<Job>();
  job->n = n, job->chunk = chunk, job->body = &body;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = job;
    generation_.fetch_add(1, std::memory_order_release);
  }
  if (sleeping_.load(std::memory_order_acquire) > 0) wake_.notify_all();
  inside_pool = true;
  work(*job);
  inside_pool = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);  // no worker joins from here on
    job->open = false;
    job_.reset();
  }
  while (job->active.load(std::memory_order_acquire) != 0) std::this_thread::yield();  // those inside: a chunk each
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace lal::lm::cpu
