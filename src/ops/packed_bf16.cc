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
  const uint8_t* planes = m.row_planes(r, cols);
  const uint8_t* bases = m.bases + static_cast<size_t>(r) * packed_bf16_segments(cols);
  for (int c0 = 0; c0 < cols; c0 += kPackedChunk) {
    const uint8_t* low = planes + c0 / kPackedChunk * m.chunk_stride();
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

// One chunk of each of W weight rows against R activation rows (x: the chunk's first column of
// row 0, rows ldx apart), into partial sums K and K + 1: even chunks use 0 and 1, odd ones 2 and 3.
template <int W, int R, int K>
WHALE_PACKED_TARGET __attribute__((always_inline)) inline void accumulate_chunk(
    const uint8_t* const (&p)[W], const __m512i (&table)[W], const uint16_t* x, int ldx,
    __m512 (&sum)[W][R][4]) {
  __m512bh w[W][2];
#pragma GCC unroll 2
  for (int v = 0; v < W; ++v) unpack_chunk(p[v], table[v], w[v]);
#pragma GCC unroll 4
  for (int t = 0; t < R; ++t) {
    const uint16_t* xt = x + static_cast<size_t>(t) * ldx;
    const __m512bh x0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(xt));
    const __m512bh x1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(xt + 32));
#pragma GCC unroll 2
    for (int v = 0; v < W; ++v) {
      sum[v][t][K] = _mm512_dpbf16_ps(sum[v][t][K], w[v][0], x0);
      sum[v][t][K + 1] = _mm512_dpbf16_ps(sum[v][t][K + 1], w[v][1], x1);
    }
  }
}

// A packed weight row: its planes, segment bases and exceptions.
struct PackedRow {
  const uint8_t* planes;  // its first chunk; the next one stride bytes on
  size_t stride;
  const uint8_t* bases;
  const PackedException *ex, *ex_end;
};

// out[v][t] = row v · xb[t] for W weight rows and R activation rows: per row four partial sums
// (chunk parity × half), one reduction, then the exceptions — the same for every W and R. Two
// weight rows (W = 2) interleave their instructions: each row's arithmetic is unchanged, but a
// row of 16 chunks (1024 values) is a chain of dependent sums, and a second, independent one gives
// the core work while the first waits (from L2, one core: two activation rows 1.33× faster,
// one row 1.12×).
template <int W, int R>
WHALE_PACKED_TARGET void dot_rows(const PackedRow (&rows)[W], int cols, const uint16_t* xb, int ldx,
                                  float (&out)[W][R]) {
  __m512 sum[W][R][4];
#pragma GCC unroll 2
  for (int v = 0; v < W; ++v)
#pragma GCC unroll 4
    for (int t = 0; t < R; ++t)
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) sum[v][t][k] = _mm512_setzero_ps();
  const int chunks = cols / kPackedChunk;
  constexpr int kChunksPerSegment = kPackedSegment / kPackedChunk;  // even: chunks pair up
  for (int c0 = 0; c0 < chunks; c0 += kChunksPerSegment) {
    __m512i table[W];
    const uint8_t* p[W];
#pragma GCC unroll 2
    for (int v = 0; v < W; ++v) table[v] = segment_table(rows[v].bases[c0 / kChunksPerSegment]);
    const int end = std::min(chunks, c0 + kChunksPerSegment);
    for (int c = c0; c < end; c += 2) {
#pragma GCC unroll 2
      for (int v = 0; v < W; ++v) p[v] = rows[v].planes + c * rows[v].stride;
      // (kernels.h; a pair's rows are one stream: its first row's steps cover it)
      prefetch_weights_ahead(p[0], 2 * rows[0].stride);
      const size_t i = static_cast<size_t>(c) * kPackedChunk;
      accumulate_chunk<W, R, 0>(p, table, xb + i, ldx, sum);
      if (c + 1 < end) {
#pragma GCC unroll 2
        for (int v = 0; v < W; ++v) p[v] += rows[v].stride;
        accumulate_chunk<W, R, 2>(p, table, xb + i + kPackedChunk, ldx, sum);
      }
    }
  }
#pragma GCC unroll 2
  for (int v = 0; v < W; ++v)
