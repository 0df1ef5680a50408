// Winograd F(4×4, 3×3) transforms for the CPU (winograd.h). Each transform runs its rows of tiles in parallel
// (OpenMP: the same runtime as PyTorch's, on the threads the caller names) and vectorises over channels,
// which are contiguous in the channels-last images and in the transformed tiles. The per-row workers are compiled
// for AVX-512, AVX2 and a baseline, the best one picked when the library loads (the OpenMP region itself is not
// cloned, so it only dispatches).
#include "winograd.h"

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define CMRVSR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CMRVSR_CLONES
#endif

namespace cmrvsr::cpu {
namespace {

constexpr int64_t kBlock = 64;  // channels per pass over a tile: the tile's 36 points × 64 floats stay in L1

// e^x to about 2 ulp (Cephes' polynomial), in arithmetic a compiler vectorises: the library exp is a call.
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  const float magic = 12582912.0f;  // 1.5 · 2²³: adding and subtracting it rounds to the nearest integer
  const float n = (x * 1.44269504088896341f + magic) - magic;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2ⁿ; n ∈ [−126, 127] after the clamp
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

inline float tanh_approx(float x) {
  const float e = exp_approx(-2.0f * x);
  return (1.0f - e) / (1.0f + e);
}

// out[c] += w · src[c] over a block of channels; nothing for w = 0 (half the transforms' entries are zeros).
__attribute__((always_inline)) inline void add_scaled(float* out, float w, const float* src, int64_t cb) {
  if (w == 0.0f) return;
  for (int64_t c = 0; c < cb; ++c) out[c] += w * src[c];
}

inline bool inside(int64_t y, int64_t x, const Image& image) {
  return y >= 0 && y < image.height && x >= 0 && x < image.width;
}

// Every tile of row ty of image b: d (6×6 pixels, zero outside), v = Bᵀ d B.
CMRVSR_CLONES void input_row(const Image& x, const float* bt, float* v, int64_t b, int64_t ty, int64_t tiles) {
  alignas(64) float d[kPoints][kBlock];
  alignas(64) float t[kPoints][kBlock];
  alignas(64) float acc[kBlock];
  const int64_t tiles_x = tiles_along(x.width), channels = x.channels;
  for (int64_t tx = 0; tx < tiles_x; ++tx) {
    const int64_t tile = (b * tiles_along(x.height) + ty) * tiles_x + tx;
    for (int64_t c0 = 0; c0 < channels; c0 += kBlock) {
      const int64_t cb = std::min(kBlock, channels - c0);
      for (int i = 0; i < kInputTile; ++i) {
        const int64_t y = ty * kOutputTile - 1 + i;
        for (int j = 0; j < kInputTile; ++j) {
          const int64_t xx = tx * kOutputTile - 1 + j;
          float* dst = d[i * kInputTile + j];
          if (!inside(y, xx, x)) {
            for (int64_t c = 0; c < cb; ++c) dst[c] = 0.0f;
            continue;
          }
          const float* src = x.data + b * x.stride_b + y * x.stride_y + xx * x.stride_x + c0;
          for (int64_t c = 0; c < cb; ++c) dst[c] = src[c];
        }
      }
      for (int i = 0; i < kInputTile; ++i) {  // t = Bᵀ d: along y
        for (int j = 0; j < kInputTile; ++j) {
          float* out = t[i * kInputTile + j];
          for (int64_t c = 0; c < cb; ++c) out[c] = 0.0f;
          for (int l = 0; l < kInputTile; ++l) add_scaled(out, bt[i * kInputTile + l], d[l * kInputTile + j], cb);
        }
      }
      for (int i = 0; i < kInputTile; ++i) {  // v = t B: along x
        for (int j = 0; j < kInputTile; ++j) {
          for (int64_t c = 0; c < cb; ++c) acc[c] = 0.0f;
          for (int l = 0; l < kInputTile; ++l) add_scaled(acc, bt[j * kInputTile + l], t[i * kInputTile + l], cb);
          float* out = v + ((i * kInputTile + j) * tiles + tile) * channels + c0;
          for (int64_t c = 0; c < cb; ++c) out[c] = acc[c];
        }
      }
    }
  }
}

// y (16 pixels × channels c0 … c0 + cb − 1, row stride ld) = Aᵀ m A + bias for one tile.
__attribute__((always_inline)) inline void output_tile(const float* m, const float* at, const float* bias,
                                                       int64_t tiles, int64_t channels, int64_t tile, int64_t c0,
                                                       int64_t cb, float* y, int64_t ld) {
  alignas(64) float t[kOutputTile * kInputTile][kBlock];
  for (int i = 0; i < kOutputTile; ++i) {  // t = Aᵀ m: along y
    for (int j = 0; j < kInputTile; ++j) {
      float* out = t[i * kInputTile + j];
      for (int64_t c = 0; c < cb; ++c) out[c] = 0.0f;
      for (int l = 0; l < kInputTile; ++l) {
        add_scaled(out, at[i * kInputTile + l], m + ((l * kInputTile + j) * tiles + tile) * channels + c0, cb);
      }
    }
  }
  for (int i = 0; i < kOutputTile; ++i) {  // y = t A + bias: along x
    for (int j = 0; j < kOutputTile; ++j) {
      float* out = y + (i * kOutputTile + j) * ld;
      for (int64_t c = 0; c < cb; ++c) out[c] = bias[c0 + c];
      for (int l = 0; l < kInputTile; ++l) add_scaled(out, at[j * kInputTile + l], t[i * kInputTile + l], cb);
    }
  }
}

CMRVSR_CLONES void output_row(const float* m, const float* at, const float* bias, const Image& out,
                              const float* addend, int64_t b, int64_t ty, int64_t tiles) {
  alignas(64) float y[kOutputTile * kOutputTile][kBlock];
  const int64_t tiles_x = tiles_along(out.width), channels = out.channels;
  for (int64_t tx = 0; tx < tiles_x; ++tx) {
    const int64_t tile = (b * tiles_along(out.height) + ty) * tiles_x + tx;
    for (int64_t c0 = 0; c0 < channels; c0 += kBlock) {
      const int64_t cb = std::min(kBlock, channels - c0);
      output_tile(m, at, bias, tiles, channels, tile, c0, cb, y[0], kBlock);
      for (int p = 0; p < kOutputTile * kOutputTile; ++p) {
        const int64_t py = ty * kOutputTile + p / kOutputTile, px = tx * kOutputTile + p % kOutputTile;
        if (!inside(py, px, out)) continue;
        const int64_t offset = b * out.stride_b + py * out.stride_y + px * out.stride_x + c0;
        float* dst = out.data + offset;
        if (addend != nullptr) {
          const float* add = addend + offset;
          for (int64_t c = 0; c < cb; ++c) dst[c] = y[p][c] + add[c];
        } else {
          for (int64_t c = 0; c < cb; ++c) dst[c] = y[p][c];
        }
      }
    }
  }
}

CMRVSR_CLONES void lstm_row(const float* m, const float* at, const float* bias, float* c_state, const Image& h,
                            float* gates, int64_t b, int64_t ty, int64_t tiles) {
  const int64_t features = h.channels, width = 4 * features, tiles_x = tiles_along(h.width);
  for (int64_t tx = 0; tx < tiles_x; ++tx) {
    const int64_t tile = (b * tiles_along(h.height) + ty) * tiles_x + tx;
    for (int64_t c0 = 0; c0 < width; c0 += kBlock) {
      output_tile(m, at, bias, tiles, width, tile, c0, std::min(kBlock, width - c0), gates + c0, width);
    }
    for (int p = 0; p < kOutputTile * kOutputTile; ++p) {
      const int64_t py = ty * kOutputTile + p / kOutputTile, px = tx * kOutputTile + p % kOutputTile;
      if (!inside(py, px, h)) continue;
      const float* g = gates + p * width;
      float* c = c_state + ((b * h.height + py) * h.width + px) * features;
      float* out = h.data + b * h.stride_b + py * h.stride_y + px * h.stride_x;
      for (int64_t j = 0; j < features; ++j) {
        const float in = sigmoid(g[j]), forget = sigmoid(g[features + j]);
        const float o = sigmoid(g[2 * features + j]), cand = tanh_approx(g[3 * features + j]);
        const float next = forget * c[j] + in * cand;
        c[j] = next;
        out[j] = o * tanh_approx(next);
      }
    }
  }
}

}  // namespace

void input_transform(const Image& x, const float* bt, float* v, int threads) {
  const int64_t rows = tiles_along(x.height), tiles = x.batch * rows * tiles_along(x.width);
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
  for (int64_t b = 0; b < x.batch; ++b)
    for (int64_t ty = 0; ty < rows; ++ty) input_row(x, bt, v, b, ty, tiles);
}

void output_transform(const float* m, const float* at, const float* bias, const Image& out, const float* addend,
                      int threads) {
  const int64_t rows = tiles_along(out.height), tiles = out.batch * rows * tiles_along(out.width);
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
  for (int64_t b = 0; b < out.batch; ++b)
    for (int64_t ty = 0; ty < rows; ++ty) output_row(m, at, bias, out, addend, b, ty, tiles);
}

void output_lstm_cell(const float* m, const float* at, const float* bias, float* c, const Image& h, int threads) {
  const int64_t rows = tiles_along(h.height), tiles = h.batch * rows * tiles_along(h.width);
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> gates(kOutputTile * kOutputTile * 4 * h.channels);  // one tile's gates, per thread
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < h.batch; ++b)
      for (int64_t ty = 0; ty < rows; ++ty) lstm_row(m, at, bias, c, h, gates.data(), b, ty, tiles);
  }
}

}  // namespace cmrvsr::cpu
