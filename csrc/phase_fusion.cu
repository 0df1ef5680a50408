// CUDA twin of kernels/phase_fusion.py: the window-decomposed fusion without the window·(2F+1)-channel concat.
//
// Correctness version, the same scheme as convlstm.cu: each block stages a (TILE+2)² halo of one window frame's
// input channels, a chunk at a time, in shared memory; each thread accumulates the outputs of one pixel for a
// group of output channels in fp32 registers over every window offset, adds the phase term (code × map) and
// the bias, and the residual in the epilogue. No tensor cores yet.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "numeric.cuh"
#include "phase_fusion.h"

namespace cmrvsr {
namespace {

constexpr int kTile = 16;
constexpr int kChannelsPerStage = 8;
constexpr int kHalo = kTile + 2;
constexpr int kOutsPerThread = 4;  // output channels accumulated together (reuse of each staged input value)

// grid: (tiles_x · tiles_y, ceil(O / kOutsPerThread), P · B); block: kTile × kTile threads.
template <typename T>
__global__ void window_conv3x3_kernel(const T* __restrict__ x, const int* __restrict__ frame,
                                      const T* __restrict__ w, const float* __restrict__ bias,
                                      const float* __restrict__ codes, const float* __restrict__ maps,
                                      const T* __restrict__ residual, T* __restrict__ out, int window, int batch,
                                      int in_channels, int out_channels, int height, int width) {
  __shared__ float patch[kChannelsPerStage][kHalo][kHalo];
  const int tiles_x = (width + kTile - 1) / kTile;
  const int x0 = (blockIdx.x % tiles_x) * kTile, y0 = (blockIdx.x / tiles_x) * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int px = x0 + tx, py = y0 + ty;
  const int p = blockIdx.z / batch, b = blockIdx.z % batch;
  const int o0 = blockIdx.y * kOutsPerThread;
  const long long hw = static_cast<long long>(height) * width;
  const bool inside_image = px < width && py < height;
  const long long pixel = static_cast<long long>(py) * width + px;

  float acc[kOutsPerThread];
#pragma unroll
  for (int k = 0; k < kOutsPerThread; ++k) acc[k] = o0 + k < out_channels ? bias[o0 + k] : 0.f;

  for (int d = 0; d < window; ++d) {
    const int j = frame[p * window + d];
    if (j < 0) continue;  // outside the sequence: zero padding in time (uniform across the block)
    const T* x_base = x + (static_cast<long long>(j) * batch + b) * in_channels * hw;
    const T* w_base = w + static_cast<long long>(d) * out_channels * in_channels * 9;
    for (int c0 = 0; c0 < in_channels; c0 += kChannelsPerStage) {
      __syncthreads();
      for (int i = ty * kTile + tx; i < kChannelsPerStage * kHalo * kHalo; i += kTile * kTile) {
        const int cc = i / (kHalo * kHalo), rest = i % (kHalo * kHalo);
        const int yy = y0 + rest / kHalo - 1, xx = x0 + rest % kHalo - 1, c = c0 + cc;
        const bool inside = c < in_channels && yy >= 0 && yy < height && xx >= 0 && xx < width;
        patch[cc][rest / kHalo][rest % kHalo] = inside ? to_float(x_base[c * hw + yy * width + xx]) : 0.f;
      }
      __syncthreads();
      for (int cc = 0; cc < kChannelsPerStage && c0 + cc < in_channels; ++cc) {
        for (int tap = 0; tap < 9; ++tap) {
          const float v = patch[cc][ty + tap / 3][tx + tap % 3];
#pragma unroll
          for (int k = 0; k < kOutsPerThread; ++k) {
            if (o0 + k < out_channels) {
              acc[k] += v * to_float(w_base[((static_cast<long long>(o0 + k) * in_channels) + c0 + cc) * 9 + tap]);
            }
          }
        }
      }
    }
    if (codes != nullptr && inside_image) {
      const float code = codes[static_cast<long long>(j) * batch + b];
#pragma unroll
      for (int k = 0; k < kOutsPerThread; ++k) {
        if (o0 + k < out_channels) acc[k] += code * maps[(static_cast<long long>(d) * out_channels + o0 + k) * hw + pixel];
      }
    }
  }
  if (!inside_image) return;
  const long long out_base = (static_cast<long long>(p) * batch + b) * out_channels * hw + pixel;
#pragma unroll
  for (int k = 0; k < kOutsPerThread; ++k) {
    if (o0 + k >= out_channels) continue;
    const long long at = out_base + static_cast<long long>(o0 + k) * hw;
    float value = acc[k];
    if (residual != nullptr) value += to_float(residual[at]);
    out[at] = from_float<T>(value);
  }
}

template <typename T>
cudaError_t launch(std::uintptr_t x, std::uintptr_t frame, std::uintptr_t w, std::uintptr_t bias, std::uintptr_t codes,
                   std::uintptr_t maps, std::uintptr_t residual, std::uintptr_t out, int positions, int window,
                   int batch, int in_channels, int out_channels, int height, int width, cudaStream_t stream) {
  const int tiles = ((width + kTile - 1) / kTile) * ((height + kTile - 1) / kTile);
  dim3 grid(tiles, (out_channels + kOutsPerThread - 1) / kOutsPerThread, positions * batch);
  dim3 block(kTile, kTile);
  window_conv3x3_kernel<T><<<grid, block, 0, stream>>>(
      reinterpret_cast<const T*>(x), reinterpret_cast<const int*>(frame), reinterpret_cast<const T*>(w),
      reinterpret_cast<const float*>(bias), reinterpret_cast<const float*>(codes),
      reinterpret_cast<const float*>(maps), reinterpret_cast<const T*>(residual), reinterpret_cast<T*>(out), window,
      batch, in_channels, out_channels, height, width);
  return cudaGetLastError();
}

}  // namespace

std::string window_conv3x3_launch(DType dtype, std::uintptr_t x, std::uintptr_t frame, std::uintptr_t w,
                                  std::uintptr_t bias, std::uintptr_t codes, std::uintptr_t maps,
                                  std::uintptr_t residual, std::uintptr_t out, int positions, int window, int batch,
                                  int in_channels, int out_channels, int height, int width, std::uintptr_t stream) {
  if (positions == 0 || batch == 0) return std::string();
  auto s = reinterpret_cast<cudaStream_t>(stream);
  cudaError_t error = cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32:
      error = launch<float>(x, frame, w, bias, codes, maps, residual, out, positions, window, batch, in_channels,
                            out_channels, height, width, s);
      break;
    case DType::kBFloat16:
      error = launch<__nv_bfloat16>(x, frame, w, bias, codes, maps, residual, out, positions, window, batch,
                                    in_channels, out_channels, height, width, s);
      break;
    case DType::kFloat16:
      error = launch<__half>(x, frame, w, bias, codes, maps, residual, out, positions, window, batch, in_channels,
                             out_channels, height, width, s);
      break;
  }
  return error == cudaSuccess ? std::string() : std::string(cudaGetErrorString(error));
}

}  // namespace cmrvsr
