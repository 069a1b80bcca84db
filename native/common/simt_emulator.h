// The emulated device of simt.h: CUDA kernels run on CPU threads, with CUDA's semantics.
//
// A launch runs its blocks one after another on a pool of worker threads (created on demand,
// reused across launches): every block runs as blockDim real threads, each with its own
// threadIdx / blockIdx / blockDim / gridDim. __syncthreads() is a barrier of the block's
// threads, warp shuffles exchange values among the (up to) 32 threads of a warp through a
// barrier, atomicAdd is a compare-and-swap loop, static __shared__ arrays are function
// statics (one block runs at a time, and the end-of-block barrier orders one block's use
// before the next), and dynamic shared memory is a heap buffer of exactly the launch's size.
// All synchronisation goes through mutexes, condition variables and atomics, which
// ThreadSanitizer understands, and every buffer has its real size, so AddressSanitizer sees
// overflows: a build with either sanitizer checks the kernels for races and bounds.
//
// Launches are synchronous (like a launch followed by cudaDeviceSynchronize); streams are
// accepted and ignored. A thread that returns from the kernel leaves the block's and warp's
// barriers (exited threads do not count on a GPU either). Misuse that a GPU would punish
// with undefined behaviour (a shuffle with a mask that leaves out active lanes, too many
// threads or too much shared memory) stops the process or fails the launch with a message.
#pragma once

#include <cxxabi.h>
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define DINAT_M2F_DYNAMIC_SHARED(T, name) \
  T* name = reinterpret_cast<T*>(::dinat_m2f::simt::emulator::dynamic_shared())

// CUDA's built-in variables, per thread.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace dinat_m2f {
namespace simt {

using Stream = void*;

namespace emulator {

constexpr int kWarp = 32;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxDynamicShared = 48 * 1024;  // without cudaFuncSetAttribute, as on a GPU

[[noreturn]] inline void fail(const std::string& message) {
  std::fprintf(stderr, "dinat_m2f emulated device: %s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}

// A reusable barrier whose participants may leave for good (exited threads). The counts
// change under a mutex; waiters sleep on the generation counter (a futex), so the last
// arrival wakes them all without each having to take the mutex again.
class Barrier {
 public:
  void reset(int participants) {
    std::lock_guard<std::mutex> lock(mutex_);
    expected_ = participants;
    arrived_ = 0;
  }

  // Returns once every participant has arrived; the last one to arrive first runs
  // `on_complete` (if any) while the others still wait.
  void arrive_and_wait(const std::function<void()>& on_complete = nullptr) {
    uint32_t generation;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation = generation_.load(std::memory_order_relaxed);
      if (++arrived_ >= expected_) {
        if (on_complete) on_complete();
        release();
        return;
      }
    }
    while (generation_.load(std::memory_order_acquire) == generation)
      generation_.wait(generation, std::memory_order_acquire);
  }

  void arrive_and_drop() {
    std::lock_guard<std::mutex> lock(mutex_);
    --expected_;
    if (arrived_ > 0 && arrived_ >= expected_) release();
  }

 private:
  void release() {  // with mutex_ held
    arrived_ = 0;
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
  }

  std::mutex mutex_;
  int expected_ = 0;
  int arrived_ = 0;
  std::atomic<uint32_t> generation_{0};
};

// What the threads of the running block share.
struct Block {
  int threads = 0;
  Barrier sync;                                 // __syncthreads
  std::vector<std::unique_ptr<Barrier>> warps;  // one per warp: shuffles, __syncwarp
  std::vector<int> warp_lanes;                  // threads in each warp (the last may be partial)
  // shuffle exchange: two sets of kWarp slots per warp, used in turn, so one barrier per
  // shuffle suffices (nobody can write a set again before everybody has read it)
  std::vector<uint64_t> slots;
  unsigned char* shared = nullptr;

  void reset() {
    sync.reset(threads);
    for (size_t w = 0; w < warps.size(); ++w) warps[w]->reset(warp_lanes[w]);
  }
};

inline thread_local Block* current_block = nullptr;
inline thread_local int current_thread = 0;  // linear thread index in the block
inline thread_local unsigned shuffles = 0;   // shuffles of this thread in this block

inline unsigned char* dynamic_shared() {
  return current_block->shared;
}

// The pool of worker threads that runs launches.
class Device {
 public:
  static Device& get() {
    static Device device;
    return device;
  }

  ~Device() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    start_.notify_all();
    for (std::thread& worker : workers_) worker.join();
  }

  void run(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body) {
    const uint64_t threads = uint64_t(block.x) * block.y * block.z;
    const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
    if (threads < 1 || threads > kMaxThreadsPerBlock)
      throw std::invalid_argument("emulated kernel launch: " + std::to_string(threads) +
                                  " threads per block (must be 1 to 1024)");
    if (grid.x < 1 || grid.x > 0x7fffffffu || grid.y < 1 || grid.y > 65535 || grid.z < 1 ||
        grid.z > 65535)
      throw std::invalid_argument("emulated kernel launch: invalid grid (" +
                                  std::to_string(grid.x) + ", " + std::to_string(grid.y) + ", " +
                                  std::to_string(grid.z) + ")");
    if (shared_bytes > kMaxDynamicShared)
      throw std::invalid_argument("emulated kernel launch: " + std::to_string(shared_bytes) +
                                  " bytes of dynamic shared memory (at most " +
                                  std::to_string(kMaxDynamicShared) + ")");
    std::lock_guard<std::mutex> one_launch_at_a_time(launch_mutex_);
    while (workers_.size() < threads)
      workers_.emplace_back(&Device::work, this, int(workers_.size()), job_);
    std::unique_ptr<unsigned char[]> shared(shared_bytes ? new unsigned char[shared_bytes]
                                                         : nullptr);
    const int n = int(threads);
    const int warps = (n + kWarp - 1) / kWarp;
    block_.threads = n;
    while (int(block_.warps.size()) < warps) block_.warps.push_back(std::make_unique<Barrier>());
    block_.warps.resize(warps);
    block_.warp_lanes.assign(warps, kWarp);
    block_.warp_lanes.back() = n - (warps - 1) * kWarp;
    block_.slots.assign(size_t(warps) * 2 * kWarp, 0);
    block_.shared = shared.get();
    block_.reset();
    block_end_.reset(n);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &body;
      grid_ = grid;
      block_dim_ = block;
      blocks_ = blocks;
      threads_ = n;
      pending_ = n;
      ++job_;
    }
    start_.notify_all();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
  }

