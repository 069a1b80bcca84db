// Runs the CUDA kernels on the emulated device in a standalone program (no Python, no ATen),
// built with ThreadSanitizer or AddressSanitizer by tools/sanitize.py:
//
//   driver selftest          the SIMT layer's primitives against their CUDA semantics
//   driver kernels           every __global__ function of native/ through its launcher, on
//                            small problems, float and double (a sanitizer report = a bug)
//   driver race              planted: a block reduction missing a barrier   (TSan reports)
//   driver shared-overflow   planted: a write past the dynamic shared memory (ASan reports)
//   driver global-overflow   planted: a read past the end of an input        (ASan reports)
//
// Exit status 0 and "PASS" when the mode ran through; a sanitizer report makes it non-zero.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../ms_deform_attn/ms_deform_attn_device.cuh"
#include "../../na/na_device.cuh"
#include "planted_bugs.cuh"

namespace {

using namespace dinat_m2f;

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAIL %s\n", what.c_str());
    ++failures;
  }
}

template <typename T>
std::vector<T> random_vector(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<T> v(n);
  for (T& x : v) x = T(dist(gen));
  return v;
}

// ------------------------------------------------------------------------------------------
// selftest kernels

__global__ void write_indices(int* out) {
  const int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int threads = blockDim.x * blockDim.y * blockDim.z;
  out[block * threads + thread] = block * 1000 + thread;
}

