// Bilinear sampling geometry shared by the CPU and CUDA kernels of multi-scale deformable attention.
//
// Semantics are those of `torch.nn.functional.grid_sample(mode="bilinear", padding_mode="zeros",
// align_corners=False)` applied to the grid `2 * location - 1`: a normalised location x in [0, 1] maps to
// the pixel coordinate x * W - 0.5 (pixel centres at integer + 0.5), the four surrounding pixels are
// weighted bilinearly and a corner that falls outside the map contributes zero.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define GENVIS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define GENVIS_HOST_DEVICE inline
#endif

namespace genvis_ms_deform_attn {

// The four bilinear corners of one sampling location on one level.
// Corner k is (row[k / 2], col[k % 2]): 0 = top-left, 1 = top-right, 2 = bottom-left, 3 = bottom-right.
template <typename acc_t>
struct BilinearCorners {
  int64_t pixel[4];  // row-major pixel index (h * W + w) within the level, or -1 when outside the map
  acc_t weight[4];   // bilinear weight of each corner (meaningful for inside corners only)
  acc_t frac_h;      // fractional offsets from the top-left corner, used by the backward pass
  acc_t frac_w;
};

template <typename acc_t>
GENVIS_HOST_DEVICE acc_t floor_of(acc_t x) {
#if defined(__CUDA_ARCH__)
  return ::floor(x);  // CUDA's device overloads for float and double
#else
  return std::floor(x);
#endif
}

// grid_sample's own unnormalisation of a grid coordinate g = 2 * location - 1 (align_corners=False), in
// the order of operations of the grid_sample kernel for the same device, so the pixel coordinate rounds as
// grid_sample's does. (The coordinate's rounding is what matters: one ulp of x * W on an 80-pixel-wide map
// moves the output by ~1e-5, far more than the order of the sums.)
template <typename acc_t>
GENVIS_HOST_DEVICE acc_t location_to_pixel(acc_t location, acc_t extent) {
  const acc_t grid = location * acc_t(2) - acc_t(1);
#if defined(__CUDA_ARCH__)
  // ATen's CUDA grid_sample: ((g + 1) * size - 1) / 2 (nvcc contracts it the same way in both kernels).
  return ((grid + acc_t(1)) * extent - acc_t(1)) / acc_t(2);
#elif defined(__FMA__) || defined(__ARM_FEATURE_FMA)
  // ATen's vectorised CPU grid_sample: fmadd(g, size / 2, (size - 1) / 2), fused where the CPU has FMA.
  return std::fma(grid, extent / acc_t(2), (extent - acc_t(1)) / acc_t(2));
#else
  return grid * (extent / acc_t(2)) + (extent - acc_t(1)) / acc_t(2);
#endif
}

template <typename acc_t>
GENVIS_HOST_DEVICE acc_t location_to_pixel(acc_t location, int64_t size) {
  return location_to_pixel(location, static_cast<acc_t>(size));
}

// Fills `corners` for normalised location (x, y) on a map of `height` x `width` pixels.
// Returns false when no corner can be inside the map (the sample is exactly zero, and so are its
// gradients); NaN locations also return false.
template <typename acc_t>
GENVIS_HOST_DEVICE bool bilinear_corners(acc_t x, acc_t y, int64_t height, int64_t width,
                                         BilinearCorners<acc_t>& corners) {
  const acc_t w_im = location_to_pixel(x, width);
  const acc_t h_im = location_to_pixel(y, height);
  // Written so that NaN fails every comparison.
  if (!(h_im > acc_t(-1) && w_im > acc_t(-1) && h_im < static_cast<acc_t>(height) &&
        w_im < static_cast<acc_t>(width))) {
    return false;
  }
  const acc_t h_floor = floor_of(h_im);
  const acc_t w_floor = floor_of(w_im);
  const int64_t h_low = static_cast<int64_t>(h_floor);
  const int64_t w_low = static_cast<int64_t>(w_floor);
  const int64_t h_high = h_low + 1;
  const int64_t w_high = w_low + 1;
  const acc_t lh = h_im - h_floor;
  const acc_t lw = w_im - w_floor;
  const acc_t hh = acc_t(1) - lh;
  const acc_t hw = acc_t(1) - lw;
  corners.frac_h = lh;
  corners.frac_w = lw;
  corners.weight[0] = hh * hw;
  corners.weight[1] = hh * lw;
  corners.weight[2] = lh * hw;
  corners.weight[3] = lh * lw;
  const bool top = h_low >= 0;
  const bool bottom = h_high <= height - 1;
  const bool left = w_low >= 0;
  const bool right = w_high <= width - 1;
  corners.pixel[0] = (top && left) ? h_low * width + w_low : -1;
  corners.pixel[1] = (top && right) ? h_low * width + w_high : -1;
  corners.pixel[2] = (bottom && left) ? h_high * width + w_low : -1;
  corners.pixel[3] = (bottom && right) ? h_high * width + w_high : -1;
  return true;
}

}  // namespace genvis_ms_deform_attn