#pragma GCC unroll 4
    for (int t = 0; t < R; ++t) {
      const __m512* s4 = sum[v][t];
      float s = _mm512_reduce_add_ps(
          _mm512_add_ps(_mm512_add_ps(s4[0], s4[1]), _mm512_add_ps(s4[2], s4[3])));
      const uint16_t* x = xb + static_cast<size_t>(t) * ldx;
      for (const PackedException* e = rows[v].ex; e != rows[v].ex_end; ++e)
        s += bf16_to_f32(e->value) * bf16_to_f32(x[e->col]);
      out[v][t] = s;
    }
}

WHALE_PACKED_TARGET void unpack_row_vectors(const PackedBf16& m, int cols, int r, uint16_t* out) {
  const uint8_t* planes = m.row_planes(r, cols);
  const uint8_t* bases = m.bases + static_cast<size_t>(r) * packed_bf16_segments(cols);
  for (int s = 0; s < cols; s += kPackedSegment) {
    const __m512i table = segment_table(bases[s / kPackedSegment]);
    for (int c = s; c < std::min(cols, s + kPackedSegment); c += kPackedChunk) {
      __m512bh w[2];
      unpack_chunk(planes + c / kPackedChunk * m.chunk_stride(), table, w);
      _mm512_storeu_si512(out + c, reinterpret_cast<__m512i>(w[0]));
      _mm512_storeu_si512(out + c + 32, reinterpret_cast<__m512i>(w[1]));
    }
  }
  for (uint32_t e = m.offsets[r]; e < m.offsets[r + 1]; ++e)
    out[m.exceptions[e].col] = m.exceptions[e].value;
}

// Rows of a paired matrix two at a time for one or two activation rows (with more, a pair's sums
// would not fit the registers); other rows one at a time.
template <int R>
WHALE_PACKED_TARGET void row_range(const PackedBf16& m, int cols, int r0, int r1,
                                   const uint16_t* xb, int ldx, float* y, size_t ldy) {
  const int segments = packed_bf16_segments(cols);
  const auto row = [&](int r) {
    return PackedRow{m.row_planes(r, cols), m.chunk_stride(),
                     m.bases + static_cast<size_t>(r) * segments, m.exceptions + m.offsets[r],
                     m.exceptions + m.offsets[r + 1]};
  };
  constexpr int kPair = R <= 2 ? 2 : 1;
  int r = r0;
  if (m.paired && kPair == 2 && r % 2 == 1) {  // a pair's second row alone, first
    const PackedRow rows[1] = {row(r)};
    float out[1][R];
    dot_rows<1, R>(rows, cols, xb, ldx, out);
#pragma GCC unroll 4
    for (int t = 0; t < R; ++t) y[t * ldy] = out[0][t];
    ++r;
  }
  if (m.paired)
    for (; r + kPair <= r1; r += kPair) {
      PackedRow rows[kPair];
      float out[kPair][R];
#pragma GCC unroll 2
      for (int v = 0; v < kPair; ++v) rows[v] = row(r + v);
      dot_rows<kPair, R>(rows, cols, xb, ldx, out);
#pragma GCC unroll 2
      for (int v = 0; v < kPair; ++v)
#pragma GCC unroll 4
        for (int t = 0; t < R; ++t) y[t * ldy + (r + v - r0)] = out[v][t];
    }
  for (; r < r1; ++r) {
    const PackedRow rows[1] = {row(r)};
    float out[1][R];
    dot_rows<1, R>(rows, cols, xb, ldx, out);
#pragma GCC unroll 4
    for (int t = 0; t < R; ++t) y[t * ldy + (r - r0)] = out[0][t];
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

void pair_packed_rows(uint8_t* planes, int rows, int cols) {
  check(rows % 2 == 0, "pair_packed_rows: an odd number of rows");
  const size_t row_bytes = packed_bf16_row_bytes(cols);
  const int chunks = cols / kPackedChunk;
  std::vector<uint8_t> pair(2 * row_bytes);
  for (int r = 0; r < rows; r += 2) {
    uint8_t* first = planes + static_cast<size_t>(r) * row_bytes;
    std::copy_n(first, 2 * row_bytes, pair.data());
    for (int c = 0; c < chunks; ++c)
      for (int v = 0; v < 2; ++v)
        std::copy_n(pair.data() + v * row_bytes + static_cast<size_t>(c) * kPackedChunkBytes,
                    kPackedChunkBytes,
                    first + (2 * static_cast<size_t>(c) + v) * kPackedChunkBytes);
  }
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