__global__ void block_sum(const int* in, int* out) {
  __shared__ int partial[256];
  partial[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (int(threadIdx.x) < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

// out[4 * tid + k]: shfl_down 3, shfl_up 5, shfl_xor 6 (width 8), shfl from lane 2 (width 8)
__global__ void shuffles(int* out) {
  const int tid = threadIdx.x;
  const int value = 10 * tid + 1;
  out[4 * tid + 0] = __shfl_down_sync(0xffffffffu, value, 3);
  out[4 * tid + 1] = __shfl_up_sync(0xffffffffu, value, 5);
  out[4 * tid + 2] = __shfl_xor_sync(0xffffffffu, value, 6, 8);
  out[4 * tid + 3] = __shfl_sync(0xffffffffu, value, 2, 8);
}

__global__ void count_with_atomics(float* sum, double* sum64) {
  atomicAdd(sum, 1.0f);
  atomicAdd(sum64, 0.5);
}

__global__ void reverse_in_shared(const float* in, float* out, int n) {
  DINAT_M2F_DYNAMIC_SHARED(float, buffer);
  for (int i = threadIdx.x; i < n; i += blockDim.x) buffer[i] = in[i];
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = buffer[n - 1 - i];
}

__global__ void exits_early(int* out) {
  if (threadIdx.x % 3 == 0) return;  // exited threads do not hold the others' barrier
  __syncthreads();
  out[threadIdx.x] = 1;
}

int selftest() {
  {
    const dim3 grid(3, 2, 2), block(4, 3, 2);
    std::vector<int> out(12 * 24, -1);
    simt::launch(write_indices, grid, block, 0, nullptr, out.data());
    for (int b = 0; b < 12; ++b)
      for (int t = 0; t < 24; ++t) expect(out[b * 24 + t] == b * 1000 + t, "thread/block indices");
  }
  {
    std::vector<int> in(4 * 256), out(4);
    for (size_t i = 0; i < in.size(); ++i) in[i] = int(i % 97);
    simt::launch(block_sum, dim3(4), dim3(256), 0, nullptr, in.data(), out.data());
    for (int b = 0; b < 4; ++b) {
      int expected = 0;
      for (int i = 0; i < 256; ++i) expected += in[b * 256 + i];
      expect(out[b] == expected, "__syncthreads block reduction");
    }
  }
  for (int threads : {64, 40}) {  // full warps, and a partial last warp
    std::vector<int> out(4 * threads);
    simt::launch(shuffles, dim3(1), dim3(threads), 0, nullptr, out.data());
    for (int t = 0; t < threads; ++t) {
      const int lane = t % 32, warp_base = t - lane;
      const int lanes = std::min(32, threads - warp_base);
      auto value = [&](int l) { return 10 * (warp_base + l) + 1; };
      const int own = value(lane);
      expect(out[4 * t] == (lane + 3 < lanes ? value(lane + 3) : own), "__shfl_down_sync");
      expect(out[4 * t + 1] == (lane >= 5 ? value(lane - 5) : own), "__shfl_up_sync");
      const int x = lane ^ 6;
      expect(out[4 * t + 2] == (x < lanes ? value(x) : own), "__shfl_xor_sync width 8");
      const int from = lane / 8 * 8 + 2;
      expect(out[4 * t + 3] == (from < lanes ? value(from) : own), "__shfl_sync width 8");
    }
  }
  {
    float sum = 0.0f;
    double sum64 = 0.0;
    simt::launch(count_with_atomics, dim3(7), dim3(96), 0, nullptr, &sum, &sum64);
    expect(sum == 7.0f * 96 && sum64 == 0.5 * 7 * 96, "atomicAdd");
  }
  {
    const int n = 300;
    std::vector<float> in = random_vector<float>(n, 1), out(n);
    simt::launch(reverse_in_shared, dim3(2), dim3(128), n * sizeof(float), nullptr, in.data(),
                 out.data(), n);
    for (int i = 0; i < n; ++i) expect(out[i] == in[n - 1 - i], "dynamic shared memory");
  }
  {
    std::vector<int> out(64, 0);
    simt::launch(exits_early, dim3(3), dim3(64), 0, nullptr, out.data());
    for (int t = 0; t < 64; ++t) expect(out[t] == (t % 3 != 0), "barrier after exited threads");
  }
  bool refused = false;
  try {
    simt::launch(write_indices, dim3(1), dim3(2048), 0, nullptr, static_cast<int*>(nullptr));
  } catch (const std::invalid_argument&) {
    refused = true;
  }
  expect(refused, "a block of 2048 threads is refused like on a GPU");
  return 0;
}

// ------------------------------------------------------------------------------------------
// the real kernels

na::Problem na_problem(int64_t batch, int heads, int dim, na::Axis h, na::Axis w) {
  na::Problem p;
  p.batch = batch;
  p.heads = heads;
  p.dim = dim;
  p.h = h;
  p.w = w;
  return p;
}

// Logits computed serially from the shared index maths (a sanity check that kernels ran).
template <typename T>
double qk_error(const std::vector<T>& q, const std::vector<T>& k, const std::vector<T>& rpb,
                const std::vector<T>& attn, const na::Problem& p) {
  const int K = p.neighbors(), bias_w = 2 * p.w.kernel - 1;
  const int bias_hw = (2 * p.h.kernel - 1) * bias_w;
  double error = 0;
  for (int64_t t = 0; t < p.tokens(); ++t) {
    const na::TokenCoords c = na::coords_of(t, p);
    const na::Window wh = na::window_of(c.h, p.h), ww = na::window_of(c.w, p.w);
    for (int head = 0; head < p.heads; ++head)
      for (int n = 0; n < K; ++n) {
        const int i = n / p.w.kernel, j = n % p.w.kernel;
        const int64_t s = na::token_of(c.batch, wh.first + i * wh.step, ww.first + j * ww.step, p);
        double sum = rpb[head * bias_hw + (wh.bias_first + i) * bias_w + ww.bias_first + j];
        for (int d = 0; d < p.dim; ++d)
          sum += double(q[(t * p.heads + head) * p.dim + d]) * k[(s * p.heads + head) * p.dim + d];
        error = std::max(error, std::fabs(sum - attn[(t * p.heads + head) * K + n]));
      }
  }
  return error;
}

template <typename T>
void run_na(const na::Problem& p, const char* name) {
  namespace dev = na::emulated;
  const size_t tokens = size_t(p.tokens()) * p.heads;
  const size_t K = p.neighbors();
  const size_t bias = size_t(p.heads) * (2 * p.h.kernel - 1) * (2 * p.w.kernel - 1);
  std::vector<T> q = random_vector<T>(tokens * p.dim, 1), k = random_vector<T>(tokens * p.dim, 2);
  std::vector<T> v = random_vector<T>(tokens * p.dim, 3), rpb = random_vector<T>(bias, 4);
  std::vector<T> attn(tokens * K), out(tokens * p.dim), grad(tokens * p.dim), grad_rpb(bias);
  dev::launch_qk(q.data(), k.data(), rpb.data(), attn.data(), p, nullptr);
  dev::launch_av(attn.data(), v.data(), out.data(), p, nullptr);
  dev::launch_inverse(attn.data(), q.data(), grad.data(), p, nullptr);
  dev::launch_rpb_grad(attn.data(), grad_rpb.data(), p, nullptr);
  const double tolerance = sizeof(T) == 4 ? 1e-4 : 1e-10;
  expect(qk_error(q, k, rpb, attn, p) < tolerance, std::string("qk values ") + name);
  std::printf("ran NA %s: qk %s, av %s, inverse, rpb_grad (%s)\n", name,
              dev::qk_plan<T>(p).use ? "tiled" : "naive",
              dev::av_plan<T>(p).use ? "tiled" : "naive", sizeof(T) == 4 ? "float" : "double");
}

template <typename T>
void run_ms_deform_attn() {
  namespace dev = ms_deform_attn::emulated;
  ms_deform_attn::Levels levels;
  levels.count = 2;
  levels.height[0] = 6, levels.width[0] = 5, levels.start[0] = 0;
  levels.height[1] = 3, levels.width[1] = 2, levels.start[1] = 30;
  ms_deform_attn::Problem p;
  p.batch = 2, p.len_in = 36, p.len_q = 9, p.heads = 2, p.dim = 40, p.levels = 2, p.points = 3;
  const size_t rows = size_t(p.rows()), samples = rows * p.samples();
  std::vector<T> value = random_vector<T>(size_t(p.batch) * p.len_in * p.heads * p.dim, 5);
  std::vector<T> locations = random_vector<T>(samples * 2, 6);
  for (T& x : locations) x = T(0.5 + 0.7 * double(x));  // some off the map
  std::vector<T> weights = random_vector<T>(samples, 7);
  std::vector<T> out(rows * p.dim), grad_out = random_vector<T>(rows * p.dim, 8);
  std::vector<T> grad_value(value.size(), T(0)), grad_locations(samples * 2), grad_weights(samples);
  dev::launch_forward(value.data(), locations.data(), weights.data(), out.data(), p, levels,
                      nullptr);
  dev::launch_backward(grad_out.data(), value.data(), locations.data(), weights.data(),
                       grad_value.data(), grad_locations.data(), grad_weights.data(), p, levels,
                       nullptr);
  std::printf("ran MSDeformAttn forward and backward (%s)\n", sizeof(T) == 4 ? "float" : "double");
}

template <typename T>
void run_all() {
  run_na<T>(na_problem(2, 2, 32, {9, 3, 1}, {10, 3, 1}), "2D k3 d1 D32");
  run_na<T>(na_problem(1, 1, 64, {15, 7, 2}, {14, 7, 2}), "2D k7 d2 D64");
  run_na<T>(na_problem(1, 2, 16, {11, 5, 2}, {12, 5, 2}), "2D k5 d2 D16");
  run_na<T>(na_problem(2, 2, 32, {1, 1, 1}, {23, 5, 3}), "1D k5 d3 D32");
  run_ms_deform_attn<T>();
}

int kernels() {
  run_all<float>();
  run_all<double>();
  return 0;
}

// ------------------------------------------------------------------------------------------
// planted bugs

int race() {
  const na::Problem p = na_problem(1, 1, 8, {9, 3, 1}, {9, 3, 1});
  std::vector<float> grad_attn = random_vector<float>(size_t(p.tokens()) * p.neighbors(), 9);
  std::vector<float> grad_rpb(25);
  simt::launch(planted::rpb_grad_without_barrier<float>, dim3(25), dim3(na::emulated::kThreads), 0,
               nullptr, grad_attn.data(), grad_rpb.data(), p);
  return 0;
}

int shared_overflow() {
  const int rows = 10, count = 17;
  std::vector<float> src = random_vector<float>(rows * count, 10), out(rows * count);
  simt::launch(planted::stage_rows_past_shared<float>, dim3(1), dim3(64),
               rows * count * sizeof(float), nullptr, src.data(), out.data(), rows, count);
  return 0;
}

int global_overflow() {
  const na::Problem p = na_problem(1, 2, 8, {7, 3, 1}, {8, 3, 1});
  const size_t n = size_t(p.tokens()) * p.heads * p.dim;
  std::vector<float> q = random_vector<float>(n, 11), k = random_vector<float>(n, 12);
  std::vector<float> attn(size_t(p.tokens()) * p.heads * p.neighbors());
  simt::launch(planted::qk_reading_past_key<float>, dim3(4), dim3(na::emulated::kThreads), 0,
               nullptr, q.data(), k.data(), attn.data(), p);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  int status = 2;
  if (mode == "selftest")
    status = selftest();
  else if (mode == "kernels")
    status = kernels();
  else if (mode == "race")
    status = race();
  else if (mode == "shared-overflow")
    status = shared_overflow();
  else if (mode == "global-overflow")
    status = global_overflow();
  else {
    std::fprintf(stderr, "usage: %s selftest|kernels|race|shared-overflow|global-overflow\n",
                 argv[0]);
    return 2;
  }
  if (status == 0 && failures == 0) std::printf("PASS %s\n", mode.c_str());
  return status != 0 ? status : (failures ? 1 : 0);
}
