// CUDA twin of the window op (cmrvsr_fast/ops/phase_fusion.py): the window-decomposed fusion without the
// window·(2F+1)-channel concat.
//
// Two kernels behind one launcher, as in convlstm.cu:
// - the scalar twin (any dtype): each block stages a (TILE+2)² halo of one window frame's input channels, a chunk
//   at a time, in shared memory; each thread accumulates the outputs of one pixel for a group of output channels
//   in fp32 registers over every window offset;
// - the tensor-core kernel (bf16/fp16): out[64 channels, 64 pixels] = Σ_d Σ_tap W[d, tap][64, C] · x_shifted[C, 64]
//   on WMMA 16×16×16 tiles with fp32 accumulation, four warps of 16 output channels each; partial channel tiles
//   (the 2F+1 = 129 outputs of the fusion, the 129 inputs of the projection) are zero-filled in shared memory.
// Both add the phase term (code × map), the bias and the residual in the epilogue.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

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

// ---- tensor-core kernel -------------------------------------------------------------------------------------
constexpr int kTcOuts = 64;          // output channels per block: four warps × 16
constexpr int kTcTileEdge = 8;       // an 8×8 pixel tile: N = 64
constexpr int kTcPixels = kTcTileEdge * kTcTileEdge;
constexpr int kTcK = 16;             // input channels per K step (one window offset and tap at a time)
constexpr int kTcThreads = 128;

// grid: (tiles_x · tiles_y, ceil(O / 64), P · B); block: 128 threads.
template <typename T>
__global__ void __launch_bounds__(kTcThreads) window_conv3x3_tc_kernel(
    const T* __restrict__ x, const int* __restrict__ frame, const T* __restrict__ w, const float* __restrict__ bias,
    const float* __restrict__ codes, const float* __restrict__ maps, const T* __restrict__ residual,
    T* __restrict__ out, int window, int batch, int in_channels, int out_channels, int height, int width) {
  using namespace nvcuda;
  __shared__ __align__(32) T s_a[kTcOuts][kTcK];
  __shared__ __align__(32) T s_b[kTcK][kTcPixels];
  __shared__ __align__(32) float s_c[kTcOuts][kTcPixels];

  const int tiles_x = (width + kTcTileEdge - 1) / kTcTileEdge;
  const int x0 = (blockIdx.x % tiles_x) * kTcTileEdge, y0 = (blockIdx.x / tiles_x) * kTcTileEdge;
  const int o0 = blockIdx.y * kTcOuts;
  const int p = blockIdx.z / batch, b = blockIdx.z % batch;
  const int warp = threadIdx.x / 32;
  const long long hw = static_cast<long long>(height) * width;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kTcPixels / 16];
#pragma unroll
  for (int n = 0; n < kTcPixels / 16; ++n) wmma::fill_fragment(acc[n], 0.f);

  for (int d = 0; d < window; ++d) {
    const int j = frame[p * window + d];
    if (j < 0) continue;  // zero padding in time (uniform across the block)
    const T* x_base = x + (static_cast<long long>(j) * batch + b) * in_channels * hw;
    const T* w_base = w + static_cast<long long>(d) * out_channels * in_channels * 9;
    for (int tap = 0; tap < 9; ++tap) {
      const int dy = tap / 3 - 1, dx = tap % 3 - 1;
      for (int c0 = 0; c0 < in_channels; c0 += kTcK) {
        __syncthreads();
        for (int i = threadIdx.x; i < kTcOuts * kTcK; i += kTcThreads) {
          const int o = o0 + i / kTcK, c = c0 + i % kTcK;
          const bool inside = o < out_channels && c < in_channels;
          s_a[i / kTcK][i % kTcK] =
              inside ? w_base[(static_cast<long long>(o) * in_channels + c) * 9 + tap] : from_float<T>(0.f);
        }
        for (int i = threadIdx.x; i < kTcK * kTcPixels; i += kTcThreads) {
          const int c = c0 + i / kTcPixels, pixel = i % kTcPixels;
          const int yy = y0 + pixel / kTcTileEdge + dy, xx = x0 + pixel % kTcTileEdge + dx;
          const bool inside = c < in_channels && yy >= 0 && yy < height && xx >= 0 && xx < width;
          s_b[i / kTcPixels][pixel] =
              inside ? x_base[c * hw + static_cast<long long>(yy) * width + xx] : from_float<T>(0.f);
        }
        __syncthreads();
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, &s_a[warp * 16][0], kTcK);
#pragma unroll
        for (int n = 0; n < kTcPixels / 16; ++n) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> bf;
          wmma::load_matrix_sync(bf, &s_b[0][n * 16], kTcPixels);
          wmma::mma_sync(acc[n], a, bf, acc[n]);
        }
      }
    }
  }
