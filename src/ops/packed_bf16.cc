#include "ops/packed_bf16.h"

#include <immintrin.h>

#include <algorithm>
#include <string>

#include "base/error.h"
#include "ops/kernels.h"
#include "ops/precision.h"
#include "tensor/dtype.h"

#define WHALE_PACKED_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace whale {

namespace {

// Which value of a chunk plane byte b holds (the header's table).
int chunk_value(int b) {
  const int lane = b / 16, j = b % 16;
  return j < 8 ? 8 * lane + j : 32 + 8 * lane + (j - 8);
}

int half_exponent(uint16_t v) {
  return (v >> 8) & 0x7F;
}

// The segment's base: 7 below its largest half-exponent.
int segment_base(const uint16_t* values, int n) {
  int top = 0;
  for (int i = 0; i < n; ++i) top = std::max(top, half_exponent(values[i]));
  return std::max(top - 7, 0);
}

// Whether v is stored exactly in the planes; otherwise it unpacks to ±0.
bool fits(uint16_t v, int base) {
  const int code = half_exponent(v) - base;
  return code >= 1 && code <= 7;
}
bool is_zero(uint16_t v) {
  return (v & 0x7FFF) == 0;
}

// The high byte a nibble stands for under a segment base.
uint8_t high_byte(int nibble, int base) {
  const int sign = nibble >> 3, code = nibble & 7;
  return static_cast<uint8_t>(sign << 7 | (code ? base + code : 0));
}

// The row's exceptions (from `before` on) sorted by column, the order the kernel adds them in;
// how many.
size_t in_column_order(std::vector<PackedException>* exceptions, size_t before) {
  std::sort(exceptions->begin() + before, exceptions->end(),
            [](const PackedException& a, const PackedException& b) { return a.col < b.col; });
  return exceptions->size() - before;
}

}  // namespace

size_t pack_bf16_row_reference(const uint16_t* row, int cols, uint8_t* planes, uint8_t* bases,
                               std::vector<PackedException>* exceptions) {
  const size_t before = exceptions->size();
  for (int s = 0, seg = 0; s < cols; s += kPackedSegment, ++seg)
    bases[seg] = static_cast<uint8_t>(segment_base(row + s, std::min(kPackedSegment, cols - s)));
  for (int c0 = 0; c0 < cols; c0 += kPackedChunk) {
    uint8_t* low = planes + c0 / kPackedChunk * kPackedChunkBytes;
    uint8_t* nibbles = low + kPackedChunk;
    std::fill(nibbles, nibbles + kPackedChunk / 2, 0);
    const int base = bases[c0 / kPackedSegment];
    for (int b = 0; b < kPackedChunk; ++b) {
      const int c = c0 + chunk_value(b);
      const uint16_t v = row[c];
      const int sign = v >> 15;
      int nibble = sign << 3;
      low[b] = 0;
      if (fits(v, base)) {
        nibble |= half_exponent(v) - base;
        low[b] = static_cast<uint8_t>(v & 0xFF);
      } else if (!is_zero(v)) {
        exceptions->push_back({static_cast<uint16_t>(c), v});
      }
      nibbles[b / 2] |= static_cast<uint8_t>(nibble << (4 * (b % 2)));
    }
  }
  return in_column_order(exceptions, before);
}

void unpack_bf16_row_reference(const PackedBf16& m, int cols, int r, uint16_t* out) {
  const uint8_t* planes = m.planes + static_cast<size_t>(r) * packed_bf16_row_bytes(cols);
  const uint8_t* bases = m.bases + static_cast<size_t>(r) * packed_bf16_segments(cols);
  for (int c0 = 0; c0 < cols; c0 += kPackedChunk) {
    const uint8_t* low = planes + c0 / kPackedChunk * kPackedChunkBytes;
    const uint8_t* nibbles = low + kPackedChunk;
    const int base = bases[c0 / kPackedSegment];
    for (int b = 0; b < kPackedChunk; ++b) {
      const int nibble = (nibbles[b / 2] >> (4 * (b % 2))) & 0xF;
      out[c0 + chunk_value(b)] = static_cast<uint16_t>(high_byte(nibble, base) << 8 | low[b]);
    }
  }
  for (uint32_t e = m.offsets[r]; e < m.offsets[r + 1]; ++e)
    out[m.exceptions[e].col] = m.exceptions[e].value;
}

