// Decode's q8 rows in group-lane order (ops/q8_lanes.h): the reordering and its inverse, the
// activation quantizer against int8_gemm's scalar reference, the row dots against a
// double-precision reference on the same quantized activations and bit for bit batch-independent,
// a Linear over reordered rows on every path (row dots, prefill tiles, the exact path, the
// dequantized rows) against the same Linear in the stored order, and a q8 model loaded from disk.
#include "ops/q8_lanes.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "io/quantize.h"
#include "model/transformer.h"
#include "ops/int8_gemm.h"
#include "ops/kernels.h"
#include "ops/linear.h"
#include "ops/precision.h"
#include "test_util.h"

namespace whale {
namespace {

using testing::random_vector;
using testing::TempDir;

#define SKIP_WITHOUT_VNNI() \
  if (!vnni_available()) GTEST_SKIP() << "this CPU has no AVX512-VNNI"

// Shapes: one group, a short block only, exactly one block, a block and a short one (an expert's
// 1408 = 2 · 512 + 384), several blocks.
constexpr int kCols[] = {32, 96, 512, 544, 1408, 2048};

// A random q8 matrix, in the stored order and reordered, each with a Linear over it.
struct LaneMatrix {
  int rows, cols;
  std::vector<int8_t> codes, lanes;
  std::vector<uint16_t> scales;
  Linear stored, reordered;
  LaneMatrix(int rows_, int cols_, std::mt19937& rng) : rows(rows_), cols(cols_) {
    const auto w = random_vector(static_cast<size_t>(rows) * cols, rng, 0.2f);
    const int groups = cols / 32;
    codes.resize(static_cast<size_t>(rows) * cols);
    lanes.resize(codes.size());
    scales.resize(static_cast<size_t>(rows) * groups);
    for (int r = 0; r < rows; ++r) {
      const size_t at = static_cast<size_t>(r) * cols;
      quantize_row_q8(w.data() + at, cols, codes.data() + at,
                      scales.data() + static_cast<size_t>(r) * groups);
      q8_row_to_lanes(codes.data() + at, cols, lanes.data() + at);
    }
    for (Linear* l : {&stored, &reordered}) {
      l->dtype = DType::I8;
      l->rows = rows;
      l->cols = cols;
      l->qscale = scales.data();
    }
    stored.data = reinterpret_cast<const uint8_t*>(codes.data());
    reordered.data = reinterpret_cast<const uint8_t*>(lanes.data());
    reordered.q8_lanes = true;
  }
  // Σ_c |w[r, c] · x[c]|: the scale of an output's f32 rounding error.
  float abs_sum(int r, const float* x) const {
    double sum = 0;
    for (int c = 0; c < cols; ++c)
      sum += std::fabs(q8_element(codes.data() + static_cast<size_t>(r) * cols,
                                  scales.data() + static_cast<size_t>(r) * (cols / 32), c) *
                       x[c]);
    return static_cast<float>(sum);
  }
};

uint32_t bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

TEST(Q8Lanes, ReorderingIsAPermutationAndItsInverse) {
  std::mt19937 rng(31);
  for (int cols : kCols) {
    std::vector<int8_t> row(cols), lanes(cols), back(cols);
    for (int i = 0; i < cols; ++i) row[i] = static_cast<int8_t>(i * 7 + 3);
    q8_row_to_lanes(row.data(), cols, lanes.data());
    std::vector<int> seen(cols, 0);
    for (int i = 0; i < cols; ++i) {
      const size_t at = q8_lane_index(cols, i);
      ASSERT_LT(at, static_cast<size_t>(cols));
      ASSERT_EQ(lanes[at], row[i]) << "cols " << cols << " i " << i;
      ++seen[at];
    }
    for (int i = 0; i < cols; ++i) ASSERT_EQ(seen[i], 1) << "cols " << cols << " at " << i;
    // The documented order: in a full block, value j of group i at (j / 4) · 64 + 4i + j % 4.
    if (cols >= 512) {
      EXPECT_EQ(q8_lane_index(cols, 0 * 32 + 5), 64u + 1);
      EXPECT_EQ(q8_lane_index(cols, 3 * 32 + 30), 7u * 64 + 12 + 2);
    }
    q8_row_from_lanes(lanes.data(), cols, back.data());
    ASSERT_EQ(back, row) << "cols " << cols;
  }
  EXPECT_TRUE(q8_lanes_fit(1408));
  EXPECT_FALSE(q8_lanes_fit(1000));
  EXPECT_FALSE(q8_lanes_fit(0));
}

TEST(Q8Lanes, ActivationsMatchTheInt8Reference) {
  SKIP_WITHOUT_VNNI();
  std::mt19937 rng(32);
  for (int cols : kCols) {
    const int T = 3;
    auto x = random_vector(static_cast<size_t>(T) * cols, rng);
    x[0] = 40;  // an outlier in the first group; the second group of row 1 all zeros
    if (cols >= 64)
      for (int c = 32; c < 64; ++c) x[cols + c] = 0;
    LaneActivations lanes;
    quantize_lane_activations(x.data(), T, cols, &lanes);
    Int8Activations ref;
    quantize_activations_reference(x.data(), T, cols, &ref);
    const int groups = cols / 32;
    ASSERT_EQ(lanes.blocks, (groups + 15) / 16);
    for (int t = 0; t < T; ++t) {
      ASSERT_EQ(reinterpret_cast<uintptr_t>(lanes.row(t)) % 64, 0u);
      for (int c = 0; c < cols; ++c)
        ASSERT_EQ(lanes.code(t, c), ref.code(t, c)) << "cols " << cols << " t " << t << " c " << c;
      for (int g = 0; g < lanes.blocks * 16; ++g) {
        if (g >= groups) {  // a short last block's empty lanes: zeros
          for (int j = 0; j < 32; ++j) ASSERT_EQ(lanes.code(t, g * 32 + j), 0);
          ASSERT_EQ(lanes.scale(t, g), 0.0f);
          ASSERT_EQ(lanes.sum_start(t, g), 0);
          continue;
        }
        ASSERT_EQ(lanes.scale(t, g), ref.scale(t, g * 32)) << "cols " << cols << " g " << g;
        ASSERT_EQ(lanes.sum_start(t, g), ref.group_offset(t, g)) << "cols " << cols;
      }
    }
    if (cols >= 64) {
      EXPECT_EQ(lanes.scale(1, 1), 0.0f);
    }
  }
}

TEST(Q8Lanes, RowDotsMatchReferenceAndAreBatchIndependent) {
  SKIP_WITHOUT_VNNI();
  std::mt19937 rng(33);
  for (int cols : kCols) {
    const LaneMatrix m(4, cols, rng);
    for (int T = 1; T <= 13; ++T) {  // passes of 6 rows and their remainders
      const auto x = random_vector(static_cast<size_t>(T) * cols, rng);
      LaneActivations xq;
      quantize_lane_activations(x.data(), T, cols, &xq);
      std::vector<float> y_ref(static_cast<size_t>(T) * m.rows);
      q8_gemm_reference(m.codes.data(), m.scales.data(), m.rows, cols, x.data(), T, y_ref.data(),
                        m.rows);
      // The whole range in one call, into a strided output: the same bits as row by row.
      const size_t ldy = m.rows + 2;
      std::vector<float> range(T * ldy, -1.0f);
      q8_lanes_dot_row_range(m.lanes.data(), m.scales.data(), m.rows, cols, xq, range.data(), ldy);
      for (int r = 0; r < m.rows; ++r) {
        std::vector<float> out(T);
        q8_lanes_dot_rows(m.lanes.data() + static_cast<size_t>(r) * cols,
                          m.scales.data() + static_cast<size_t>(r) * (cols / 32), cols, xq,
                          out.data());
        for (int t = 0; t < T; ++t) {
          const float* xt = x.data() + static_cast<size_t>(t) * cols;
          ASSERT_NEAR(out[t], y_ref[static_cast<size_t>(t) * m.rows + r],
                      1e-5f * m.abs_sum(r, xt) + 1e-6f)
              << "cols " << cols << " T " << T << " t " << t;
          LaneActivations one;
          quantize_lane_activations(xt, 1, cols, &one);
          float alone;
          q8_lanes_dot_rows(m.lanes.data() + static_cast<size_t>(r) * cols,
                            m.scales.data() + static_cast<size_t>(r) * (cols / 32), cols, one,
                            &alone);
          ASSERT_EQ(bits(out[t]), bits(alone)) << "cols " << cols << " T " << T << " t " << t;
          ASSERT_EQ(bits(range[t * ldy + r]), bits(out[t])) << "range, cols " << cols << " T " << T;
          ASSERT_EQ(range[t * ldy + m.rows], -1.0f) << "a gap in the output was written";
        }
      }
    }
  }
}

// The reordered Linear against the stored one: the same products on every path of
// linear_forward (few tokens: the group-lane row dots; many: prefill's tiles, which put the rows
// back in order; exact: f32 activations), and the same dequantized rows.
TEST(Q8Lanes, LinearOverReorderedRowsMatchesTheStoredOrder) {
  std::mt19937 rng(34);
  for (int cols : {96, 1408}) {
    const LaneMatrix m(37, cols, rng);
    std::vector<float> a(cols), b(cols);
    for (int r = 0; r < m.rows; ++r) {
      m.stored.row_to_f32(r, a.data());
      m.reordered.row_to_f32(r, b.data());
      ASSERT_EQ(a, b) << "row " << r;
    }
    for (bool fast : {false, true}) {
      if (fast && !vnni_available()) continue;
      set_exact_activations(!fast);
      for (int T : {1, 3, 7, kGemmMinTokens, 19}) {
        const auto x = random_vector(static_cast<size_t>(T) * cols, rng);
        std::vector<float> y(static_cast<size_t>(T) * m.rows), y_stored(y.size()), y_ref(y.size());
        linear_forward(m.reordered, x.data(), T, y.data());
        linear_forward(m.stored, x.data(), T, y_stored.data());
        linear_forward_reference(m.reordered, x.data(), T, y_ref.data());
        for (size_t i = 0; i < y.size(); ++i) {
          const int t = static_cast<int>(i) / m.rows, r = static_cast<int>(i) % m.rows;
          const float* xt = x.data() + static_cast<size_t>(t) * cols;
          // Prefill's tiles and the exact path read the rows in order: the same bits. The
          // row dots sum per group instead of per pair of groups: the same within rounding.
          if (!fast || T >= kGemmMinTokens) {
            ASSERT_EQ(bits(y[i]), bits(y_stored[i])) << "fast " << fast << " T " << T;
          } else {
            ASSERT_NEAR(y[i], y_stored[i], 1e-5f * m.abs_sum(r, xt) + 1e-6f) << "T " << T;
          }
          if (!fast) {
            ASSERT_NEAR(y[i], y_ref[i], 1e-5f * m.abs_sum(r, xt) + 1e-6f);
          }
        }
      }
    }
    set_exact_activations(true);
  }
}

// A q8 model from disk: on VNNI CPUs its quantized matrices come reordered, on cache lines, and
// its logits are those of the same checkpoint read in the stored order (Model::from_source does
// not reorder): bit for bit on the exact path, within the activations' rounding on the fast one.
TEST(Q8Lanes, LoadedQ8ModelIsReordered) {
  TempDir tmp;
  auto r = testing::run_whale("init --preset tiny --dtype bf16 --seed 7 --out " + (tmp / "bf16"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = testing::run_whale("convert --model " + (tmp / "bf16") + " --quant q8 --out " + (tmp / "q8"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto model = Model::load(tmp / "q8");
  const Checkpoint checkpoint(tmp / "q8");
  const auto stored = Model::from_source(model->config(), checkpoint);
  int reordered = 0, quantized = 0;
  for (const Layer& layer : model->weights().layers)
    for (const Linear* w : {&layer.mla.kv_a_proj_with_mqa, &layer.mla.o_proj, &layer.mlp.down_proj,
                            &layer.moe.shared.up_proj}) {
      if (w->dtype != DType::I8) continue;
      ++quantized;
      ASSERT_EQ(w->q8_lanes, vnni_available() && q8_lanes_fit(w->cols));
      if (!w->q8_lanes) continue;
      ++reordered;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(w->data) % 64, 0u);
    }
  EXPECT_GT(quantized, 0);
  if (vnni_available()) {
    EXPECT_GT(reordered, 0);
  }
  std::vector<int> tokens;
  for (int i = 0; i < 12; ++i) tokens.push_back((i * 37 + 5) % model->config().vocab_size);
  const int V = model->config().vocab_size, T = static_cast<int>(tokens.size());
  for (bool fast : {false, true}) {
    set_exact_activations(!fast);
    std::vector<float> a(static_cast<size_t>(T) * V), b(a.size());
    for (const auto& [m, logits] : {std::pair{model.get(), &a}, std::pair{stored.get(), &b}}) {
      KVCache cache = m->new_cache();
      for (int t = 0; t < T; ++t)  // decode steps: the row dots
        m->forward(&tokens[t], 1, cache, logits->data() + static_cast<size_t>(t) * V);
    }
    if (!fast) {
      ASSERT_EQ(a, b);
    } else {
      EXPECT_LT(testing::relative_max_error(a, b), 1e-3);
    }
  }
  set_exact_activations(true);
}

}  // namespace
}  // namespace whale
