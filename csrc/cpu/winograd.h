// Winograd F(4×4, 3×3) convolution pieces for the CPU (stride 1, zero padding 1), float32, channels-last images.
// The matrix products between the transforms are left to the caller (a batched GEMM per transformed point).
#pragma once

#include <cstdint>

namespace cmrvsr::cpu {

constexpr int kOutputTile = 4;                        // m: output pixels per tile side
constexpr int kInputTile = 6;                         // n = m + 3 - 1: input pixels per tile side
constexpr int kPoints = kInputTile * kInputTile;      // 36 transformed points, one GEMM each

// A channels-last image batch: element (b, c, y, x) at data[b*stride_b + y*stride_y + x*stride_x + c].
struct Image {
  float* data;
  int64_t batch, channels, height, width;
  int64_t stride_b, stride_y, stride_x;
};

// Tiles per image side for an H×W image: ceil(H / 4) × ceil(W / 4); tile t = (b*tiles_y + ty)*tiles_x + tx.
inline int64_t tiles_along(int64_t pixels) { return (pixels + kOutputTile - 1) / kOutputTile; }

// Every function runs on `threads` OpenMP threads (the caller's torch.get_num_threads(): OpenMP's own count is per
// calling thread, and a thread that has not yet run a torch op would otherwise use every core).

// v (36, tiles, channels) contiguous: Bᵀ d B of every 6×6 input tile d (zero outside the image). bt: Bᵀ (6×6).
void input_transform(const Image& x, const float* bt, float* v, int threads);

// out = Aᵀ m A + bias (+ addend, same shape and strides as out, may be null): m (36, tiles, out.channels)
// contiguous, at: Aᵀ (4×6), bias (out.channels). Pixels of edge tiles outside the image are not written.
void output_transform(const float* m, const float* at, const float* bias, const Image& out, const float* addend,
                      int threads);

// The ConvLSTM cell fused with the output transform: gates = Aᵀ m A + bias, m (36, tiles, 4F) in the gate order
// i, f, o, g; c (batch, H, W, F) contiguous float32 becomes f·c + i·g; h = o·tanh(c') is written into h (F
// channels). Nothing of the gates is stored.
void output_lstm_cell(const float* m, const float* at, const float* bias, float* c, const Image& h, int threads);

}  // namespace cmrvsr::cpu
