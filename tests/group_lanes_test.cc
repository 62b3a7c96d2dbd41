// Decode's q8 and q4 rows in group-lane order (ops/group_lanes.h): the reorderings and their
// inverses, the activation quantizer against int8_gemm's scalar reference, the row dots against a
// double-precision reference on the same quantized activations and bit for bit batch-independent,
// a Linear over reordered rows on every path (row dots, prefill tiles, the exact path, the
// dequantized rows) against the same Linear in the stored order, and q8 and q4 models from disk.
#include "ops/group_lanes.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <random>

#include "base/error.h"
#include "io/quantize.h"
#include "model/transformer.h"
#include "ops/int8_gemm.h"
#include "ops/kernels.h"
#include "ops/linear.h"
#include "ops/precision.h"
#include "test_util.h"

namespace whale {
namespace {

using testing::bits;
using testing::random_vector;
using testing::TempDir;

#define SKIP_WITHOUT_VNNI() \
  if (!vnni_available()) GTEST_SKIP() << "this CPU has no AVX512-VNNI"

// Shapes: one group, a short block only, exactly one block, a block and a short one (an expert's
// 1408 = 2 · 512 + 384), several blocks.
constexpr int kCols[] = {32, 96, 512, 544, 1408, 2048};

// A random q8 (dtype I8) or q4 (U8) matrix, in the stored order and reordered, each with a
// Linear over it.
struct LaneMatrix {
  DType dtype;
  int rows, cols;
  std::vector<uint8_t> codes, lanes;  // q8 codes or q4 packed bytes
  std::vector<uint16_t> scales;       // q8 scales or q4 (scale, min) pairs
  Linear stored, reordered;
  // super: q8 rows in super rows of super_rows(cols) (group_lanes.h) instead of row by row.
  LaneMatrix(DType dtype_, int rows_, int cols_, std::mt19937& rng, bool super = false)
      : dtype(dtype_), rows(rows_), cols(cols_) {
    const auto w = random_vector(static_cast<size_t>(rows) * cols, rng, 0.2f);
    for (Linear* l : {&stored, &reordered}) {
      l->dtype = dtype;
      l->rows = rows;
      l->cols = cols;
    }
    const size_t row_bytes = stored.row_bytes(), row_scales = (q4() ? 2 : 1) * (cols / 32);
    codes.resize(rows * row_bytes);
    lanes.resize(codes.size());
    scales.resize(rows * row_scales);
    for (int r = 0; r < rows; ++r) {
      uint8_t* c = codes.data() + r * row_bytes;
      uint8_t* l = lanes.data() + r * row_bytes;
      if (q4()) {
        quantize_row_q4(w.data() + static_cast<size_t>(r) * cols, cols, c,
                        scales.data() + r * row_scales);
        q4_row_to_lanes(c, cols, l);
      } else {
        quantize_row_q8(w.data() + static_cast<size_t>(r) * cols, cols,
                        reinterpret_cast<int8_t*>(c), scales.data() + r * row_scales);
        q8_row_to_lanes(reinterpret_cast<int8_t*>(c), cols, reinterpret_cast<int8_t*>(l));
      }
    }
    for (Linear* l : {&stored, &reordered}) l->qscale = scales.data();
    stored.data = codes.data();
    reordered.data = lanes.data();
    reordered.group_lanes = true;
    if (super) {
      const int R = super_rows(cols);
      for (int r = 0; r < rows; r += R)
        q8_row_to_lanes(reinterpret_cast<const int8_t*>(codes.data()) + r * row_bytes, R * cols,
                        reinterpret_cast<int8_t*>(lanes.data()) + r * row_bytes);
      reordered.super_rows = R;
    }
  }
  bool q4() const { return dtype == DType::U8; }
  const char* name() const { return q4() ? "q4" : "q8"; }
  // The reordered rows [0, rows) against x by the group-lane kernel.
  void dot_range(int r0, int n, const LaneActivations& x, float* y, size_t ldy) const {
    const size_t row_bytes = stored.row_bytes(), row_scales = (q4() ? 2 : 1) * (cols / 32);
    if (q4())
      q4_lanes_dot_row_range(lanes.data() + r0 * row_bytes, scales.data() + r0 * row_scales, n,
                             cols, x, y, ldy);
    else
      q8_lanes_dot_row_range(reinterpret_cast<const int8_t*>(lanes.data()) + r0 * row_bytes,
                             scales.data() + r0 * row_scales, n, cols, x, y, ldy);
  }
  // The stored rows' products in double (x quantized by the scalar reference).
  void reference(const float* x, int T, float* y, int ldy) const {
    if (q4())
      q4_gemm_reference(codes.data(), scales.data(), rows, cols, x, T, y, ldy);
    else
      q8_gemm_reference(reinterpret_cast<const int8_t*>(codes.data()), scales.data(), rows, cols, x,
                        T, y, ldy);
  }
  // Σ_c |w[r, c] · x[c]|: the scale of an output's f32 rounding error.
  float abs_sum(int r, const float* x) const {
    std::vector<float> row(cols);
    stored.row_to_f32(r, row.data());
    double sum = 0;
    for (int c = 0; c < cols; ++c) sum += std::fabs(row[c] * x[c]);
    return static_cast<float>(sum);
  }
};

// A row of n distinct-ish bytes through `to` and back through `from`: every byte lands where
// `index` says, each place once, and the inverse restores the row.
template <class Byte, class To, class From, class Index>
void check_reordering(int cols, int n, To to, From from, Index index) {
  std::vector<Byte> row(n), lanes(n), back(n);
  for (int i = 0; i < n; ++i) row[i] = static_cast<Byte>(i * 7 + 3);
  to(row.data(), cols, lanes.data());
  std::vector<int> seen(n, 0);
  for (int i = 0; i < n; ++i) {
    const size_t at = index(cols, i);
    ASSERT_LT(at, static_cast<size_t>(n));
    ASSERT_EQ(lanes[at], row[i]) << "cols " << cols << " i " << i;
    ++seen[at];
  }
  for (int i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1) << "cols " << cols << " at " << i;
  from(lanes.data(), cols, back.data());
  ASSERT_EQ(back, row) << "cols " << cols;
}

TEST(GroupLanes, ReorderingIsAPermutationAndItsInverse) {
  for (int cols : kCols) {
    check_reordering<int8_t>(cols, cols, q8_row_to_lanes, q8_row_from_lanes, q8_lane_index);
    // q4: cols / 2 packed bytes, 16 a group.
    check_reordering<uint8_t>(cols, cols / 2, q4_row_to_lanes, q4_row_from_lanes, q4_lane_index);
    // The documented orders: in a full block, q8 value j of group i at (j / 4) · 64 + 4i + j % 4,
    // q4 packed byte b of group i at (b / 4) · 64 + 4i + b % 4.
    if (cols >= 512) {
      EXPECT_EQ(q8_lane_index(cols, 0 * 32 + 5), 64u + 1);
      EXPECT_EQ(q8_lane_index(cols, 3 * 32 + 30), 7u * 64 + 12 + 2);
      EXPECT_EQ(q4_lane_index(cols, 3 * 16 + 5), 64u + 12 + 1);
    }
  }
  EXPECT_TRUE(group_lanes_fit(1408));
  EXPECT_FALSE(group_lanes_fit(1000));
  EXPECT_FALSE(group_lanes_fit(0));
}

TEST(GroupLanes, ActivationsMatchTheInt8Reference) {
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

TEST(GroupLanes, RowDotsMatchReferenceAndAreBatchIndependent) {
  SKIP_WITHOUT_VNNI();
  std::mt19937 rng(33);
  for (DType dtype : {DType::I8, DType::U8})
    for (int cols : kCols) {
      const LaneMatrix m(dtype, 4, cols, rng);
      for (int T = 1; T <= 13; ++T) {  // passes of 6 rows and their remainders
        const auto x = random_vector(static_cast<size_t>(T) * cols, rng);
        LaneActivations xq;
        quantize_lane_activations(x.data(), T, cols, &xq);
        std::vector<float> y_ref(static_cast<size_t>(T) * m.rows);
        m.reference(x.data(), T, y_ref.data(), m.rows);
        // The whole range in one call, into a strided output: the same bits as row by row.
        const size_t ldy = m.rows + 2;
        std::vector<float> range(T * ldy, -1.0f);
        m.dot_range(0, m.rows, xq, range.data(), ldy);
        for (int r = 0; r < m.rows; ++r) {
          std::vector<float> out(T);
          m.dot_range(r, 1, xq, out.data(), 1);
          for (int t = 0; t < T; ++t) {
            const float* xt = x.data() + static_cast<size_t>(t) * cols;
            ASSERT_NEAR(out[t], y_ref[static_cast<size_t>(t) * m.rows + r],
                        1e-5f * m.abs_sum(r, xt) + 1e-6f)
                << m.name() << " cols " << cols << " T " << T << " t " << t;
            LaneActivations one;
            quantize_lane_activations(xt, 1, cols, &one);
            float alone;
            m.dot_range(r, 1, one, &alone, 1);
            ASSERT_EQ(bits(out[t]), bits(alone))
                << m.name() << " cols " << cols << " T " << T << " t " << t;
            ASSERT_EQ(bits(range[t * ldy + r]), bits(out[t]))
                << m.name() << " range, cols " << cols << " T " << T;
            ASSERT_EQ(range[t * ldy + m.rows], -1.0f) << "a gap in the output was written";
          }
        }
      }
    }
}

// Super rows (q8_super_rows_dot_range): R rows' codes reordered as one row, every block whole;
// against the double-precision reference on the same quantized activations, and bit for bit the
// same for a token alone as in a batch.
TEST(GroupLanes, SuperRowDotsMatchReferenceAndAreBatchIndependent) {
  SKIP_WITHOUT_VNNI();
  std::mt19937 rng(34);
  EXPECT_EQ(super_rows(1408), 4);
  EXPECT_EQ(super_rows(2816), 2);
  EXPECT_EQ(super_rows(1536), 1);
  EXPECT_EQ(super_rows(96), 16);
  for (int cols : {32, 96, 544, 1408, 1536, 2816}) {
    const int R = super_rows(cols), rows = 2 * R;
    const LaneMatrix m(DType::I8, rows, cols, rng);
    std::vector<int8_t> super(m.codes.size());
    for (int r = 0; r < rows; r += R)
      q8_row_to_lanes(
          reinterpret_cast<const int8_t*>(m.codes.data()) + static_cast<size_t>(r) * cols, R * cols,
          super.data() + static_cast<size_t>(r) * cols);
    for (int T : {1, 3}) {
      const auto x = random_vector(static_cast<size_t>(T) * cols, rng);
      LaneActivations xs;
      quantize_super_activations(x.data(), T, cols, &xs);
      std::vector<float> y_ref(static_cast<size_t>(T) * rows);
      m.reference(x.data(), T, y_ref.data(), rows);
      const size_t ldy = rows + 1;
      std::vector<float> y(T * ldy, -1.0f);
      q8_super_rows_dot_range(super.data(), m.scales.data(), rows, cols, xs, y.data(), ldy);
      for (int t = 0; t < T; ++t) {
        const float* xt = x.data() + static_cast<size_t>(t) * cols;
        LaneActivations one;
        quantize_super_activations(xt, 1, cols, &one);
        std::vector<float> alone(rows);
        q8_super_rows_dot_range(super.data(), m.scales.data(), rows, cols, one, alone.data(), 1);
        for (int r = 0; r < rows; ++r) {
          ASSERT_NEAR(y[t * ldy + r], y_ref[static_cast<size_t>(t) * rows + r],
                      1e-5f * m.abs_sum(r, xt) + 1e-6f)
              << "cols " << cols << " T " << T << " t " << t << " row " << r;
          ASSERT_EQ(bits(y[t * ldy + r]), bits(alone[r])) << "cols " << cols << " row " << r;
        }
        ASSERT_EQ(y[t * ldy + rows], -1.0f) << "a gap in the output was written";
      }
    }
  }
  LaneActivations wrong;
  const std::vector<float> x(1408, 1.0f);
  quantize_lane_activations(x.data(), 1, 1408, &wrong);  // not repeated: refused
  std::vector<int8_t> codes(4 * 1408);
  std::vector<uint16_t> scales(4 * 44);
  float y[4];
  EXPECT_THROW(q8_super_rows_dot_range(codes.data(), scales.data(), 4, 1408, wrong, y, 1), Error);
}

// A short last block is read by whole 64-byte loads that run into the next row, except on a
// range's last row: a matrix whose codes end right before an unreadable page (the worst case of a
// range ending a copy) is read without a fault, every row the same bits as alone.
TEST(GroupLanes, ShortBlocksReadNothingPastTheRangesLastRow) {
  SKIP_WITHOUT_VNNI();
  std::mt19937 rng(35);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  for (DType dtype : {DType::I8, DType::U8})
    for (int cols : {32, 96, 544, 1408}) {
      const LaneMatrix m(dtype, 5, cols, rng);
      // The lanes copied to the end of a readable region, an inaccessible page after them.
      const size_t bytes = m.lanes.size(), span = (bytes + page - 1) / page * page;
      void* region =
          mmap(nullptr, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      ASSERT_NE(region, MAP_FAILED);
      uint8_t* base = static_cast<uint8_t*>(region);
      ASSERT_EQ(mprotect(base + span, page, PROT_NONE), 0);
      uint8_t* lanes = base + span - bytes;
      std::memcpy(lanes, m.lanes.data(), bytes);
      const auto x = random_vector(cols, rng);
      LaneActivations xq;
      quantize_lane_activations(x.data(), 1, cols, &xq);
      std::vector<float> guarded(m.rows), alone(m.rows);
      if (m.q4())
        q4_lanes_dot_row_range(lanes, m.scales.data(), m.rows, cols, xq, guarded.data(), 1);
      else
        q8_lanes_dot_row_range(reinterpret_cast<const int8_t*>(lanes), m.scales.data(), m.rows,
                               cols, xq, guarded.data(), 1);
      for (int r = 0; r < m.rows; ++r) {
        m.dot_range(r, 1, xq, &alone[r], 1);
        EXPECT_EQ(bits(guarded[r]), bits(alone[r])) << m.name() << " cols " << cols << " r " << r;
      }
      munmap(region, span + page);
    }
}

// The reordered Linear against the stored one: the same products on every path of
// linear_forward (few tokens: the group-lane row dots; many: prefill's tiles, which put the rows
// back in order; exact: f32 activations), and the same dequantized rows.
TEST(GroupLanes, LinearOverReorderedRowsMatchesTheStoredOrder) {
  std::mt19937 rng(34);
  for (DType dtype : {DType::I8, DType::U8})
    for (int cols : {96, 1408}) {
      const LaneMatrix m(dtype, 37, cols, rng);
      // The row dots sum per group instead of per pair of groups: the same within rounding.
      testing::expect_same_products(
          m.reordered, m.stored, vnni_available(), rng,
          [&](const float* xt, int r, float) { return 1e-5f * m.abs_sum(r, xt) + 1e-6f; });
    }
  // q8 in super rows (as Model::load lays out rows of 1408 and 2816 values): the same on every
  // path — the row dots (whole ranges and single rows), prefill's tiles, the dequantized rows.
  for (int cols : {384, 1408, 2816}) {
    const LaneMatrix m(DType::I8, 40, cols, rng, true);
    ASSERT_GT(m.reordered.super_rows, 1);
    testing::expect_same_products(
        m.reordered, m.stored, vnni_available(), rng,
        [&](const float* xt, int r, float) { return 1e-5f * m.abs_sum(r, xt) + 1e-6f; });
  }
}

// A q8 model from disk: on VNNI CPUs (fast paths) its quantized matrices come reordered, on cache
// lines, and its logits are those of the same checkpoint read in the stored order
// (Model::from_source does not reorder): bit for bit on the exact path, within the activations'
// rounding on the fast one.
TEST(GroupLanes, LoadedQuantizedModelsAreReordered) {
  TempDir tmp;
  // The tiny preset with a dense FFN of 768 (24 groups: its down_proj's q8 rows in super rows).
  auto r = testing::run_whale("init --preset tiny --out " + (tmp / "preset"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json config = nlohmann::json::parse(read_file(tmp / "preset/config.json"));
  config["intermediate_size"] = 768;
  write_file_atomic(tmp / "config.json", config.dump(2));
  r = testing::run_whale("init --config " + (tmp / "config.json") +
                         " --dtype bf16 --seed 7 --out " + (tmp / "bf16"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const std::string quant : {"q8", "q4"}) {
    r = testing::run_whale("convert --model " + (tmp / "bf16") + " --quant " + quant + " --out " +
                           (tmp / quant));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    // Reordered when loaded for the fast paths; on the exact path (the tests' default) the rows
    // stay as stored, since every product would first have to put them back.
    const auto model = [&] {
      testing::FastActivations fast;
      return Model::load(tmp / quant);
    }();
    EXPECT_FALSE(Model::load(tmp / quant)->weights().layers[0].mla.o_proj.group_lanes);
    const Checkpoint checkpoint(tmp / quant);
    const auto stored = Model::from_source(model->config(), checkpoint);
    int reordered = 0, quantized = 0, super = 0;
    for (const Layer& layer : model->weights().layers)
      for (const Linear* w : {&layer.mla.kv_a_proj_with_mqa, &layer.mla.o_proj,
                              &layer.mlp.down_proj, &layer.moe.shared.up_proj}) {
        if (w->dtype != DType::I8 && w->dtype != DType::U8) continue;
        ++quantized;
        ASSERT_EQ(w->group_lanes, vnni_available() && group_lanes_fit(w->cols));
        if (!w->group_lanes) continue;
        ++reordered;
        EXPECT_EQ(reinterpret_cast<uintptr_t>(w->data) % 64, 0u);
        // q8 rows of a few blocks ending in half a block go in super rows of 2 (the dense
        // down_proj's 768 values); q4 rows, whole blocks and other short blocks row by row.
        EXPECT_EQ(w->super_rows,
                  w->dtype == DType::I8 && w->cols < 4096 && super_rows(w->cols) == 2 ? 2 : 1);
        super += w->super_rows > 1;
      }
    EXPECT_GT(quantized, 0);
    if (vnni_available()) {
      EXPECT_GT(reordered, 0);
      if (quant == "q8") {
        EXPECT_GT(super, 0);
      }
    }
    std::vector<int> tokens;
    for (int i = 0; i < 12; ++i) tokens.push_back((i * 37 + 5) % model->config().vocab_size);
    // The fast path's copies of kv_b_proj take q_nope and the latent sums as int8, where the
    // stored model's kv_b_proj takes them as f32 (AbsorbedAttentionReadsCopiesOfKvB below).
    testing::expect_same_decode(*model, *stored, tokens, 5e-2);
  }
}

// Absorbed attention reads a q8/q4 kv_b_proj through copies: W_UV's rows in group-lane order
// (MlaWeights::absorbed_values) and each head's W_UK in column blocks (absorbed_keys_int8,
// ops/transposed_int8.h). The copies dequantize to exactly the stored values, attention's byte
// count is the stored model's (the same bytes, read from the copies), and decode on them behaves
// (testing::expect_absorbed_copies_decode).
TEST(GroupLanes, AbsorbedAttentionReadsCopiesOfKvB) {
  TempDir tmp;
  const std::string dir = testing::init_wide_latent_model(tmp);
  for (const std::string quant : {"q8", "q4"}) {
    auto r = testing::run_whale("convert --model " + dir + " --quant " + quant + " --out " +
                                (tmp / quant));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const testing::LoadedTwice loaded(tmp / quant);
    const Model &model = *loaded.fast, &stored = *loaded.stored;
    const ModelConfig& c = model.config();
    const Weights& w = model.weights();
    if (!vnni_available()) {
      EXPECT_TRUE(w.layers[0].mla.absorbed_values.empty());
      GTEST_SKIP() << "no AVX512-VNNI: absorbed attention reads kv_b_proj as stored";
    }
    const int heads = c.num_attention_heads, nope = c.qk_nope_head_dim, vdim = c.v_head_dim;
    const int kvr = c.kv_lora_rank;
    for (size_t l = 0; l < w.layers.size(); ++l) {
      const MlaWeights& m = w.layers[l].mla;
      ASSERT_TRUE(m.absorbed_keys.empty()) << quant;
      ASSERT_TRUE(m.absorbed_values.group_lanes) << quant;
      ASSERT_FALSE(m.kv_b_proj.group_lanes);
      ASSERT_EQ(m.absorbed_values.rows, heads * vdim);
      ASSERT_EQ(m.absorbed_values.cols, kvr);
      std::vector<float> copy(kvr), original(kvr);
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < vdim; ++i) {
          m.absorbed_values.row_to_f32(h * vdim + i, copy.data());
          m.kv_b_proj.row_to_f32(h * (nope + vdim) + nope + i, original.data());
          ASSERT_EQ(copy, original) << quant << " layer " << l << " head " << h << " row " << i;
        }
      ASSERT_EQ(m.absorbed_keys_int8.size(), static_cast<size_t>(heads)) << quant;
      for (int h = 0; h < heads; ++h) {
        const TransposedInt8& keys = m.absorbed_keys_int8[h];
        ASSERT_EQ(keys.q4, quant == "q4");
        ASSERT_EQ(keys.rows, nope);
        ASSERT_EQ(keys.cols, kvr);
        for (int i = 0; i < nope; ++i) {
          m.kv_b_proj.row_to_f32(h * (nope + vdim) + i, original.data());
          for (int k = 0; k < kvr; ++k)
            ASSERT_EQ(transposed_int8_value(keys, i, k), original[k])
                << quant << " layer " << l << " head " << h << " W_UK row " << i;
        }
      }
      EXPECT_EQ(attention_bytes(w.layers[l]), attention_bytes(stored.weights().layers[l]));
    }
    // Int8 latent sums on top of the int8 activations of every other product: within the bound
    // GroupLanes's fast decode keeps to the stored model (above).
    testing::expect_absorbed_copies_decode(model, stored, 5e-2);
  }
}

}  // namespace
}  // namespace whale
