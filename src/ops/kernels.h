// Innermost loops, in two versions: a plain scalar reference (`*_reference`) and a SIMD version
// compiled for every x86-64 level by Highway and picked at run time (AVX2, AVX-512, ...).
// Tests hold the SIMD versions to the references.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace whale {

float dot_f32(const float* a, const float* b, size_t n);
// Σ a[i], read as the weight kernels read their rows (the page prefetch below): the bandwidth
// probe's streaming read.
float stream_sum_f32(const float* a, size_t n);
float dot_bf16(const uint16_t* w, const float* x, size_t n);  // w bf16
// w fp8 e4m3 codes with one scale per `block` codes (DeepSeek-V3's 128-wide blocks along a row):
// Σ_b block_scales[b] · Σ_{i in block b} w[i] · x[i]; NaN if any code is a NaN (0x7F, 0xFF), as
// the sum would be.
float dot_e4m3(const uint8_t* w, const float* block_scales, size_t block, const float* x, size_t n);
float dot_f16(const uint16_t* w, const float* x, size_t n);  // w IEEE half
void bf16_to_f32(const uint16_t* in, float* out, size_t n);
// out[i] = e4m3 code w[i] · block_scales[i / block] (NaN codes give NaN).
void e4m3_to_f32(const uint8_t* w, const float* block_scales, size_t block, float* out, size_t n);
void f16_to_f32(const uint16_t* in, float* out, size_t n);
void axpy(float a, const float* x, float* y, size_t n);  // y += a·x
// out[d] += Σ_{s < n} p[s] · v[s·ldv + d] for d < D, v bf16: MLA's absorption (W_UKᵀ q_nope) in
// one call — each element one FMA per s in s order, the same bits as converting each row and
// axpy-ing it (the reference does exactly that order by std::fma).
void weighted_bf16_rows_sum(const float* p, const uint16_t* v, size_t ldv, size_t n, size_t D,
                            float* out);
void weighted_bf16_rows_sum_reference(const float* p, const uint16_t* v, size_t ldv, size_t n,
                                      size_t D, float* out);
// The same two for q8 rows (codes ld_codes apart, their f16 group scales ld_scales apart; D a
// multiple of kQuantGroup): the bits of q8_to_f32 + axpy and of dot_q8, in one call.
void weighted_q8_rows_sum(const float* p, const int8_t* codes, size_t ld_codes,
                          const uint16_t* scales, size_t ld_scales, size_t n, size_t D, float* out);
void dot_q8_each_row(const int8_t* codes, size_t ld_codes, const uint16_t* scales, size_t ld_scales,
                     size_t rows, const float* x, size_t n, float* out);
// out[r] = dot_bf16(w + r·ldw, x, n) for r < rows, the same bits in one call (MLA's W_UV rows).
void dot_bf16_each_row(const uint16_t* w, size_t ldw, size_t rows, const float* x, size_t n,
                       float* out);
// out[g·ldo + d] += Σ_{s < n} p[g·ldp + s] · v[s·ldv + d] for g < G, d < D: G weighted sums of
// the same n vectors (attention's probabilities times its values), each vector read once for up
// to 8 of them. Every element is one FMA per s, in s order, whatever G: a row's result does not
// depend on its batch-mates. The reference does the same FMAs one element at a time.
void weighted_rows_sum(const float* p, size_t ldp, size_t G, const float* v, size_t ldv, size_t n,
                       size_t D, float* out, size_t ldo);
// s[j·lds + h] = Σ_{k < K} q[k·ldq + h] · e[j·lde + k] for h < H, j < n: H queries stored
// transposed (k-major, the queries across a vector's lanes) against n entries — attention's
// scores of several heads sharing the entries (MLA's absorbed form) with no horizontal sums. The
// SIMD version computes and stores whole vectors: q's rows and s's rows must hold H rounded up
// to 16 floats. Every score is one FMA per k in k order, whatever H (the reference likewise).
void transposed_scores(const float* q, size_t ldq, size_t H, const float* e, size_t lde, size_t n,
                       size_t K, float* s, size_t lds);
void transposed_scores_reference(const float* q, size_t ldq, size_t H, const float* e, size_t lde,
                                 size_t n, size_t K, float* s, size_t lds);
void weighted_rows_sum_reference(const float* p, size_t ldp, size_t G, const float* v, size_t ldv,
                                 size_t n, size_t D, float* out, size_t ldo);
// gate[i] = silu(gate[i]) · up[i], and x[i] = e^(x[i] - shift) returning Σ x[i] (e^-inf = 0):
// SIMD exponentials (Highway's, about 1 ulp) for the FFN activation and softmax.
void silu_mul_kernel(float* gate, const float* up, size_t n);
float exp_shifted(float* x, size_t n, float shift);
// The index of the first largest of x[0 … n), NaNs skipped (0 when n is 0 or every value is NaN):
// greedy decoding's choice over a vocabulary-wide row, which std::max_element took 0.38 ms of a
// v2-lite-8l decode step (102400 logits) to find, scalar, against ~6 µs in two SIMD passes.
size_t argmax_f32(const float* x, size_t n);
size_t argmax_f32_reference(const float* x, size_t n);

