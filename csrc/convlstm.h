#pragma once
#include <cstdint>
#include <string>

namespace cmrvsr {

// dtype codes shared with Python (cmrvsr_fast/ops/extension.py): 0 float32, 1 bfloat16, 2 float16.
enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// One ConvLSTM step of D directions (see cmrvsr_fast/ops/convlstm.py, convlstm_step_ref, for the maths and layouts):
// h (D, B, F, H, W), w (D, 4F, F, 3, 3), gx (D, B, 4F, H, W) in `dtype`; c (D, B, F, H, W) float32;
// writes h_out (dtype) and c_out (float32). Pointers are device pointers; `stream` is a cudaStream_t.
// Returns "" on success, else the CUDA error string.
std::string convlstm_step_launch(DType dtype, std::uintptr_t h, std::uintptr_t w, std::uintptr_t gx, std::uintptr_t c,
                                 std::uintptr_t h_out, std::uintptr_t c_out, int directions, int batch, int features,
                                 int height, int width, std::uintptr_t stream);

// Which kernel convlstm_step_launch runs for this dtype and width (bf16/fp16 with F % 16 == 0: tensor cores).
std::string convlstm_step_kernel_name(DType dtype, int features);

}  // namespace cmrvsr