void packed_bf16_dot_reference(const PackedBf16& m, int cols, int r, const uint16_t* xb,
                               double* out) {
  std::vector<uint16_t> row(cols);
  unpack_bf16_row_reference(m, cols, r, row.data());
  double sum = 0;
  for (int c = 0; c < cols; ++c)
    sum += static_cast<double>(bf16_to_f32(row[c])) * bf16_to_f32(xb[c]);
  *out = sum;
}

namespace {

// The segment's 16-entry nibble → high byte table in every 128-bit lane.
WHALE_PACKED_TARGET inline __m512i segment_table(int base) {
  const __m512i sign = _mm512_broadcast_i32x4(
      _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, char(0x80), char(0x80), char(0x80), char(0x80),
                    char(0x80), char(0x80), char(0x80), char(0x80)));
  const __m512i code =
      _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7));
  // Code 0 stands for ±0: no base added there.
  const __mmask64 nonzero_code = 0xFEFEFEFEFEFEFEFEull;
  return _mm512_or_si512(
      sign, _mm512_maskz_add_epi8(nonzero_code, code, _mm512_set1_epi8(static_cast<char>(base))));
}

// One chunk's 64 bf16 values: w[0] values 0 … 31, w[1] values 32 … 63.
WHALE_PACKED_TARGET __attribute__((always_inline)) inline void unpack_chunk(const uint8_t* p,
                                                                            __m512i table,
                                                                            __m512bh w[2]) {
  const __m512i low = _mm512_loadu_si512(p);
  const __m512i wide =
      _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64)));
  // (wide | wide << 4) & 0x0F0F: byte 2k the low nibble of nibble byte k, byte 2k + 1 its high.
  const __m512i nibbles =
      _mm512_ternarylogic_epi64(wide, _mm512_slli_epi16(wide, 4), _mm512_set1_epi16(0x0F0F), 0xA8);
  const __m512i high = _mm512_shuffle_epi8(table, nibbles);
  w[0] = reinterpret_cast<__m512bh>(_mm512_unpacklo_epi8(low, high));
  w[1] = reinterpret_cast<__m512bh>(_mm512_unpackhi_epi8(low, high));
}

// One chunk against R activation rows (x: the chunk's first column of row 0, rows ldx apart),
// into partial sums K and K + 1: even chunks use 0 and 1, odd ones 2 and 3.
template <int R, int K>
WHALE_PACKED_TARGET __attribute__((always_inline)) inline void accumulate_chunk(
    const uint8_t* p, __m512i table, const uint16_t* x, int ldx, __m512 (&sum)[R][4]) {
  __m512bh w[2];
  unpack_chunk(p, table, w);
#pragma GCC unroll 4
  for (int t = 0; t < R; ++t) {
    const uint16_t* xt = x + static_cast<size_t>(t) * ldx;
    sum[t][K] =
        _mm512_dpbf16_ps(sum[t][K], w[0], reinterpret_cast<__m512bh>(_mm512_loadu_si512(xt)));
    sum[t][K + 1] = _mm512_dpbf16_ps(sum[t][K + 1], w[1],
                                     reinterpret_cast<__m512bh>(_mm512_loadu_si512(xt + 32)));
  }
}

