// Helpers shared by the host code of every op family: the dtype dispatch, shape printing for
// error messages, and optional tensors' data.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <sstream>
#include <string>

namespace dinat_m2f {

// Every kernel runs on float32, float64, float16 and bfloat16 (accumulating in float32 for
// the half types).
#define DINAT_M2F_DISPATCH_FLOATING_TYPES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// "[2, 3, 4]" for a shape, a kernel size or any list of ints.
template <typename Seq>
std::string list_str(const Seq& values) {
  std::ostringstream os;
  os << "[";
  bool first = true;
  for (const auto& v : values) {
    os << (first ? "" : ", ") << v;
    first = false;
  }
  os << "]";
  return os.str();
}

inline std::string shape_str(c10::IntArrayRef shape) {
  return list_str(shape);
}

// Data pointer of an optional tensor (the RPB), or nullptr when it is undefined.
template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

}  // namespace dinat_m2f
