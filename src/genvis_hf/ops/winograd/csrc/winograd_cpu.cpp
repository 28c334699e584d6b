// Winograd F(4x4, 3x3) convolution for CPU inference: a 3x3, stride-1, padding-1 convolution over a
// channels-last float32 map as (input transform) -> 36 matrix products -> (output transform).
//
// Every 4x4 block ("tile") of outputs needs a 6x6 window of the input. With d that window, g a 3x3 filter and
// B^T [6, 6], G [6, 3], A^T [4, 6] the Toom-Cook matrices, the tile is
//     Y = A^T [ (G g G^T) (*) (B^T d B) ] A          ((*) element-wise over the 6x6 = 36 positions)
// and summing over input channels turns the element-wise products into 36 independent matrix products
//     M[k] = V[k] [tiles, C_in] x U[k] [C_in, C_out],   V[k] = (B^T d B)[k],  U[k] = (G g G^T)[k].
// That is 36 * C_in * C_out multiply-adds per 16 outputs instead of 144: 4x less arithmetic, done by ATen's
// batched GEMM (MKL / oneDNN), while the two transforms here are additions and scalings over contiguous
// channel vectors (vectorised by the compiler; memory-bound).
//
// Interpolation points 0, -1, 1, 1/2, -2 (and infinity), not the common 0, +-1, +-2: the same cost, with a max
// error ~3x smaller in float32 (Barabasz et al., "Error analysis and improving the accuracy of Winograd
// convolution for deep neural networks", 2020; measured here: 3.3e-5 vs 9.5e-5 on outputs of magnitude 6.5, 256
// channels). U is computed by the caller in float64 (`winograd.py`), so the filter transform adds no error.
//
// Shapes: x [N, C, H, W] channels-last; transformed_weight [36, C, K] contiguous; bias [K] or undefined;
// output [N, K, H, W] channels-last, relu(conv(x) + bias) when `relu`.
#include "winograd.h"

