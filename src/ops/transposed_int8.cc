#include "ops/transposed_int8.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/error.h"
#include "ops/kernels.h"
#include "ops/vnni_target.h"
#include "tensor/dtype.h"

namespace whale {

// GCC 12's _mm512_reduce_add_ps reads an uninitialized register on purpose (ops/int8_gemm.cc).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace {

constexpr int kGroup = 32;
constexpr int kLine = 64;

// Rows a 64-byte line of one column block holds: 4 q8 codes a column, or 8 q4 nibbles.
int rows_per_line(bool q4) {
  return q4 ? 8 : 4;
}
// One column block's bytes: 16 columns of every row.
size_t column_block_bytes(const TransposedInt8& w) {
  return static_cast<size_t>(w.rows) / rows_per_line(w.q4) * kLine;
}
// The byte that holds (r, c)'s code, and for q4 whether in the high nibble.
size_t code_at(const TransposedInt8& w, int r, int c, bool* high) {
  *high = w.q4 && r % 8 >= 4;
  return static_cast<size_t>(c / 16) * column_block_bytes(w) +
         static_cast<size_t>(r / rows_per_line(w.q4)) * kLine + 4 * (c % 16) + r % 4;
}
// (r, c)'s code as the integer the products multiply: q8 the signed code, q4 the nibble.
int code_of(const TransposedInt8& w, int r, int c) {
  bool high;
  const uint8_t byte = w.codes[code_at(w, r, c, &high)];
  if (!w.q4) return static_cast<int>(byte) - 128;
  return high ? byte >> 4 : byte & 15;
}

// 16 f16s as floats, and 4 activation codes broadcast to every int32 lane.
WHALE_VNNI_TARGET __attribute__((always_inline)) inline __m512 load_f16(const uint16_t* h) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h)));
}
WHALE_VNNI_TARGET __attribute__((always_inline)) inline __m512i broadcast4(const int8_t* four) {
  int32_t v;
  std::memcpy(&v, four, 4);
  return _mm512_set1_epi32(v);
}

// 32 activations of one row group to int8 as vnni_target.h's quantize_group does: its scale.
float quantize_reference(const float* a, int* codes) {
  float amax = 0;
  for (int i = 0; i < kGroup; ++i) amax = std::max(amax, std::fabs(a[i]));
  const float scale = amax / 127.0f, inverse = scale > 0 ? 1.0f / scale : 0.0f;
  for (int i = 0; i < kGroup; ++i)
    codes[i] = static_cast<int>(std::nearbyint(std::clamp(a[i] * inverse, -127.0f, 127.0f)));
  return scale;
}

// Column group g's activations, quantized per 32 rows: a8 [rows], sigma and start per row group
// (−offset · Σ a8: the codes enter vpdpbusd as unsigned bytes, q8's as code + 128, q4's nibbles
// as they are but meant as nibble − 8, so that the quantized part is centred and its rounding
// does not swamp a small product); returns q4's float part Σ_r p[r] · (min[r][g] + 8 ·
// scale[r][g]).
template <bool kQ4>
WHALE_VNNI_TARGET inline float group_activations(const TransposedInt8& w, int g, const float* p,
                                                 int8_t* a8, float* sigma, int32_t* start) {
  constexpr int kCodeOffset = kQ4 ? 8 : 128;
  const int R = w.rows;
  const uint16_t* scales = w.scales + static_cast<size_t>(g) * R;
  __m512 bias = _mm512_setzero_ps();
  for (int r = 0; r < R; r += kGroup) {
    const __m512 p0 = _mm512_loadu_ps(p + r), p1 = _mm512_loadu_ps(p + r + 16);
    alignas(64) float a[kGroup];
    const __m512 a0 = _mm512_mul_ps(p0, load_f16(scales + r));
    const __m512 a1 = _mm512_mul_ps(p1, load_f16(scales + r + 16));
    _mm512_store_ps(a, a0);
    _mm512_store_ps(a + 16, a1);
    __m512i q0, q1;
    sigma[r / kGroup] = quantize_group(a, kGroup, &q0, &q1);
    _mm_store_si128(reinterpret_cast<__m128i*>(a8 + r), _mm512_cvtepi32_epi8(q0));
    _mm_store_si128(reinterpret_cast<__m128i*>(a8 + r + 16), _mm512_cvtepi32_epi8(q1));
    start[r / kGroup] = -kCodeOffset * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    if (kQ4) {
      const uint16_t* mins = w.mins + static_cast<size_t>(g) * R;
      bias = _mm512_fmadd_ps(p0, load_f16(mins + r), bias);
      bias = _mm512_fmadd_ps(p1, load_f16(mins + r + 16), bias);
      bias = _mm512_fmadd_ps(_mm512_set1_ps(8.0f), _mm512_add_ps(a0, a1), bias);
    }
  }
  return kQ4 ? _mm512_reduce_add_ps(bias) : 0.0f;
}

