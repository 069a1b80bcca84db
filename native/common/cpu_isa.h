// The instruction set the CPU kernels (NA and MSDeformAttn) run for this machine, with the
// DINAT_M2F_CPU_ISA override that the tests use to run each build.
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <string>

namespace dinat_m2f {
namespace cpu {

enum class Isa { kBaseline, kAvx2, kAvx512 };
struct IsaChoice {
  Isa isa;
  bool asked;  // named by DINAT_M2F_CPU_ISA
};

// AVX-512 on Intel cores that have it (measured faster there; AMD's Zen 4 runs 512-bit
// vectors as two halves and was not measured), else AVX2 + FMA, else the baseline.
// DINAT_M2F_CPU_ISA=baseline, avx2 or avx512 asks for one (a build the machine cannot run
// falls back to the best below it that it can).
inline IsaChoice cpu_isa() {
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 =
      avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  const Isa best = avx512 ? Isa::kAvx512 : avx2 ? Isa::kAvx2 : Isa::kBaseline;
  const char* asked = std::getenv("DINAT_M2F_CPU_ISA");
  if (asked == nullptr || *asked == '\0')
    return {__builtin_cpu_is("intel") ? best : std::min(best, Isa::kAvx2), false};
  const std::string name(asked);
  TORCH_CHECK(name == "baseline" || name == "avx2" || name == "avx512",
              "DINAT_M2F_CPU_ISA must be baseline, avx2 or avx512 (or unset), got '", name, "'");
  const Isa want = name == "avx512" ? Isa::kAvx512 : name == "avx2" ? Isa::kAvx2 : Isa::kBaseline;
  return {std::min(want, best), true};
}

}  // namespace cpu
}  // namespace dinat_m2f