#include "avx512.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace genvis_winograd {
namespace {

constexpr int kTile = 4;                  // outputs per tile side
constexpr int kWindow = kTile + 2;        // inputs per tile side (3x3 filter)
constexpr int kPositions = kWindow * kWindow;  // 36 transformed positions
constexpr int kBlock = 16;                // channels per step (two AVX2 vectors); a remainder runs one at a time

// o[k * so] = (B^T d)[k] for the six vectors d[i * si], each `W` channels wide.
template <int W>
inline void input_rows(const float (*d)[W], float (*o)[W], int si, int so) {
  for (int c = 0; c < W; ++c) {
    const float d0 = d[0][c], d1 = d[si][c], d2 = d[2 * si][c], d3 = d[3 * si][c], d4 = d[4 * si][c],
                d5 = d[5 * si][c];
    o[0][c] = d0 - 1.5f * d1 - 2.f * d2 + 1.5f * d3 + d4;
    o[so][c] = d1 - 2.5f * d2 + 0.5f * d3 + d4;
    o[2 * so][c] = -d1 + 0.5f * d2 + 2.5f * d3 + d4;
    o[3 * so][c] = -2.f * d1 - d2 + 2.f * d3 + d4;
    o[4 * so][c] = 0.5f * d1 - d2 - 0.5f * d3 + d4;
    o[5 * so][c] = d1 - 1.5f * d2 - 2.f * d3 + 1.5f * d4 + d5;
  }
}

// o[k * so] = (A^T m)[k], k < 4, for the six vectors m[i * si].
template <int W>
inline void output_rows(const float (*m)[W], float (*o)[W], int si, int so) {
  for (int c = 0; c < W; ++c) {
    const float m0 = m[0][c], m1 = m[si][c], m2 = m[2 * si][c], m3 = m[3 * si][c], m4 = m[4 * si][c],
                m5 = m[5 * si][c];
    const float sum12 = m1 + m2, diff21 = m2 - m1;
    o[0][c] = m0 + sum12 + m3 + m4;
    o[so][c] = diff21 + 0.5f * m3 - 2.f * m4;
    o[2 * so][c] = sum12 + 0.25f * m3 + 4.f * m4;
    o[3 * so][c] = diff21 + 0.125f * m3 - 8.f * m4 + m5;
  }
}

struct Geometry {
  int64_t height, width, tiles_y, tiles_x, tiles;
};

// V[k, tile, c0:c0+W] for one tile: its 6x6 window (zero outside the map), rows then columns transformed.
template <int W>
inline void transform_input_tile(const float* x, float* v, const Geometry& g, int64_t channels, int64_t tile,
                                 int64_t c0) {
  alignas(64) float window[kPositions][W];
  alignas(64) float rows[kPositions][W];
  alignas(64) float result[kPositions][W];
  const int64_t b = tile / (g.tiles_y * g.tiles_x), rest = tile % (g.tiles_y * g.tiles_x);
  const int64_t y0 = (rest / g.tiles_x) * kTile - 1, x0 = (rest % g.tiles_x) * kTile - 1;
  for (int i = 0; i < kWindow; ++i) {
    const int64_t yy = y0 + i;
    for (int j = 0; j < kWindow; ++j) {
      const int64_t xx = x0 + j;
      float* dst = window[i * kWindow + j];
      if (yy >= 0 && yy < g.height && xx >= 0 && xx < g.width) {
        const float* src = x + ((b * g.height + yy) * g.width + xx) * channels + c0;
        for (int c = 0; c < W; ++c) dst[c] = src[c];
      } else {
        for (int c = 0; c < W; ++c) dst[c] = 0.f;
      }
    }
  }
  for (int j = 0; j < kWindow; ++j) input_rows<W>(window + j, rows + j, kWindow, kWindow);     // B^T d
  for (int i = 0; i < kWindow; ++i) input_rows<W>(rows + i * kWindow, result + i * kWindow, 1, 1);  // (B^T d) B
  for (int k = 0; k < kPositions; ++k) {
    float* dst = v + (k * g.tiles + tile) * channels + c0;
    for (int c = 0; c < W; ++c) dst[c] = result[k][c];
  }
}

// out[b, y, x, c0:c0+W] for the tile's 4x4 outputs inside the map, from M[k, tile, c0:c0+W].
template <int W>
inline void transform_output_tile(const float* m, float* out, const float* bias, bool relu, const Geometry& g,
                                  int64_t channels, int64_t tile, int64_t c0) {
  alignas(64) float products[kPositions][W];
  alignas(64) float rows[kTile * kWindow][W];
  alignas(64) float result[kTile * kTile][W];
  for (int k = 0; k < kPositions; ++k) {
    const float* src = m + (k * g.tiles + tile) * channels + c0;
    for (int c = 0; c < W; ++c) products[k][c] = src[c];
  }
  for (int j = 0; j < kWindow; ++j) output_rows<W>(products + j, rows + j, kWindow, kWindow);  // A^T m: [4, 6]
  for (int i = 0; i < kTile; ++i) output_rows<W>(rows + i * kWindow, result + i * kTile, 1, 1);  // (A^T m) A
  const int64_t b = tile / (g.tiles_y * g.tiles_x), rest = tile % (g.tiles_y * g.tiles_x);
  const int64_t y0 = (rest / g.tiles_x) * kTile, x0 = (rest % g.tiles_x) * kTile;
  float shift[W];
  for (int c = 0; c < W; ++c) shift[c] = bias ? bias[c0 + c] : 0.f;
  for (int i = 0; i < kTile && y0 + i < g.height; ++i) {
    for (int j = 0; j < kTile && x0 + j < g.width; ++j) {
      float* dst = out + ((b * g.height + y0 + i) * g.width + x0 + j) * channels + c0;
      const float* value = result[i * kTile + j];
      if (relu) {
        for (int c = 0; c < W; ++c) dst[c] = std::max(value[c] + shift[c], 0.f);
      } else {
        for (int c = 0; c < W; ++c) dst[c] = value[c] + shift[c];
      }
    }
  }
}

// Runs `step.run<W>(tile, c0)` over all tiles and channel blocks: blocks of kBlock, then single channels.
template <typename Step>
void for_each_tile_block(int64_t tiles, int64_t channels, const Step& step) {
  const int64_t full = channels / kBlock * kBlock;
  at::parallel_for(0, tiles, 4, [&](int64_t begin, int64_t end) {
    for (int64_t tile = begin; tile < end; ++tile) {
      for (int64_t c0 = 0; c0 < full; c0 += kBlock) step.template run<kBlock>(tile, c0);
      for (int64_t c0 = full; c0 < channels; ++c0) step.template run<1>(tile, c0);
    }
  });
}

struct InputStep {
  const float* x;
  float* v;
  const Geometry& g;
  int64_t channels;
  template <int W>
  void run(int64_t tile, int64_t c0) const { transform_input_tile<W>(x, v, g, channels, tile, c0); }
};

struct OutputStep {
  const float* m;
  float* out;
  const float* bias;
  bool relu;
  const Geometry& g;
  int64_t channels;
  template <int W>
  void run(int64_t tile, int64_t c0) const { transform_output_tile<W>(m, out, bias, relu, g, channels, tile, c0); }
};

// M[k] = V[k] x U[k] for the 36 positions: v [36, tiles, C_in], u [36, C_in, C_out] -> [36, tiles, C_out].
at::Tensor position_products(const at::Tensor& v, const at::Tensor& u) {
#if GENVIS_HAVE_AVX512_KERNELS
  const int64_t tiles = v.size(1), in_channels = v.size(2), out_channels = u.size(2);
  if (genvis_simd::cpu_has_avx512() && out_channels % 16 == 0) {
    at::Tensor m = at::empty({kPositions, tiles, out_channels}, v.options());
    constexpr int64_t kRowsPerTask = 48;  // a block of V's rows stays in L1 while the panels of U stream by
    const int64_t chunks = (tiles + kRowsPerTask - 1) / kRowsPerTask;
    const float* v_data = v.data_ptr<float>();
    const float* u_data = u.data_ptr<float>();
    float* m_data = m.data_ptr<float>();
    at::parallel_for(0, kPositions * chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t k = task / chunks, row = (task % chunks) * kRowsPerTask;
        const int64_t rows = std::min(kRowsPerTask, tiles - row);
        genvis_simd::gemm_rows(v_data + (k * tiles + row) * in_channels, in_channels,
                               u_data + k * in_channels * out_channels, out_channels, rows, in_channels, out_channels,
                               m_data + (k * tiles + row) * out_channels, out_channels);
      }
    });
    return m;
  }
