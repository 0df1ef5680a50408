// CUDA twin of the ConvLSTM step (cmrvsr_fast/ops/convlstm.py): one fused step for D directions.
//
// Two kernels behind one launcher:
// - the scalar twin (any dtype, any F): each block stages a (TILE+2)² halo of h for a chunk of input channels in
//   shared memory and each thread accumulates the four gates of one (hidden channel, pixel) in fp32 registers;
// - the tensor-core kernel (bf16/fp16, F a multiple of 16, sm_80+): the recurrent convolution as an implicit GEMM
//   gates[4·16 channels, 64 pixels] = W[4·16, 9F] · im2col(h)[9F, 64] on WMMA 16×16×16 tiles with fp32
//   accumulation, one warp per gate, so that the four gates of a (channel, pixel) meet in one block's shared
//   memory for the epilogue.
// Both apply the cell update in the epilogue (c in fp32; gates never written to global memory).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include "convlstm.h"
#include "numeric.cuh"

namespace cmrvsr {
namespace {

constexpr int kTile = 16;          // output pixels per block edge
constexpr int kChannelsPerStage = 8;  // input channels staged in shared memory at once
constexpr int kHalo = kTile + 2;

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }

// grid: (tiles_x · tiles_y, ceil(F / hidden_per_block), D · B); block: kTile × kTile threads.
template <typename T>
__global__ void convlstm_step_kernel(const T* __restrict__ h, const T* __restrict__ w, const T* __restrict__ gx,
                                     const float* __restrict__ c, T* __restrict__ h_out, float* __restrict__ c_out,
                                     int batch, int features, int height, int width, int hidden_per_block) {
  __shared__ float patch[kChannelsPerStage][kHalo][kHalo];
  const int tiles_x = (width + kTile - 1) / kTile;
  const int x0 = (blockIdx.x % tiles_x) * kTile, y0 = (blockIdx.x / tiles_x) * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int x = x0 + tx, y = y0 + ty;
  const int db = blockIdx.z, direction = db / batch;
  const long long hw = static_cast<long long>(height) * width;
  const T* h_base = h + static_cast<long long>(db) * features * hw;
  const T* w_base = w + static_cast<long long>(direction) * 4 * features * features * 9;
  const int f_begin = blockIdx.y * hidden_per_block;
  const int f_end = min(f_begin + hidden_per_block, features);

  for (int f = f_begin; f < f_end; ++f) {
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (int k0 = 0; k0 < features; k0 += kChannelsPerStage) {
      __syncthreads();
      for (int i = ty * kTile + tx; i < kChannelsPerStage * kHalo * kHalo; i += kTile * kTile) {
        const int kk = i / (kHalo * kHalo), rest = i % (kHalo * kHalo);
        const int yy = y0 + rest / kHalo - 1, xx = x0 + rest % kHalo - 1, k = k0 + kk;
        const bool inside = k < features && yy >= 0 && yy < height && xx >= 0 && xx < width;
        patch[kk][rest / kHalo][rest % kHalo] = inside ? to_float(h_base[k * hw + yy * width + xx]) : 0.f;
      }
      __syncthreads();
      for (int kk = 0; kk < kChannelsPerStage && k0 + kk < features; ++kk) {
        for (int tap = 0; tap < 9; ++tap) {
          const float v = patch[kk][ty + tap / 3][tx + tap % 3];
#pragma unroll
          for (int gate = 0; gate < 4; ++gate) {
            const long long wi = ((static_cast<long long>(gate) * features + f) * features + k0 + kk) * 9 + tap;
            acc[gate] += v * to_float(w_base[wi]);
          }
        }
      }
    }
    if (x < width && y < height) {
      const long long pixel = static_cast<long long>(y) * width + x;
      const T* gx_base = gx + static_cast<long long>(db) * 4 * features * hw;
      float gate[4];
#pragma unroll
      for (int g = 0; g < 4; ++g) gate[g] = acc[g] + to_float(gx_base[(static_cast<long long>(g) * features + f) * hw + pixel]);
      const long long state = (static_cast<long long>(db) * features + f) * hw + pixel;
      const float c_next = sigmoid(gate[1]) * c[state] + sigmoid(gate[0]) * tanhf(gate[3]);
      c_out[state] = c_next;
      h_out[state] = from_float<T>(sigmoid(gate[2]) * tanhf(c_next));
    }
  }
}

// ---- tensor-core kernel -------------------------------------------------------------------------------------
constexpr int kTcChannels = 16;        // hidden channels per block (the WMMA M of each gate)
constexpr int kTcTileEdge = 8;         // an 8×8 pixel tile: the GEMM's N = 64
constexpr int kTcPixels = kTcTileEdge * kTcTileEdge;
constexpr int kTcK = 16;               // input channels per K step (one tap at a time)
constexpr int kTcThreads = 128;        // four warps: warp g computes gate g

// grid: (tiles_x · tiles_y, F / 16, D · B); block: 128 threads.
template <typename T>
__global__ void __launch_bounds__(kTcThreads) convlstm_step_tc_kernel(
    const T* __restrict__ h, const T* __restrict__ w, const T* __restrict__ gx, const float* __restrict__ c,
    T* __restrict__ h_out, float* __restrict__ c_out, int batch, int features, int height, int width) {
  using namespace nvcuda;
  __shared__ __align__(32) T s_a[4][kTcChannels][kTcK];       // weights of the four gates for one (tap, K chunk)
  __shared__ __align__(32) T s_b[kTcK][kTcPixels];            // the matching im2col slice of h
  __shared__ __align__(32) float s_c[4][kTcChannels][kTcPixels];  // the gate pre-activations of the tile

  const int tiles_x = (width + kTcTileEdge - 1) / kTcTileEdge;
  const int x0 = (blockIdx.x % tiles_x) * kTcTileEdge, y0 = (blockIdx.x / tiles_x) * kTcTileEdge;
  const int f0 = blockIdx.y * kTcChannels;
  const int db = blockIdx.z, direction = db / batch;
  const int warp = threadIdx.x / 32;
  const long long hw = static_cast<long long>(height) * width;
  const T* h_base = h + static_cast<long long>(db) * features * hw;
  const T* w_base = w + static_cast<long long>(direction) * 4 * features * features * 9;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kTcPixels / 16];
#pragma unroll
  for (int n = 0; n < kTcPixels / 16; ++n) wmma::fill_fragment(acc[n], 0.f);

