// neuroq::int8_linear(x, w, scale): out = x @ (w * scale[:, None]).T for a few rows of x.
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
// x: float32 (M, K), contiguous; w: int8 (N, K), contiguous; scale: float32 (N).
// Built by neuroq/model/kernels.py for x86-64 CPUs with AVX2 and FMA.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

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

}  // namespace

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "int8_linear: shapes");
  TORCH_CHECK(x.size(1) <= 8192, "int8_linear: at most 8192 input columns");
  TORCH_CHECK(x.scalar_type() == at::kFloat && w.scalar_type() == at::kChar &&
                  scale.scalar_type() == at::kFloat,
              "int8_linear: expected float32 x, int8 w, float32 scale");
  const at::Tensor xc = x.contiguous();
  const at::Tensor wc = w.contiguous();
  const at::Tensor sc = scale.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1), N = wc.size(0);
  const int64_t Kp = (K + 15) / 16 * 16;
  at::Tensor out = at::empty({M, N}, xc.options());

  std::vector<int16_t> xq(static_cast<size_t>(M * Kp), 0);
  std::vector<float> xs(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; m++) {
    xs[m] = quantize_row(xc.data_ptr<float>() + m * K, K, xq.data() + m * Kp);
  }
  const int8_t* wp = wc.data_ptr<int8_t>();
  const float* sp = sc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t K16 = K / 16 * 16;
  // Output rows in blocks over torch's threads: from the L3 cache a single core reads the
  // weights at about half the speed two do.
  at::parallel_for(0, N, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; n++) {
      const int8_t* row = wp + n * K;
      for (int64_t m = 0; m < M; m++) {
        const int16_t* xr = xq.data() + m * Kp;
        __m256i acc = _mm256_setzero_si256();
        for (int64_t k = 0; k < K16; k += 16) {
          const __m256i w16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(row + k)));
          const __m256i x16 = _mm256_loadu_si256((const __m256i*)(xr + k));
          acc = _mm256_add_epi32(acc, _mm256_madd_epi16(w16, x16));
        }
        alignas(32) int32_t lanes[8];
        _mm256_store_si256((__m256i*)lanes, acc);
        int64_t total = 0;
        for (int32_t v : lanes) total += v;
        for (int64_t k = K16; k < K; k++) total += static_cast<int64_t>(row[k]) * xr[k];
        op[m * N + n] = static_cast<float>(total) * xs[m] * sp[n];
      }
    }
  });
  return out;
}

TORCH_LIBRARY(neuroq, m) {
  m.def("int8_linear(Tensor x, Tensor w, Tensor scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(neuroq, CPU, m) {
  m.impl("int8_linear", &int8_linear);
}