#endif
  return at::bmm(v, u);
}

}  // namespace

at::Tensor conv3x3_cpu(const at::Tensor& x, const at::Tensor& transformed_weight, const c10::optional<at::Tensor>& bias,
                       bool relu) {
  const int64_t batch = x.size(0), in_channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t out_channels = transformed_weight.size(2);
  const int64_t tiles_y = (height + kTile - 1) / kTile, tiles_x = (width + kTile - 1) / kTile;
  const Geometry g{height, width, tiles_y, tiles_x, batch * tiles_y * tiles_x};

  // [36, tiles, C_in]: each tile's transformed window, position-major so that every position is one GEMM operand.
  at::Tensor v = at::empty({kPositions, g.tiles, in_channels}, x.options());
  for_each_tile_block(g.tiles, in_channels, InputStep{x.data_ptr<float>(), v.data_ptr<float>(), g, in_channels});

  const at::Tensor m = position_products(v, transformed_weight);  // [36, tiles, C_out]
  v.reset();

  at::Tensor out = at::empty({batch, out_channels, height, width},
                             x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const float* bias_data = (bias.has_value() && bias->defined()) ? bias->data_ptr<float>() : nullptr;
  for_each_tile_block(g.tiles, out_channels,
                      OutputStep{m.data_ptr<float>(), out.data_ptr<float>(), bias_data, relu, g, out_channels});
  return out;
}

}  // namespace genvis_winograd