  for (int tap = 0; tap < 9; ++tap) {
    const int dy = tap / 3 - 1, dx = tap % 3 - 1;
    for (int k0 = 0; k0 < features; k0 += kTcK) {
      __syncthreads();  // the previous step's fragments are loaded
      for (int i = threadIdx.x; i < 4 * kTcChannels * kTcK; i += kTcThreads) {
        const int gate = i / (kTcChannels * kTcK), f = (i / kTcK) % kTcChannels, k = i % kTcK;
        const long long row = static_cast<long long>(gate) * features + f0 + f;
        s_a[gate][f][k] = w_base[(row * features + k0 + k) * 9 + tap];
      }
      for (int i = threadIdx.x; i < kTcK * kTcPixels; i += kTcThreads) {
        const int k = i / kTcPixels, pixel = i % kTcPixels;
        const int yy = y0 + pixel / kTcTileEdge + dy, xx = x0 + pixel % kTcTileEdge + dx;
        const bool inside = yy >= 0 && yy < height && xx >= 0 && xx < width;
        s_b[k][pixel] = inside ? h_base[(k0 + k) * hw + static_cast<long long>(yy) * width + xx] : T(0.f);
      }
      __syncthreads();
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
      wmma::load_matrix_sync(a, &s_a[warp][0][0], kTcK);
#pragma unroll
      for (int n = 0; n < kTcPixels / 16; ++n) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
        wmma::load_matrix_sync(b, &s_b[0][n * 16], kTcPixels);
        wmma::mma_sync(acc[n], a, b, acc[n]);
      }
    }
  }
