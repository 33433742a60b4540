// neuroq::int8_linear(x, w, scale): out = x @ (w * scale[..., None]).T for a few rows of x, for
// one matrix or a stack of them.
//
// The decode step multiplies one row per request by every weight matrix, so its products are
// matrix-vector products that read each weight once; PyTorch's int8 kernel for them
// (_weight_int8pack_mm) converts every weight to float and runs at about a third of the speed
// at which this CPU streams them. This kernel keeps the arithmetic in integers: each row of x
// is rounded to int16 with its own scale (relative error 3e-5, far below the weights' own
// int8 rounding), weights are widened to int16 16 at a time, and _mm256_madd_epi16 multiplies
// and adds pairs into int32 sums. |x| <= 16383 and |w| <= 127 bound each pair by 4.2e6, so a
// lane that sums K/16 pairs stays exact up to K = 8192; the lanes are added in int64.
//
// x: float32 (M, K); w: int8 (N, K); scale: float32 (N); out: float32 (M, N). Or stacked, with
// a leading dimension G on all four: one call for the decode step's three feed-forward matrices
// that share a stage, which saves two dispatches and two passes over the threads.
// Built by neuroq/model/kernels.py for x86-64 CPUs with AVX2 and FMA.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr float kXMax = 16383.0f;
constexpr int64_t kRowsPerTask = 128;

// Row m of x as int16 (padded with zeros to a multiple of 16) and its scale.
float quantize_row(const float* x, int64_t K, int16_t* out) {
  __m256 amax = _mm256_setzero_ps();
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    amax = _mm256_max_ps(amax, _mm256_and_ps(_mm256_loadu_ps(x + k), abs_mask));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, amax);
  float m = 0.0f;
  for (float v : lanes) m = std::max(m, v);
  for (; k < K; k++) m = std::max(m, std::fabs(x[k]));
  if (m == 0.0f) m = 1.0f;  // an all-zero row: any scale gives zeros
  const float inv = kXMax / m;
  for (k = 0; k < K; k++) out[k] = static_cast<int16_t>(std::nearbyint(x[k] * inv));
  return m / kXMax;
}

// The sums of row[k] * x[j * stride + k] over k < K for R rows j of x, exact. Each 16-weight
// block is loaded and widened once for all R rows, which is what makes a few rows (a small
// batch) cost little more than one.
template <int R>
void dot_rows(const int8_t* row, const int16_t* x, int64_t stride, int64_t K, int64_t* totals) {
  const int64_t K16 = K / 16 * 16;
  __m256i acc[R];
  for (int j = 0; j < R; j++) acc[j] = _mm256_setzero_si256();
  for (int64_t k = 0; k < K16; k += 16) {
    const __m256i w16 =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + k)));
    for (int j = 0; j < R; j++) {
      const __m256i x16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + j * stride + k));
      acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(w16, x16));
    }
  }
  for (int j = 0; j < R; j++) {
    // The eight int32 lanes, widened to int64 before they are added.
    const __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(acc[j]));
    const __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(acc[j], 1));
    const __m256i s4 = _mm256_add_epi64(lo, hi);
    const __m128i s2 =
        _mm_add_epi64(_mm256_castsi256_si128(s4), _mm256_extracti128_si256(s4, 1));
    int64_t total = _mm_cvtsi128_si64(s2) + _mm_extract_epi64(s2, 1);
    for (int64_t k = K16; k < K; k++) total += static_cast<int64_t>(row[k]) * x[j * stride + k];
    totals[j] = total;
  }
}

}  // namespace

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale) {
  const bool stacked = x.dim() == 3;
  TORCH_CHECK((x.dim() == 2 || stacked) && w.dim() == x.dim() && scale.dim() == x.dim() - 1,
              "int8_linear: expected x (M, K), w (N, K), scale (N), or all with a leading G");
  TORCH_CHECK(x.scalar_type() == at::kFloat && w.scalar_type() == at::kChar &&
                  scale.scalar_type() == at::kFloat,
              "int8_linear: expected float32 x, int8 w, float32 scale");
  const at::Tensor xc = (stacked ? x : x.unsqueeze(0)).contiguous();
  const at::Tensor wc = (stacked ? w : w.unsqueeze(0)).contiguous();
  const at::Tensor sc = (stacked ? scale : scale.unsqueeze(0)).contiguous();
  const int64_t G = xc.size(0), M = xc.size(1), K = xc.size(2), N = wc.size(1);
  TORCH_CHECK(wc.size(0) == G && sc.size(0) == G && wc.size(2) == K && sc.size(1) == N,
              "int8_linear: shapes do not match");
  TORCH_CHECK(K <= 8192, "int8_linear: at most 8192 input columns");
  const int64_t Kp = (K + 15) / 16 * 16;
  at::Tensor out = at::empty({G, M, N}, xc.options());

  // Every row of x as int16, zero-padded to a multiple of 16 columns, with its scale.
  std::vector<int16_t> xq(static_cast<size_t>(G * M * Kp), 0);
  std::vector<float> xs(static_cast<size_t>(G * M));
  for (int64_t r = 0; r < G * M; r++) {
    xs[r] = quantize_row(xc.data_ptr<float>() + r * K, K, xq.data() + r * Kp);
  }
  const int8_t* wp = wc.data_ptr<int8_t>();
  const float* sp = sc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int16_t* xqp = xq.data();
  const float* xsp = xs.data();
  // Output rows of all matrices in blocks over torch's threads: from the L3 cache a single core
  // reads the weights at about half the speed two do.
  at::parallel_for(0, G * N, kRowsPerTask, [=](int64_t begin, int64_t end) {
    for (int64_t gn = begin; gn < end; gn++) {
      const int64_t g = gn / N, n = gn % N;
      for (int64_t m = 0; m < M; m += 4) {  // up to four rows of x per pass over the weights
        const int64_t r = g * M + m;
        const int8_t* row = wp + gn * K;
        const int16_t* x = xqp + r * Kp;
        int64_t totals[4];
        switch (std::min<int64_t>(M - m, 4)) {
          case 1: dot_rows<1>(row, x, Kp, K, totals); break;
          case 2: dot_rows<2>(row, x, Kp, K, totals); break;
          case 3: dot_rows<3>(row, x, Kp, K, totals); break;
          default: dot_rows<4>(row, x, Kp, K, totals); break;
        }
        for (int64_t j = 0; j < std::min<int64_t>(M - m, 4); j++) {
          op[(r + j) * N + n] = static_cast<float>(totals[j]) * xsp[r + j] * sp[gn];
        }
      }
    }
  });
  return stacked ? out : out.squeeze(0);
}

TORCH_LIBRARY(neuroq, m) {
  m.def("int8_linear(Tensor x, Tensor w, Tensor scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(neuroq, CPU, m) {
  m.impl("int8_linear", &int8_linear);
}