template <bool kQ4>
WHALE_VNNI_TARGET void product(const TransposedInt8& w, const float* p, float* y) {
  const int R = w.rows, groups = w.cols / kGroup;
  const size_t block_bytes = column_block_bytes(w);
  constexpr int kLines = kGroup / (kQ4 ? 8 : 4);  // lines per 32 rows of a column block
  alignas(64) int8_t a8[kTransposedInt8MaxRows];
  float sigma[kTransposedInt8MaxRows / kGroup];
  int32_t start[kTransposedInt8MaxRows / kGroup];
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  for (int g = 0; g < groups; ++g) {
    const float bias = group_activations<kQ4>(w, g, p, a8, sigma, start);
    for (int cb = 2 * g; cb < 2 * g + 2; ++cb) {
      const uint8_t* block = w.codes + cb * block_bytes;
      __m512 out = _mm512_setzero_ps();
      for (int r = 0; r < R; r += kGroup) {
        const uint8_t* lines = block + static_cast<size_t>(r / kGroup) * kLines * kLine;
        prefetch_weights_ahead(lines, kLines * kLine);
        const int8_t* act = a8 + r;
        // Two chains, then one sum: the codes of the 32 rows against their activations.
        __m512i even = _mm512_set1_epi32(start[r / kGroup]), odd = _mm512_setzero_si512();
        if (kQ4) {
#pragma GCC unroll 4
          for (int k = 0; k < kLines; ++k) {
            const __m512i v = _mm512_load_si512(lines + k * kLine);
            even = _mm512_dpbusd_epi32(even, _mm512_and_si512(v, nibble), broadcast4(act + 8 * k));
            odd = _mm512_dpbusd_epi32(odd, _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble),
                                      broadcast4(act + 8 * k + 4));
          }
        } else {
#pragma GCC unroll 8
          for (int k = 0; k < kLines; k += 2) {
            even = _mm512_dpbusd_epi32(even, _mm512_load_si512(lines + k * kLine),
                                       broadcast4(act + 4 * k));
            odd = _mm512_dpbusd_epi32(odd, _mm512_load_si512(lines + (k + 1) * kLine),
                                      broadcast4(act + 4 * k + 4));
          }
        }
        out = _mm512_fmadd_ps(_mm512_set1_ps(sigma[r / kGroup]),
                              _mm512_cvtepi32_ps(_mm512_add_epi32(even, odd)), out);
      }
      if (kQ4) out = _mm512_add_ps(out, _mm512_set1_ps(bias));
      _mm512_storeu_ps(y + cb * 16, out);
    }
  }
}

}  // namespace

