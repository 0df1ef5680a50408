#pragma once
#include <cstdint>
#include <string>

#include "convlstm.h"  // DType

namespace cmrvsr {

// The window-decomposed phase fusion (see cmrvsr_fast/ops/phase_fusion.py for the maths):
//   out[p] = bias + Σ_d [conv3×3(x[frame[p, d]], w[d]) + codes[frame[p, d]] · maps[d]] (+ residual[p]),
// offsets whose frame index is −1 skipped. Layouts: x (N, B, C, H, W), w (window, O, C, 3, 3), residual and out
// (P, B, O, H, W) in `dtype`; frame (P, window) int32; bias (O), codes (N, B) and maps (window, O, H, W) float32.
// codes/maps and residual may be 0 (absent). Device pointers; `stream` is a cudaStream_t. Returns "" or the error.
std::string window_conv3x3_launch(DType dtype, std::uintptr_t x, std::uintptr_t frame, std::uintptr_t w,
                                  std::uintptr_t bias, std::uintptr_t codes, std::uintptr_t maps,
                                  std::uintptr_t residual, std::uintptr_t out, int positions, int window, int batch,
                                  int in_channels, int out_channels, int height, int width, std::uintptr_t stream);

}  // namespace cmrvsr