#pragma unroll
  for (int n = 0; n < kTcPixels / 16; ++n) {
    wmma::store_matrix_sync(&s_c[warp][0][n * 16], acc[n], kTcPixels, wmma::mem_row_major);
  }
  __syncthreads();

  const T* gx_base = gx + static_cast<long long>(db) * 4 * features * hw;
  for (int i = threadIdx.x; i < kTcChannels * kTcPixels; i += kTcThreads) {
    const int f = i / kTcPixels, pixel_in_tile = i % kTcPixels;
    const int y = y0 + pixel_in_tile / kTcTileEdge, x = x0 + pixel_in_tile % kTcTileEdge;
    if (y >= height || x >= width) continue;
    const long long pixel = static_cast<long long>(y) * width + x;
    float gate[4];
#pragma unroll
    for (int g = 0; g < 4; ++g) {
      gate[g] = s_c[g][f][pixel_in_tile] +
                to_float(gx_base[(static_cast<long long>(g) * features + f0 + f) * hw + pixel]);
    }
    const long long state = (static_cast<long long>(db) * features + f0 + f) * hw + pixel;
    const float c_next = sigmoid(gate[1]) * c[state] + sigmoid(gate[0]) * tanhf(gate[3]);
    c_out[state] = c_next;
    h_out[state] = from_float<T>(sigmoid(gate[2]) * tanhf(c_next));
  }
}

bool use_tensor_cores(DType dtype, int features) {
  return dtype != DType::kFloat32 && features % kTcChannels == 0;
}

template <typename T>
cudaError_t launch_tensor_cores(std::uintptr_t h, std::uintptr_t w, std::uintptr_t gx, std::uintptr_t c,
                                std::uintptr_t h_out, std::uintptr_t c_out, int directions, int batch, int features,
                                int height, int width, cudaStream_t stream) {
  const int tiles = ((width + kTcTileEdge - 1) / kTcTileEdge) * ((height + kTcTileEdge - 1) / kTcTileEdge);
  dim3 grid(tiles, features / kTcChannels, directions * batch);
  convlstm_step_tc_kernel<T><<<grid, kTcThreads, 0, stream>>>(
      reinterpret_cast<const T*>(h), reinterpret_cast<const T*>(w), reinterpret_cast<const T*>(gx),
      reinterpret_cast<const float*>(c), reinterpret_cast<T*>(h_out), reinterpret_cast<float*>(c_out), batch,
      features, height, width);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch(std::uintptr_t h, std::uintptr_t w, std::uintptr_t gx, std::uintptr_t c, std::uintptr_t h_out,
                   std::uintptr_t c_out, int directions, int batch, int features, int height, int width,
                   cudaStream_t stream) {
  const int hidden_per_block = 8;
  const int tiles = ((width + kTile - 1) / kTile) * ((height + kTile - 1) / kTile);
  dim3 grid(tiles, (features + hidden_per_block - 1) / hidden_per_block, directions * batch);
  dim3 block(kTile, kTile);
  convlstm_step_kernel<T><<<grid, block, 0, stream>>>(
      reinterpret_cast<const T*>(h), reinterpret_cast<const T*>(w), reinterpret_cast<const T*>(gx),
      reinterpret_cast<const float*>(c), reinterpret_cast<T*>(h_out), reinterpret_cast<float*>(c_out), batch,
      features, height, width, hidden_per_block);
  return cudaGetLastError();
}

}  // namespace

std::string convlstm_step_launch(DType dtype, std::uintptr_t h, std::uintptr_t w, std::uintptr_t gx, std::uintptr_t c,
                                 std::uintptr_t h_out, std::uintptr_t c_out, int directions, int batch, int features,
                                 int height, int width, std::uintptr_t stream) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  cudaError_t error = cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32:
      error = launch<float>(h, w, gx, c, h_out, c_out, directions, batch, features, height, width, s);
      break;
    case DType::kBFloat16:
      error = use_tensor_cores(dtype, features)
                  ? launch_tensor_cores<__nv_bfloat16>(h, w, gx, c, h_out, c_out, directions, batch, features,
                                                        height, width, s)
                  : launch<__nv_bfloat16>(h, w, gx, c, h_out, c_out, directions, batch, features, height, width, s);
      break;
    case DType::kFloat16:
      error = use_tensor_cores(dtype, features)
                  ? launch_tensor_cores<__half>(h, w, gx, c, h_out, c_out, directions, batch, features, height,
                                                width, s)
                  : launch<__half>(h, w, gx, c, h_out, c_out, directions, batch, features, height, width, s);
      break;
  }
  return error == cudaSuccess ? std::string() : std::string(cudaGetErrorString(error));
}

std::string convlstm_step_kernel_name(DType dtype, int features) {
  return use_tensor_cores(dtype, features) ? "tensor-core (WMMA 16x16x16, fp32 accumulation)" : "scalar (fp32 FMA)";
}

}  // namespace cmrvsr
