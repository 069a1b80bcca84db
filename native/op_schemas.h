// The schemas of the ops users call, written once: neighborhood attention
// (native/na/na_ops.h) and multi-scale deformable attention
// (native/ms_deform_attn/ms_deform_attn_ops.h). The package's library dinat_m2f
// (native/library.cpp) defines them, and so does the test extension's library
// (native/testing/library.cpp), whose kernels are the CUDA ones run on the emulated device.
#pragma once

namespace dinat_m2f {

inline constexpr const char* kOpSchemas[] = {
    "na_qk(Tensor query, Tensor key, Tensor? rpb, int[] kernel_size, int[] dilation) -> Tensor",
    "na_av(Tensor attn, Tensor value, int[] kernel_size, int[] dilation) -> Tensor",
    "na_qk_backward(Tensor grad_attn, Tensor query, Tensor key, int[] kernel_size, "
    "int[] dilation) -> (Tensor, Tensor)",
    "na_av_backward(Tensor grad_out, Tensor attn, Tensor value, int[] kernel_size, "
    "int[] dilation) -> (Tensor, Tensor)",
    "na_rpb_backward(Tensor grad_attn, int[] kernel_size, int[] dilation) -> Tensor",
    "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
    "Tensor sampling_locations, Tensor attention_weights) -> Tensor",
    "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
    "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
    "-> (Tensor, Tensor, Tensor)",
};

// Fused NA, CPU only (native/na/na_cpu_fused.cpp; CUDA tensors take the Triton kernels of
// dinat_m2f/ops/na/fused.py, whose ops have the same signatures): out and the log2-sum-exp
// per query, and the backward from them. Only dinat_m2f defines them: the test library's
// emulated device runs the CUDA kernels, which have no such op.
inline constexpr const char* kCpuOnlySchemas[] = {
    "na_fused(Tensor query, Tensor key, Tensor value, Tensor? rpb, int[] kernel_size, "
    "int[] dilation, float scale) -> (Tensor, Tensor)",
    "na_fused_backward(Tensor grad_out, Tensor query, Tensor key, Tensor value, Tensor? rpb, "
    "Tensor out, Tensor lse, int[] kernel_size, int[] dilation, float scale) "
    "-> (Tensor, Tensor, Tensor, Tensor)",
};

}  // namespace dinat_m2f