// out[t] = row · xb[t] for R activation rows: four partial sums (chunk parity × half), one
// reduction, then the exceptions — the same for every R.
template <int R>
WHALE_PACKED_TARGET void dot_rows(const uint8_t* planes, const uint8_t* bases, int cols,
                                  const PackedException* ex, const PackedException* ex_end,
                                  const uint16_t* xb, int ldx, float* out) {
  __m512 sum[R][4];
#pragma GCC unroll 4
  for (int t = 0; t < R; ++t)
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) sum[t][k] = _mm512_setzero_ps();
  const int chunks = cols / kPackedChunk;
  constexpr int kChunksPerSegment = kPackedSegment / kPackedChunk;  // even: chunks pair up
  for (int c0 = 0; c0 < chunks; c0 += kChunksPerSegment) {
    const __m512i table = segment_table(bases[c0 / kChunksPerSegment]);
    const int end = std::min(chunks, c0 + kChunksPerSegment);
    for (int c = c0; c < end; c += 2) {
      const uint8_t* p = planes + static_cast<size_t>(c) * kPackedChunkBytes;
      prefetch_weights_ahead(p, 2 * kPackedChunkBytes);  // (kernels.h)
      const size_t i = static_cast<size_t>(c) * kPackedChunk;
      accumulate_chunk<R, 0>(p, table, xb + i, ldx, sum);
      if (c + 1 < end)
        accumulate_chunk<R, 2>(p + kPackedChunkBytes, table, xb + i + kPackedChunk, ldx, sum);
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < R; ++t) {
    float s = _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(sum[t][0], sum[t][1]), _mm512_add_ps(sum[t][2], sum[t][3])));
    const uint16_t* x = xb + static_cast<size_t>(t) * ldx;
    for (const PackedException* e = ex; e != ex_end; ++e)
      s += bf16_to_f32(e->value) * bf16_to_f32(x[e->col]);
    out[t] = s;
  }
}

WHALE_PACKED_TARGET void unpack_row_vectors(const PackedBf16& m, int cols, int r, uint16_t* out) {
  const uint8_t* planes = m.planes + static_cast<size_t>(r) * packed_bf16_row_bytes(cols);
  const uint8_t* bases = m.bases + static_cast<size_t>(r) * packed_bf16_segments(cols);
  for (int s = 0; s < cols; s += kPackedSegment) {
    const __m512i table = segment_table(bases[s / kPackedSegment]);
    for (int c = s; c < std::min(cols, s + kPackedSegment); c += kPackedChunk) {
      __m512bh w[2];
      unpack_chunk(planes + c / kPackedChunk * kPackedChunkBytes, table, w);
      _mm512_storeu_si512(out + c, reinterpret_cast<__m512i>(w[0]));
      _mm512_storeu_si512(out + c + 32, reinterpret_cast<__m512i>(w[1]));
    }
  }
  for (uint32_t e = m.offsets[r]; e < m.offsets[r + 1]; ++e)
    out[m.exceptions[e].col] = m.exceptions[e].value;
}

template <int R>
WHALE_PACKED_TARGET void row_range(const PackedBf16& m, int cols, int r0, int r1,
                                   const uint16_t* xb, int ldx, float* y, size_t ldy) {
  const size_t row_bytes = packed_bf16_row_bytes(cols);
  const int segments = packed_bf16_segments(cols);
  for (int r = r0; r < r1; ++r) {
    float out[R];
    dot_rows<R>(m.planes + static_cast<size_t>(r) * row_bytes,
                m.bases + static_cast<size_t>(r) * segments, cols, m.exceptions + m.offsets[r],
                m.exceptions + m.offsets[r + 1], xb, ldx, out);
#pragma GCC unroll 4
    for (int t = 0; t < R; ++t) y[t * ldy + (r - r0)] = out[t];
  }
}

}  // namespace