void transpose_int8_rows(bool q4, int rows, int cols, const uint8_t* stored_codes,
                         const uint16_t* stored_scales, uint8_t* codes, uint16_t* scales,
                         uint16_t* mins) {
  check(transposed_int8_fit(rows, cols),
        "transpose_int8_rows: " + std::to_string(rows) + " × " + std::to_string(cols) +
            " does not fit (whole groups of 32 both ways, at most " +
            std::to_string(kTransposedInt8MaxRows) + " rows)");
  TransposedInt8 w;
  w.q4 = q4;
  w.rows = rows;
  w.cols = cols;
  const int groups = cols / kGroup;
  std::memset(codes, 0, w.code_bytes());
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) {
      bool high;
      uint8_t& to = codes[code_at(w, r, c, &high)];
      if (!q4) {
        to = static_cast<uint8_t>(
            static_cast<int8_t>(stored_codes[static_cast<size_t>(r) * cols + c]) + 128);
        continue;
      }
      const int j = c % kGroup;
      const uint8_t byte =
          stored_codes[static_cast<size_t>(r) * (cols / 2) + c / kGroup * 16 + j % 16];
      const int value = j < 16 ? byte & 15 : byte >> 4;
      to |= static_cast<uint8_t>(high ? value << 4 : value);
    }
  for (int r = 0; r < rows; ++r)
    for (int g = 0; g < groups; ++g) {
      const size_t from = static_cast<size_t>(r) * groups + g,
                   to = static_cast<size_t>(g) * rows + r;
      if (!q4) {
        scales[to] = stored_scales[from];
      } else {
        scales[to] = stored_scales[2 * from];
        mins[to] = stored_scales[2 * from + 1];
      }
    }
}

void transposed_int8_product(const TransposedInt8& w, const float* p, float* y) {
  if (!transposed_int8_fit(w.rows, w.cols) || reinterpret_cast<uintptr_t>(w.codes) % kLine != 0)
    throw Error("transposed_int8_product: a " + std::to_string(w.rows) + " × " +
                std::to_string(w.cols) + " matrix that does not fit, or codes off a cache line");
  if (w.q4)
    product<true>(w, p, y);
  else
    product<false>(w, p, y);
}

void transposed_int8_product_reference(const TransposedInt8& w, const float* p, float* y) {
  const int R = w.rows, groups = w.cols / kGroup;
  std::vector<int> a8(R);
  std::vector<float> sigma(R / kGroup);
  for (int g = 0; g < groups; ++g) {
    double bias = 0;
    for (int r = 0; r < R; r += kGroup) {
      float a[kGroup];
      for (int i = 0; i < kGroup; ++i)
        a[i] = p[r + i] * f16_to_f32(w.scales[static_cast<size_t>(g) * R + r + i]);
      sigma[r / kGroup] = quantize_reference(a, a8.data() + r);
    }
    if (w.q4)
      for (int r = 0; r < R; ++r) {
        const size_t at = static_cast<size_t>(g) * R + r;
        bias += static_cast<double>(p[r]) * f16_to_f32(w.mins[at]) +
                8.0 * (p[r] * f16_to_f32(w.scales[at]));
      }
    for (int c = g * kGroup; c < (g + 1) * kGroup; ++c) {
      float out = 0;
      for (int r0 = 0; r0 < R; r0 += kGroup) {
        int32_t sum = 0;  // q4: the nibbles centred (the bias has their 8s)
        for (int r = r0; r < r0 + kGroup; ++r) sum += a8[r] * (code_of(w, r, c) - (w.q4 ? 8 : 0));
        out = std::fma(sigma[r0 / kGroup], static_cast<float>(sum), out);
      }
      y[c] = w.q4 ? out + static_cast<float>(bias) : out;
    }
  }
}

float transposed_int8_value(const TransposedInt8& w, int r, int c) {
  const size_t at = static_cast<size_t>(c / kGroup) * w.rows + r;
  const float scale = f16_to_f32(w.scales[at]);
  return w.q4 ? code_of(w, r, c) * scale + f16_to_f32(w.mins[at]) : code_of(w, r, c) * scale;
}

}  // namespace whale