 private:
  Device() = default;

  // `seen`: the last launch before this worker existed (it must not run that one).
  void work(int id, uint64_t seen) {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        start_.wait(lock, [&] { return stop_ || job_ != seen; });
        if (stop_) return;
        seen = job_;
        if (id >= threads_) continue;
      }
      run_blocks(id);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) done_.notify_all();
    }
  }

  void run_blocks(int id) {
    blockDim = block_dim_;
    gridDim = grid_;
    threadIdx.x = id % block_dim_.x;
    threadIdx.y = (id / block_dim_.x) % block_dim_.y;
    threadIdx.z = id / (block_dim_.x * block_dim_.y);
    current_block = &block_;
    current_thread = id;
    for (uint64_t b = 0; b < blocks_; ++b) {
      blockIdx.x = unsigned(b % grid_.x);
      blockIdx.y = unsigned((b / grid_.x) % grid_.y);
      blockIdx.z = unsigned(b / (uint64_t(grid_.x) * grid_.y));
      shuffles = 0;
      (*body_)();
      // this thread has exited the kernel for this block
      block_.sync.arrive_and_drop();
      block_.warps[id / kWarp]->arrive_and_drop();
      block_end_.arrive_and_wait([this] { block_.reset(); });
    }
    current_block = nullptr;
  }

  std::mutex launch_mutex_;
  std::mutex mutex_;
  std::condition_variable start_;
  std::condition_variable done_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
  uint64_t job_ = 0;
  int pending_ = 0;
  // the running launch
  const std::function<void()>* body_ = nullptr;
  dim3 grid_;
  dim3 block_dim_;
  uint64_t blocks_ = 0;
  int threads_ = 0;
  Block block_;
  Barrier block_end_;
};

// Exchanges `value` among the lanes of the calling thread's warp: returns the value of lane
// source(lane), or the caller's own value when that is -1 or not a lane of the warp.
template <typename T, typename Source>
T exchange(unsigned mask, T value, Source source) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable<T>::value,
                "emulated shuffles take values of at most 8 bytes");
  Block& block = *current_block;
  const int warp = current_thread / kWarp, lane = current_thread % kWarp;
  const int lanes = block.warp_lanes[warp];
  const unsigned active = lanes == kWarp ? 0xffffffffu : ((1u << lanes) - 1u);
  if ((mask & active) != active)
    fail("a warp shuffle whose mask leaves out active lanes is not emulated (mask " +
         std::to_string(mask) + ")");
  // The lanes of a warp run the same shuffles in the same order, so they agree on the set.
  uint64_t* slots = block.slots.data() + (size_t(warp) * 2 + shuffles++ % 2) * kWarp;
  std::memcpy(&slots[lane], &value, sizeof(T));
  block.warps[warp]->arrive_and_wait();
  T out = value;
  const int from = source(lane);
  if (from >= 0 && from < lanes) std::memcpy(&out, &slots[from], sizeof(T));
  return out;
}