namespace {
WHALE_PACKED_TARGET size_t pack_row_vectors(const uint16_t* row, int cols, uint8_t* planes,
                                            uint8_t* bases,
                                            std::vector<PackedException>* exceptions) {
  const size_t before = exceptions->size();
  const __m512i low_byte = _mm512_set1_epi16(0x00FF), half = _mm512_set1_epi8(0x7F);
  for (int s = 0; s < cols; s += kPackedSegment) {
    const int end = std::min(cols, s + kPackedSegment);
    // The segment's largest half-exponent: (v >> 8) & 0x7F of every value.
    __m512i top = _mm512_setzero_si512();
    for (int c = s; c < end; c += 32)
      top =
          _mm512_max_epu16(top, _mm512_and_si512(_mm512_srli_epi16(_mm512_loadu_si512(row + c), 8),
                                                 _mm512_set1_epi16(0x7F)));
    const int base = std::max(
        _mm512_reduce_max_epi32(_mm512_max_epu16(
            _mm512_srli_epi32(top, 16), _mm512_and_si512(top, _mm512_set1_epi32(0xFFFF)))) -
            7,
        0);
    bases[s / kPackedSegment] = static_cast<uint8_t>(base);
    const __m512i base_plus_one = _mm512_set1_epi8(static_cast<char>(base + 1));
    for (int c0 = s; c0 < end; c0 += kPackedChunk) {
      const __m512i w0 = _mm512_loadu_si512(row + c0), w1 = _mm512_loadu_si512(row + c0 + 32);
      // The byte unpacks' inverse: per 128-bit lane, 8 words of w0 then 8 of w1.
      __m512i low =
          _mm512_packus_epi16(_mm512_and_si512(w0, low_byte), _mm512_and_si512(w1, low_byte));
      const __m512i high = _mm512_packus_epi16(_mm512_srli_epi16(w0, 8), _mm512_srli_epi16(w1, 8));
      const __m512i h = _mm512_and_si512(high, half);
      // code = h − base in 1 … 7, i.e. (h − base − 1) below 7 unsigned.
      const __mmask64 fit =
          _mm512_cmplt_epu8_mask(_mm512_sub_epi8(h, base_plus_one), _mm512_set1_epi8(7));
      const __mmask64 nonzero =
          _mm512_test_epi8_mask(_mm512_or_si512(h, low), _mm512_set1_epi8(-1));
      const __m512i sign = _mm512_and_si512(_mm512_srli_epi16(high, 4), _mm512_set1_epi8(0x08));
      const __m512i nibble = _mm512_or_si512(
          sign, _mm512_maskz_sub_epi8(fit, h, _mm512_set1_epi8(static_cast<char>(base))));
      low = _mm512_maskz_mov_epi8(fit, low);
      uint8_t* out = planes + c0 / kPackedChunk * kPackedChunkBytes;
      _mm512_storeu_si512(out, low);
      // Nibble pairs: byte k = nibble 2k | nibble 2k + 1 << 4.
      const __m512i pairs =
          _mm512_or_si512(_mm512_and_si512(nibble, low_byte), _mm512_srli_epi16(nibble, 4));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + kPackedChunk),
                          _mm512_cvtepi16_epi8(pairs));
      for (uint64_t missed = nonzero & ~fit; missed; missed &= missed - 1) {
        const int c = c0 + chunk_value(__builtin_ctzll(missed));
        exceptions->push_back({static_cast<uint16_t>(c), row[c]});
      }
    }
  }
  return in_column_order(exceptions, before);
}
}  // namespace

size_t pack_bf16_row(const uint16_t* row, int cols, uint8_t* planes, uint8_t* bases,
                     std::vector<PackedException>* exceptions) {
  check(packed_bf16_fit(cols),
        "packed bf16: a row of " + std::to_string(cols) + " values (needs a multiple of 64)");
  if (bf16_gemm_available()) return pack_row_vectors(row, cols, planes, bases, exceptions);
  return pack_bf16_row_reference(row, cols, planes, bases, exceptions);
}

void unpack_bf16_row(const PackedBf16& m, int cols, int r, uint16_t* out) {
  if (bf16_gemm_available())
    unpack_row_vectors(m, cols, r, out);
  else
    unpack_bf16_row_reference(m, cols, r, out);
}

void packed_bf16_dot_row_range(const PackedBf16& m, int cols, int r0, int r1, const uint16_t* xb,
                               int ldx, int T, float* y, size_t ldy) {
  constexpr int kPass = 4;  // 4 × 4 sums, the table, and a chunk's planes in the 32 registers
  using Range = void (*)(const PackedBf16&, int, int, int, const uint16_t*, int, float*, size_t);
  static constexpr Range kRanges[kPass] = {row_range<1>, row_range<2>, row_range<3>, row_range<4>};
  for (int t0 = 0; t0 < T; t0 += kPass)
    kRanges[std::min(kPass, T - t0) - 1](m, cols, r0, r1, xb + static_cast<size_t>(t0) * ldx, ldx,
                                         y + t0 * ldy, ldy);
}

}  // namespace whale