// Group-quantized rows (whale's q8/q4, layout in io/quantize.h): groups of kQuantGroup values
// along the row, the last one possibly partial; scales (and q4's minimums) are IEEE halves.
//   q8: w[i] = codes[i] · scales[i / 32]                       (codes int8 in [-127, 127])
//   q4: each group is 16 bytes, value j < 16 in the low nibble of byte j and value 16 + j in its
//       high nibble; w = nibble · scale + min with (scale, min) = scale_min[2g], scale_min[2g+1].
constexpr size_t kQuantGroup = 32;
float dot_q8(const int8_t* codes, const uint16_t* scales, const float* x, size_t n);
float dot_q4(const uint8_t* packed, const uint16_t* scale_min, const float* x, size_t n);
void q8_to_f32(const int8_t* codes, const uint16_t* scales, float* out, size_t n);
void q4_to_f32(const uint8_t* packed, const uint16_t* scale_min, float* out, size_t n);
// Element i of a row, the plain way (what the references and the tests use).
float q8_element(const int8_t* codes, const uint16_t* scales, size_t i);
float q4_element(const uint8_t* packed, const uint16_t* scale_min, size_t i);

// The prefetch helpers below are always inlined: GCC 12 otherwise keeps them as calls through
// its interprocedural passes, where mod/ref analysis finds no effect in a function that only
// prefetches and deletes the call — silently, in some callers and not others (session 23: the
// Highway row dots here, and a new super-row kernel, had lost their page prefetch; a harness
// calling the group-lane kernels' helpers read rows at half the rate).
#define WHALE_PREFETCH_INLINE __attribute__((always_inline)) inline

// Decode's row-dot kernels (kernels.cc, bf16_gemm.cc, int8_gemm.cc, group_lanes.cc,
// packed_bf16.cc) stream weight rows from memory. Once per 4 KiB page of those bytes they prefetch
// one line kWeightPrefetchBytes ahead into L2 — the first line of the page after next: the
// hardware's stream prefetcher stops at page boundaries, and a touch ahead of each page keeps the
// stream going. On the 2-core Zen 5 VM (session 13, alternated in one process, 30 rounds each)
// v2-lite-8l decode ran 1.24× (bf16 packed) and 1.28× (q8) faster than with session 12's prefetch
// of one line 4 KiB ahead every step (a line every 192 or 512 bytes). One line 12 KiB ahead read
// alike, 4 KiB ahead 7% slower, two lines a page 2–5% slower (bench/inference/README.md, session
// 13). No prefetch at all read the lm_head like the old one.
constexpr size_t kPageBytes = 4096;
constexpr size_t kWeightPrefetchBytes = 2 * kPageBytes;

// For steps of any sizes laid end to end: the step that holds a page's first byte prefetches
// the page after next.
WHALE_PREFETCH_INLINE void prefetch_page_ahead(const void* p, size_t step) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(p), last = first + step - 1;
  if ((first & (kPageBytes - 1)) == 0 || ((first ^ last) & ~(kPageBytes - 1)) != 0)
    __builtin_prefetch(
        reinterpret_cast<const char*>((last & ~(kPageBytes - 1)) + kWeightPrefetchBytes), 0, 2);
}

// Whether a step of `step` bytes (≤ a page) starting at p is the first of its page: through a
// stream of such steps, exactly one per page.
WHALE_PREFETCH_INLINE bool first_step_of_page(const void* p, size_t step) {
  return (reinterpret_cast<uintptr_t>(p) & (kPageBytes - 1)) < step;
}

// Called with each step's first weight byte p: on a page's first step, the prefetch.
WHALE_PREFETCH_INLINE void prefetch_weights_ahead(const void* p, size_t step) {
  if (first_step_of_page(p, step))
    __builtin_prefetch(
        reinterpret_cast<const char*>((reinterpret_cast<uintptr_t>(p) & ~(kPageBytes - 1)) +
                                      kWeightPrefetchBytes),
        0, 2);
}

// Several activation rows against one weight row: out[t] = dot(w, x + t·ldx) for t < T (any
// T ≥ 1; x's rows ldx floats apart). Each weight chunk is loaded and dequantized once for up to 7
// rows at a time, and every row is summed in exactly the single-row kernel's order (same lanes,
// partial sums, reduction and tail), so out[t] is bit-identical to the single-row kernel on row t
// whatever its batch-mates: speculative decoding's verification reproduces plain decoding, and a
// request's result never depends on the batch it was served in. References: the single-row
// references, row by row.
void dot_f32_rows(const float* w, const float* x, size_t ldx, size_t T, size_t n, float* out);
void dot_bf16_rows(const uint16_t* w, const float* x, size_t ldx, size_t T, size_t n, float* out);
void dot_f16_rows(const uint16_t* w, const float* x, size_t ldx, size_t T, size_t n, float* out);
void dot_e4m3_rows(const uint8_t* w, const float* block_scales, size_t block, const float* x,
                   size_t ldx, size_t T, size_t n, float* out);
void dot_q8_rows(const int8_t* codes, const uint16_t* scales, const float* x, size_t ldx, size_t T,
                 size_t n, float* out);
void dot_q4_rows(const uint8_t* packed, const uint16_t* scale_min, const float* x, size_t ldx,
                 size_t T, size_t n, float* out);

float dot_f32_reference(const float* a, const float* b, size_t n);
float stream_sum_f32_reference(const float* a, size_t n);
float dot_bf16_reference(const uint16_t* w, const float* x, size_t n);
float dot_e4m3_reference(const uint8_t* w, const float* block_scales, size_t block, const float* x,
                         size_t n);
float dot_f16_reference(const uint16_t* w, const float* x, size_t n);
float dot_q8_reference(const int8_t* codes, const uint16_t* scales, const float* x, size_t n);
float dot_q4_reference(const uint8_t* packed, const uint16_t* scale_min, const float* x, size_t n);

// The instruction set the dispatcher chose on this machine ("AVX3_ZEN4", "AVX2", ...).
std::string simd_target_name();

}  // namespace whale