#pragma unroll
  for (int n = 0; n < kTcPixels / 16; ++n) {
    wmma::store_matrix_sync(&s_c[warp * 16][n * 16], acc[n], kTcPixels, wmma::mem_row_major);
  }
  __syncthreads();

  for (int i = threadIdx.x; i < kTcOuts * kTcPixels; i += kTcThreads) {
    const int o = o0 + i / kTcPixels, pixel_in_tile = i % kTcPixels;
    const int y = y0 + pixel_in_tile / kTcTileEdge, xq = x0 + pixel_in_tile % kTcTileEdge;
    if (o >= out_channels || y >= height || xq >= width) continue;
    const long long pixel = static_cast<long long>(y) * width + xq;
    float value = s_c[i / kTcPixels][pixel_in_tile] + bias[o];
    if (codes != nullptr) {
      for (int d = 0; d < window; ++d) {
        const int j = frame[p * window + d];
        if (j < 0) continue;
        value += codes[static_cast<long long>(j) * batch + b] *
                 maps[(static_cast<long long>(d) * out_channels + o) * hw + pixel];
      }
    }
    const long long at =
        ((static_cast<long long>(p) * batch + b) * out_channels + o) * hw + pixel;
    if (residual != nullptr) value += to_float(residual[at]);
    out[at] = from_float<T>(value);
  }
}

template <typename T>
cudaError_t launch_tensor_cores(std::uintptr_t x, std::uintptr_t frame, std::uintptr_t w, std::uintptr_t bias,
                                std::uintptr_t codes, std::uintptr_t maps, std::uintptr_t residual,
                                std::uintptr_t out, int positions, int window, int batch, int in_channels,
                                int out_channels, int height, int width, cudaStream_t stream) {
  const int tiles = ((width + kTcTileEdge - 1) / kTcTileEdge) * ((height + kTcTileEdge - 1) / kTcTileEdge);
  dim3 grid(tiles, (out_channels + kTcOuts - 1) / kTcOuts, positions * batch);
  window_conv3x3_tc_kernel<T><<<grid, kTcThreads, 0, stream>>>(
      reinterpret_cast<const T*>(x), reinterpret_cast<const int*>(frame), reinterpret_cast<const T*>(w),
      reinterpret_cast<const float*>(bias), reinterpret_cast<const float*>(codes),
      reinterpret_cast<const float*>(maps), reinterpret_cast<const T*>(residual), reinterpret_cast<T*>(out), window,
      batch, in_channels, out_channels, height, width);
  return cudaGetLastError();
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
      error = launch_tensor_cores<__nv_bfloat16>(x, frame, w, bias, codes, maps, residual, out, positions, window,
                                                 batch, in_channels, out_channels, height, width, s);
      break;
    case DType::kFloat16:
      error = launch_tensor_cores<__half>(x, frame, w, bias, codes, maps, residual, out, positions, window, batch,
                                          in_channels, out_channels, height, width, s);
      break;
  }
  return error == cudaSuccess ? std::string() : std::string(cudaGetErrorString(error));
}

}  // namespace cmrvsr
