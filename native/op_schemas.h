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

}  // namespace dinat_m2f
