// A worker thread that takes a module's jobs in arrival order, for modules that must wait or keep time while their
// strand keeps receiving messages (left_brain waits for the recollection; frontal_lobe keeps a budget clock).
//
// The module's handlers and the jobs share mutex() and cv(): handlers record what arrives under the mutex and notify;
// a job waits on cv() for what it needs (checking stopping()). Exceptions from a job are not seen by the host (no bus
// strand runs it), so they go to `on_error`. Call stop() from Module::stop(); it is also called on destruction, so
// declare the worker after the state its jobs touch. Each queued or running job holds a busy guard
// (Context::busy_guard) so the host does not consider the pipeline idle while the worker still has work.
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <utility>
#include <mutex>
#include <thread>

namespace lal::plugins {

template <class Job>
class TurnWorker {
 public:
  using Work = std::function<void(Job&)>;
  using OnError = std::function<void(const Job&, const std::exception&)>;

  TurnWorker() = default;
  TurnWorker(const TurnWorker&) = delete;
  TurnWorker& operator=(const TurnWorker&) = delete;
  ~TurnWorker() { stop(); }

  /// `busy`: returns a guard that keeps the pipeline busy (pass `[ctx] { return ctx->busy_guard(); }`).
  void start(Work work, OnError on_error, std::function<std::shared_ptr<void>()> busy = {}) {
    busy_ = std::move(busy);
    thread_ = std::thread([this, work = std::move(work), on_error = std::move(on_error)] {
      for (;;) {
        Job job;
        std::shared_ptr<void> guard;  // released when this job is done
        {
          std::unique_lock<std::mutex> lk(mutex_);
          cv_.wait(lk, [&] { return stopping_ || !jobs_.empty(); });
          if (stopping_) return;
          job = std::move(jobs_.front().first);
          guard = std::move(jobs_.front().second);
          jobs_.pop_front();
        }
        try {
          work(job);
        } catch (const std::exception& e) {
          on_error(job, e);
        }
      }
    });
  }

  /// Queue a job. Call with mutex() held.
  void push_locked(Job job) {
    jobs_.emplace_back(std::move(job), busy_ ? busy_() : nullptr);
    cv_.notify_all();
  }

  /// Stop after the running job (which should notice stopping() or its cancellation token) and join. Idempotent.
  void stop() {
    {
      std::lock_guard<std::mutex> lk(mutex_);
      stopping_ = true;
      cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
  }

  std::mutex& mutex() { return mutex_; }
  std::condition_variable& cv() { return cv_; }
  /// Call with mutex() held.
  bool stopping() const { return stopping_; }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::pair<Job, std::shared_ptr<void>>> jobs_;
  std::function<std::shared_ptr<void>()> busy_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace lal::plugins
