// lal::lm::cpu — the thread pool of CPU decode steps: the calling thread works too, chunks are claimed one at a time,
// and the caller never waits for a worker that has not started on the job.
//
// WHY: a decode step is ~150 short parallel regions (every product of every layer). With a fork/join pool (OpenMP's,
// through at::parallel_for) every region ends in a barrier that waits for every thread; on a busy machine a worker
// that the kernel has not scheduled yet holds the step for a time slice (~3 ms) per region: a bfloat16 step of 40 ms
// took ~900 ms on the 2-core VM while two other processes ran. Here a worker that wakes late finds the chunks taken
// and the caller gone: the step degrades to the threads that run. Workers spin for a short while after a job
// (regions come back to back), then sleep.
//
// THREADING: run() is called by one thread at a time (the decode step's thread); a call from inside a body (nested)
// runs serially on that thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lal::lm::cpu {

class WorkerPool {
 public:
  /// `threads` - 1 worker threads (the caller is the last one).
  explicit WorkerPool(int threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }
  /// body(begin, end) over [0, n) in chunks of `chunk` (the last may be shorter), on the calling thread and the
  /// workers that join; returns when every chunk is done. An exception from a body is rethrown here (the first).
  void run(std::int64_t n, std::int64_t chunk, const std::function<void(std::int64_t, std::int64_t)>& body);

 private:
  struct Job {
    std::int64_t n = 0, chunk = 1;
    const std::function<void(std::int64_t, std::int64_t)>* body = nullptr;
    std::atomic<std::int64_t> next{0};
    std::atomic<int> active{0};  ///< workers inside work() for this job
    bool open = true;            ///< guarded by mutex_: workers may still join
    std::mutex error_mutex;
    std::exception_ptr error;
  };
  static void work(Job& job);
  void worker_loop();

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::shared_ptr<Job> job_;                  ///< guarded by mutex_
  std::atomic<std::uint64_t> generation_{0};  ///< bumped per job (and at shutdown)
  std::atomic<int> sleeping_{0};
  bool stop_ = false;  ///< guarded by mutex_
};

}  // namespace lal::lm::cpu
