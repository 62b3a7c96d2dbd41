// bf16 rows packed in 12 bits a value (ops/packed_bf16.h): the packing is lossless (every bit
// pattern comes back, exceptions and signed zeros included), the vector unpacking equals the
// reference's, the row dots match a double-precision reference and are bit for bit
// batch-independent, a Linear over packed rows gives the plain Linear's results (prefill's tiles
// bit for bit), and bf16 models from disk come packed on AVX512-BF16 CPUs.
#include "ops/packed_bf16.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "base/aligned.h"
#include "model/transformer.h"
#include "ops/bf16_gemm.h"
#include "ops/linear.h"
#include "ops/precision.h"
#include "tensor/dtype.h"
#include "test_util.h"

namespace whale {
namespace {

using testing::bits;
using testing::random_vector;
using testing::TempDir;

// Shapes: one chunk, an odd number of chunks in a short last segment (576 = 512 + 64), exactly one
// segment, an expert's 1408 = 2 · 512 + 384, several segments.
constexpr int kCols[] = {64, 576, 512, 1408, 2048};

// A random bf16 matrix (Gaussian, σ = 0.02, as initialized weights) with what the 12-bit code
// cannot hold mixed in — zeros of both signs, values far below their segment's largest, a row
// whose segment holds a large outlier, infinities — and a Linear over it, plain and packed.
struct PackedMatrix {
  int rows, cols;
  std::vector<uint16_t> values;
  std::vector<uint8_t> planes, bases;
  std::vector<uint32_t> offsets;
  std::vector<PackedException> exceptions;
  Linear plain, packed;  // views of the vectors above: not copyable
  PackedMatrix(const PackedMatrix&) = delete;
  PackedMatrix(int rows_, int cols_, std::mt19937& rng, bool infinity = true)
      : rows(rows_), cols(cols_) {
    std::normal_distribution<float> normal(0.0f, 0.02f);
    values.resize(static_cast<size_t>(rows) * cols);
    for (auto& v : values) v = f32_to_bf16(normal(rng));
    std::uniform_int_distribution<size_t> any(0, values.size() - 1);
    for (int i = 0; i < rows * cols / 50; ++i) {
      const size_t at = any(rng);
      switch (i % 5) {
        case 0:
          values[at] = 0x0000;
          break;  // +0
        case 1:
          values[at] = 0x8000;
          break;  // −0
        case 2:
          values[at] = f32_to_bf16(1e-9f * (i % 2 ? 1 : -1));
          break;  // far below
        case 3:
          values[at] = f32_to_bf16(3e-38f);
          break;  // near the smallest normal
        case 4:
          values[at] = 0x0001;
          break;  // a subnormal
      }
    }
    values[cols / 2] = f32_to_bf16(-1e4f);  // row 0: an outlier lifts its segment's base
    if (rows > 1 && infinity) values[cols + 3] = 0x7F80;  // row 1: +infinity
    const size_t row_bytes = packed_bf16_row_bytes(cols);
    const int segments = packed_bf16_segments(cols);
    planes.resize(rows * row_bytes);
    bases.resize(static_cast<size_t>(rows) * segments);
    offsets.assign(rows + 1, 0);
    for (int r = 0; r < rows; ++r) {
      const uint16_t* row = values.data() + static_cast<size_t>(r) * cols;
      uint8_t* row_planes = planes.data() + r * row_bytes;
      uint8_t* row_bases = bases.data() + static_cast<size_t>(r) * segments;
      const size_t n = pack_bf16_row(row, cols, row_planes, row_bases, &exceptions);
      offsets[r + 1] = static_cast<uint32_t>(exceptions.size());
      // The reference packs the same bytes and exceptions.
      std::vector<uint8_t> ref_planes(row_bytes), ref_bases(segments);
      std::vector<PackedException> ref_exceptions;
      EXPECT_EQ(
          pack_bf16_row_reference(row, cols, ref_planes.data(), ref_bases.data(), &ref_exceptions),
          n);
      EXPECT_EQ(ref_planes, std::vector<uint8_t>(row_planes, row_planes + row_bytes)) << r;
      EXPECT_EQ(ref_bases, std::vector<uint8_t>(row_bases, row_bases + segments)) << r;
      for (size_t e = 0; e < n; ++e) {
        EXPECT_EQ(ref_exceptions[e].col, exceptions[exceptions.size() - n + e].col);
        EXPECT_EQ(ref_exceptions[e].value, exceptions[exceptions.size() - n + e].value);
      }
    }
    for (Linear* l : {&plain, &packed}) {
      l->dtype = DType::BF16;
      l->rows = rows;
      l->cols = cols;
    }
    plain.data = reinterpret_cast<const uint8_t*>(values.data());
    packed.data = planes.data();
    packed.packed = {planes.data(), bases.data(), offsets.data(), exceptions.data()};
  }
  double abs_sum(int r, const uint16_t* xb) const {
    double s = 0;
    for (int c = 0; c < cols; ++c)
      s += std::fabs(bf16_to_f32(values[static_cast<size_t>(r) * cols + c]) * bf16_to_f32(xb[c]));
    return s;
  }
};

TEST(PackedBf16, PackingIsLossless) {
  std::mt19937 rng(3);
  for (int cols : kCols) {
    PackedMatrix m(9, cols, rng);
    EXPECT_GT(m.exceptions.size(), 0u);
    // The 12-bit code holds nearly all of them: the exceptions are what was mixed in
    // (and the two segments that hold row 0's outlier and row 1's infinity, whole).
    EXPECT_LT(m.exceptions.size(), m.values.size() / 20 + 2 * kPackedSegment);
    std::vector<uint16_t> reference(cols), vectors(cols);
    for (int r = 0; r < m.rows; ++r) {
      unpack_bf16_row_reference(m.packed.packed, cols, r, reference.data());
      unpack_bf16_row(m.packed.packed, cols, r, vectors.data());
      const uint16_t* row = m.values.data() + static_cast<size_t>(r) * cols;
      ASSERT_EQ(reference, std::vector<uint16_t>(row, row + cols))
          << "cols " << cols << " row " << r;
      ASSERT_EQ(vectors, reference) << "cols " << cols << " row " << r;
    }
  }
  // Every bit pattern at every position of a chunk: rows of one repeated pattern per segment
  // (so each is its segment's largest) and rows where it sits among Gaussian values.
  std::vector<uint16_t> row(512), back(512);
  std::vector<uint8_t> planes(packed_bf16_row_bytes(512)), bases(1);
  for (uint32_t pattern = 0; pattern < 65536; pattern += 7) {
    std::vector<PackedException> exceptions;
    for (int i = 0; i < 512; ++i)
      row[i] = static_cast<uint16_t>(i % 3 == 0 ? pattern : (pattern + 97 * i) & 0xFFFF);
    pack_bf16_row(row.data(), 512, planes.data(), bases.data(), &exceptions);
    std::vector<uint8_t> ref_planes(planes.size()), ref_bases(1);
    std::vector<PackedException> ref_exceptions;
    pack_bf16_row_reference(row.data(), 512, ref_planes.data(), ref_bases.data(), &ref_exceptions);
    ASSERT_EQ(ref_planes, planes) << "pattern " << pattern;
    ASSERT_EQ(ref_bases, bases) << "pattern " << pattern;
    ASSERT_EQ(ref_exceptions.size(), exceptions.size()) << "pattern " << pattern;
    const uint32_t offsets[2] = {0, static_cast<uint32_t>(exceptions.size())};
    const PackedBf16 m{planes.data(), bases.data(), offsets, exceptions.data()};
    unpack_bf16_row_reference(m, 512, 0, back.data());
    ASSERT_EQ(back, row) << "pattern " << pattern;
    unpack_bf16_row(m, 512, 0, back.data());
    ASSERT_EQ(back, row) << "pattern " << pattern;
  }
}

TEST(PackedBf16, RowDotsMatchReferenceAndAreBatchIndependent) {
  if (!bf16_gemm_available()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  std::mt19937 rng(5);
  for (int cols : kCols) {
    PackedMatrix m(13, cols, rng);
    const int ldx = bf16_row_stride(cols);
    for (int T : {1, 2, 4, 5, 7}) {
      const auto x = random_vector(static_cast<size_t>(T) * cols, rng);
      std::vector<uint16_t> xb(static_cast<size_t>(T) * ldx);
      round_to_bf16(x.data(), T, cols, ldx, xb.data());
      // The whole range at once, against each row alone with each token alone.
      std::vector<float> y(static_cast<size_t>(T) * m.rows);
      packed_bf16_dot_row_range(m.packed.packed, cols, 0, m.rows, xb.data(), ldx, T, y.data(),
                                m.rows);
      for (int r = 0; r < m.rows; ++r)
        for (int t = 0; t < T; ++t) {
          const uint16_t* xt = xb.data() + static_cast<size_t>(t) * ldx;
          float alone;
          packed_bf16_dot_row_range(m.packed.packed, cols, r, r + 1, xt, ldx, 1, &alone, 1);
          ASSERT_EQ(bits(y[static_cast<size_t>(t) * m.rows + r]), bits(alone))
              << "cols " << cols << " T " << T << " row " << r;
          double reference;
          packed_bf16_dot_reference(m.packed.packed, cols, r, xt, &reference);
          if (std::isinf(reference) || std::isnan(reference)) {
            ASSERT_TRUE(std::isinf(alone) || std::isnan(alone));
            continue;
          }
          ASSERT_NEAR(alone, reference, 1e-5 * m.abs_sum(r, xt) + 1e-6)
              << "cols " << cols << " row " << r;
        }
    }
  }
}

TEST(PackedBf16, LinearOverPackedRowsMatchesThePlainOne) {
  std::mt19937 rng(8);
  for (int cols : {576, 1408}) {
    // No infinities here: they would make the sums infinite (the row dots' test has them).
    const PackedMatrix clean(41, cols, rng, /*infinity=*/false);
    const Linear& plain = clean.plain;
    const Linear& packed = clean.packed;
    EXPECT_EQ(packed.row_bytes() * 4, plain.row_bytes() * 3);
    // The row dots add the exceptions after the vector sum: within rounding.
    testing::expect_same_products(
        packed, plain, bf16_gemm_available(), rng,
        [](const float*, int, float ref) { return 1e-4f * std::fabs(ref) + 1e-4f; });
  }
}

// Packed rows take their activations on cache lines wherever the planes sit (the kernel loads a
// chunk's activations as two whole lines; plain bf16 rows at a multiple of 32 bytes shift them),
// and the products are the same bits.
TEST(PackedBf16, ActivationsStartOnACacheLine) {
  if (!bf16_gemm_available()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  std::mt19937 rng(10);
  testing::FastActivations fast;
  const PackedMatrix m(9, 576, rng, /*infinity=*/false);
  const int T = 2;
  const auto x = random_vector(static_cast<size_t>(T) * m.cols, rng);
  std::vector<float> expected(static_cast<size_t>(T) * m.rows), got(expected.size());
  linear_forward(m.packed, x.data(), T, expected.data());
  AlignedVector<uint8_t> storage(m.planes.size() + 64);
  for (int offset : {0, 32}) {
    std::copy(m.planes.begin(), m.planes.end(), storage.begin() + offset);
    Linear packed = m.packed;
    packed.data = storage.data() + offset;
    packed.packed.planes = packed.data;
    const Linear::RowsInput in = packed.prepare_rows(x.data(), T);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(in.xb()) % 64, 0u) << "planes at " << offset;
    linear_forward(packed, x.data(), T, got.data());
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(bits(got[i]), bits(expected[i])) << "planes at " << offset << ", output " << i;
  }
}

// A bf16 model from disk: on AVX512-BF16 CPUs (fast paths) the matrices whose rows fit come
// packed (not the embeddings, not kv_b_proj), the bytes a pass reads fall by a quarter, and its
// logits are those of the same checkpoint read unpacked (Model::from_source does not pack) within
// rounding; on the exact path nothing is packed and the logits are the same bits.
TEST(PackedBf16, LoadedBf16ModelsArePacked) {
  TempDir tmp;
  auto r = testing::run_whale("init --preset tiny --dtype bf16 --seed 9 --out " + (tmp / "bf16"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto model = [&] {
    testing::FastActivations fast;
    return Model::load(tmp / "bf16");
  }();
  const auto exact = Model::load(tmp / "bf16");
  EXPECT_FALSE(exact->weights().layers[0].mla.o_proj.bf16_packed());
  const Checkpoint checkpoint(tmp / "bf16");
  const auto plain = Model::from_source(model->config(), checkpoint);
  const Weights& w = model->weights();
  EXPECT_FALSE(w.embed_tokens.bf16_packed());
  EXPECT_FALSE(w.layers[0].mla.kv_b_proj.bf16_packed());
  int packed = 0;
  for (const Layer& layer : w.layers) {
    std::vector<const Linear*> matrices = {&layer.mla.kv_a_proj_with_mqa, &layer.mla.o_proj,
                                           &layer.mlp.down_proj, &layer.moe.shared.up_proj};
    for (const FeedForward& expert : layer.moe.experts) matrices.push_back(&expert.down_proj);
    for (const Linear* l : matrices) {
      if (l->dtype != DType::BF16) continue;
      ASSERT_EQ(l->bf16_packed(), bf16_gemm_available() && packed_bf16_fit(l->cols));
      packed += l->bf16_packed();
    }
  }
  if (bf16_gemm_available()) {
    EXPECT_GT(packed, 0);
    EXPECT_TRUE(w.lm_head.bf16_packed());
    EXPECT_LT(w.lm_head.bytes(), plain->weights().lm_head.bytes() * 3 / 4 + 4096);
  }
  std::vector<int> tokens;
  for (int i = 0; i < 12; ++i) tokens.push_back((i * 37 + 5) % model->config().vocab_size);
  testing::expect_same_decode(*model, *plain, tokens);
  for (bool fast : {false, true}) {
    set_exact_activations(!fast);
    // Prefill (the tiles) of the packed model against the plain one: the same bits.
    ASSERT_EQ(testing::prefill_logits(*model, tokens), testing::prefill_logits(*plain, tokens))
        << "fast " << fast;
  }
  set_exact_activations(true);
}

// Absorbed attention reads a bf16 kv_b_proj through packed copies (MlaWeights::absorbed_keys,
// absorbed_values) where its head widths fit packed rows: the copies hold exactly W_UK's rows
// transposed and W_UV's rows, decode's byte counts name them, and decode on them behaves
// (testing::expect_absorbed_copies_decode: the exact path's bits, the fast path's bound, and a
// verification pass bit for bit as its steps).
TEST(PackedBf16, AbsorbedAttentionReadsPackedCopiesOfKvB) {
  TempDir tmp;
  const std::string dir = testing::init_wide_latent_model(tmp);
  const testing::LoadedTwice loaded(dir);
  const ModelConfig& c = loaded.fast->config();
  const Weights& w = loaded.fast->weights();
  if (!bf16_gemm_available()) {
    EXPECT_TRUE(w.layers[0].mla.absorbed_keys.empty());
    GTEST_SKIP() << "no AVX512-BF16: absorbed attention reads kv_b_proj as stored";
  }
  const int heads = c.num_attention_heads, nope = c.qk_nope_head_dim, vdim = c.v_head_dim;
  const int kvr = c.kv_lora_rank;
  std::vector<const MlaWeights*> mlas;
  for (const Layer& layer : w.layers) mlas.push_back(&layer.mla);
  if (w.has_mtp) mlas.push_back(&w.mtp.block.mla);
  for (const MlaWeights* m : mlas) {
    const Linear &keys = m->absorbed_keys, &values = m->absorbed_values, &kv_b = m->kv_b_proj;
    ASSERT_TRUE(keys.bf16_packed() && values.bf16_packed());
    ASSERT_FALSE(kv_b.bf16_packed());
    ASSERT_EQ(keys.rows, heads * kvr);
    ASSERT_EQ(keys.cols, nope);
    ASSERT_EQ(values.rows, heads * vdim);
    ASSERT_EQ(values.cols, kvr);
    const auto* stored = reinterpret_cast<const uint16_t*>(kv_b.data);
    std::vector<uint16_t> row(kvr);
    for (int h = 0; h < heads; ++h) {
      const uint16_t* head = stored + static_cast<size_t>(h) * (nope + vdim) * kvr;
      for (int k = 0; k < kvr; ++k) {
        unpack_bf16_row(keys.packed, nope, h * kvr + k, row.data());
        for (int i = 0; i < nope; ++i)
          ASSERT_EQ(row[i], head[static_cast<size_t>(i) * kvr + k]) << h << " " << k << " " << i;
      }
      for (int i = 0; i < vdim; ++i) {
        unpack_bf16_row(values.packed, kvr, h * vdim + i, row.data());
        for (int k = 0; k < kvr; ++k)
          ASSERT_EQ(row[k], head[static_cast<size_t>(nope + i) * kvr + k]) << h << " " << i;
      }
    }
  }
  // Decode's byte counts read the copies, not kv_b_proj.
  const std::vector<const Linear*> read = attention_matrices(w.layers[0]);
  EXPECT_EQ(std::count(read.begin(), read.end(), &w.layers[0].mla.absorbed_keys), 1);
  EXPECT_EQ(std::count(read.begin(), read.end(), &w.layers[0].mla.absorbed_values), 1);
  EXPECT_EQ(std::count(read.begin(), read.end(), &w.layers[0].mla.kv_b_proj), 0);
  // q_nope and the latent sums rounded to bf16 on top of the other products' rounding: within
  // GoldenBf16's bound of the exact logits.
  testing::expect_absorbed_copies_decode(*loaded.fast, *loaded.stored, 2e-2);
}

}  // namespace
}  // namespace whale
