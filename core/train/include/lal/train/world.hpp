// lal::train::World — the processes of one distributed `lal distill` run, over PyTorch's c10d.
//
// Torch-free header. A run is distributed when the launcher sets the usual variables:
//   torchrun:  RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
//              (`torchrun --nproc-per-node 2 --no-python lal distill ...`; across nodes with --nnodes/--rdzv-*)
//   Slurm:     SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (+ MASTER_ADDR/MASTER_PORT exported by the batch script)
// Every rank runs the same command line. Rank 0 writes the shared files (questions, merged teacher data,
// checkpoints, metrics, export); all ranks read them, so a multi-node run needs --output_dir on a shared file system.
// Collectives go through c10d's ProcessGroupGloo on CPU and ProcessGroupNCCL on CUDA (when the LibTorch has it; a
// CUDA build without NCCL falls back to Gloo, which also reduces CUDA tensors, slower). Rendezvous is a c10d
// TCPStore served by rank 0 at MASTER_ADDR:MASTER_PORT.
//
// THREADS: one World per process, used from the training thread only. Every collective must be called by all
// ranks in the same order (as with torch.distributed); a rank that fails throws, and the others time out after
// LAL_DIST_TIMEOUT_S seconds (default 600) with an error naming the collective.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lal::train {

struct WorldEnv {
  int rank = 0, size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string launcher = "single";  ///< "torchrun" | "slurm" | "single"

  /// Reads the launcher's variables. Throws std::runtime_error naming the variable when one is malformed or they
  /// contradict each other (RANK >= WORLD_SIZE, a distributed run without MASTER_ADDR under Slurm, ...).
  static WorldEnv from_environment();
};

class World {
 public:
  /// The process's world: a single process until init() joins a process group.
  static World& get();

  /// Joins the process group of `env` for tensors on `device` ("cpu", "cuda:N"). A no-op for a single process.
  void init(const WorldEnv& env, const std::string& device);
  /// Leaves the process group (also done at exit).
  void shutdown();

  int rank() const { return env_.rank; }
  int size() const { return env_.size; }
  int local_rank() const { return env_.local_rank; }
  bool is_main() const { return env_.rank == 0; }
  bool distributed() const { return env_.size > 1; }
  const std::string& backend() const { return backend_; }

  void barrier(const char* what);
  /// Element-wise sum over ranks, in place (the same result on every rank).
  void all_reduce_sum(std::vector<double>& values, const char* what);

  struct Impl;  // c10d state; the tensor collectives live in src/collectives.hpp
  Impl* impl() const { return impl_.get(); }

 private:
  WorldEnv env_;
  std::string backend_ = "none";
  std::shared_ptr<Impl> impl_;
};

}  // namespace lal::train