template <typename T>
T atomic_add(T* address, T value) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "emulated atomicAdd takes 4 or 8 bytes");
  using Bits = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
  Bits* bits = reinterpret_cast<Bits*>(address);
  Bits old = __atomic_load_n(bits, __ATOMIC_RELAXED);
  for (;;) {
    T current;
    std::memcpy(&current, &old, sizeof(T));
    const T sum = current + value;
    Bits desired;
    std::memcpy(&desired, &sum, sizeof(T));
    if (__atomic_compare_exchange_n(bits, &old, desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
      return current;
  }
}

// The launch census: per kernel, the launches that ran and the largest grid (blocks), block
// (threads) and dynamic shared memory among them, so that tests can see every __global__
// function execute (dinat_m2f_testing::launch_census).
struct LaunchStats {
  uint64_t launches = 0, max_blocks = 0, max_threads = 0, max_shared = 0;
};

inline std::mutex census_mutex;
inline std::map<const void*, LaunchStats> census;

inline void record_launch(const void* kernel, dim3 grid, dim3 block, size_t shared) {
  std::lock_guard<std::mutex> lock(census_mutex);
  LaunchStats& stats = census[kernel];
  stats.launches += 1;
  stats.max_blocks = std::max<uint64_t>(stats.max_blocks, uint64_t(grid.x) * grid.y * grid.z);
  stats.max_threads = std::max<uint64_t>(stats.max_threads, uint64_t(block.x) * block.y * block.z);
  stats.max_shared = std::max<uint64_t>(stats.max_shared, shared);
}

// One line per kernel: "symbol<TAB>launches<TAB>max blocks<TAB>max threads<TAB>max shared
// bytes", the symbol demangled from the shared library's symbol table ("?" if not there).
inline std::vector<std::string> launch_census() {
  std::lock_guard<std::mutex> lock(census_mutex);
  std::vector<std::string> lines;
  for (const auto& [kernel, stats] : census) {
    std::string name = "?";
    Dl_info info;
    // only an exact match: dladdr names the nearest symbol below an unexported address
    if (dladdr(kernel, &info) != 0 && info.dli_sname != nullptr && info.dli_saddr == kernel) {
      int status = 0;
      char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
      name = status == 0 && demangled != nullptr ? demangled : info.dli_sname;
      std::free(demangled);
    }
    lines.push_back(name + "\t" + std::to_string(stats.launches) + "\t" +
                    std::to_string(stats.max_blocks) + "\t" + std::to_string(stats.max_threads) +
                    "\t" + std::to_string(stats.max_shared));
  }
  return lines;
}

}  // namespace emulator

// kernel<<<grid, block, smem, stream>>>(args...) on the emulated device.
template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, dim3 block, size_t smem, Stream, Args... args) {
  emulator::Device::get().run(grid, block, smem, [&] { kernel(args...); });
  emulator::record_launch(reinterpret_cast<const void*>(kernel), grid, block, smem);
}

}  // namespace simt
}  // namespace dinat_m2f

// CUDA's intrinsics.
inline void __syncthreads() {
  dinat_m2f::simt::emulator::current_block->sync.arrive_and_wait();
}

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  dinat_m2f::simt::emulator::exchange(mask, 0, [](int) { return -1; });
}

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  return dinat_m2f::simt::emulator::exchange(
      mask, var, [&](int lane) { return lane / width * width + src_lane % width; });
}

template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return dinat_m2f::simt::emulator::exchange(mask, var, [&](int lane) {
    return lane % width + int(delta) < width ? lane + int(delta) : -1;
  });
}

template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return dinat_m2f::simt::emulator::exchange(
      mask, var, [&](int lane) { return lane % width >= int(delta) ? lane - int(delta) : -1; });
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  return dinat_m2f::simt::emulator::exchange(mask, var, [&](int lane) {
    const int other = lane ^ lane_mask;
    return other / width == lane / width ? other : -1;
  });
}

inline float atomicAdd(float* address, float value) {
  return dinat_m2f::simt::emulator::atomic_add(address, value);
}
inline double atomicAdd(double* address, double value) {
  return dinat_m2f::simt::emulator::atomic_add(address, value);
}
inline int atomicAdd(int* address, int value) {
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
inline unsigned atomicAdd(unsigned* address, unsigned value) {
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
