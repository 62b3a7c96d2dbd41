// Group quantization (q8, q4): the SIMD kernels against their scalar references on awkward
// lengths, the quantizers' error bounds, Linear on the new dtypes, `whale convert` of bf16 and
// FP8 models (logits stay close to the original's), and `whale bench --json`.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include "base/npy.h"
#include "io/gguf.h"
#include "io/quantize.h"
#include "model/transformer.h"
#include "ops/int8_gemm.h"
#include "ops/kernels.h"
#include "ops/linear.h"
#include "ops/precision.h"
#include "tensor/dtype.h"
#include "test_util.h"

namespace whale {
namespace {

using testing::run_whale;
using testing::TempDir;

using testing::random_vector;

size_t groups_of(size_t n) {
  return (n + kQuantGroup - 1) / kQuantGroup;
}

const size_t kLengths[] = {1, 3, 15, 16, 17, 31, 32, 33, 63, 64, 95, 100, 257, 1000, 2049, 4099};

TEST(Quant, Q8KernelsMatchScalarReferences) {
  std::mt19937 rng(11);
  for (size_t n : kLengths) {
    auto w = random_vector(n, rng, 0.3f), x = random_vector(n, rng);
    std::vector<int8_t> codes(n);
    std::vector<uint16_t> scales(groups_of(n));
    quantize_row_q8(w.data(), n, codes.data(), scales.data());
    std::vector<float> out(n);
    q8_to_f32(codes.data(), scales.data(), out.data(), n);
    for (size_t i = 0; i < n; ++i) {
      const float scale = f16_to_f32(scales[i / 32]);
      ASSERT_EQ(out[i], q8_element(codes.data(), scales.data(), i)) << n << " " << i;
      ASSERT_LE(std::fabs(out[i] - w[i]), 0.5f * scale * 1.01f + 1e-7f) << n << " " << i;
    }
    const float ref = dot_q8_reference(codes.data(), scales.data(), x.data(), n);
    EXPECT_NEAR(dot_q8(codes.data(), scales.data(), x.data(), n), ref,
                1e-5f * std::sqrt(static_cast<float>(n)) * 4)
        << n;
  }
}

TEST(Quant, Q4KernelsMatchScalarReferences) {
  std::mt19937 rng(12);
  for (size_t n : kLengths) {
    auto w = random_vector(n, rng, 0.3f), x = random_vector(n, rng);
    std::vector<uint8_t> packed(groups_of(n) * 16);
    std::vector<uint16_t> scale_min(2 * groups_of(n));
    quantize_row_q4(w.data(), n, packed.data(), scale_min.data());
    std::vector<float> out(n);
    q4_to_f32(packed.data(), scale_min.data(), out.data(), n);
    for (size_t i = 0; i < n; ++i) {
      const float scale = f16_to_f32(scale_min[2 * (i / 32)]);
      const float ref = q4_element(packed.data(), scale_min.data(), i);
      ASSERT_NEAR(out[i], ref, 1e-6f * (1 + std::fabs(ref))) << n << " " << i;
      // Half a step, plus the rounding of min to f16.
      ASSERT_LE(std::fabs(out[i] - w[i]), 0.5f * scale * 1.01f + 2e-3f * std::fabs(w[i]) + 1e-3f)
          << n << " " << i;
    }
    const float ref = dot_q4_reference(packed.data(), scale_min.data(), x.data(), n);
    EXPECT_NEAR(dot_q4(packed.data(), scale_min.data(), x.data(), n), ref,
                1e-5f * std::sqrt(static_cast<float>(n)) * 8)
        << n;
  }
}

TEST(Quant, ConstantAndZeroGroups) {
  std::vector<float> w(40, 0.0f), x(40, 1.0f);
  for (size_t i = 32; i < 40; ++i) w[i] = -2.5f;
  std::vector<int8_t> codes(40);
  std::vector<uint16_t> s8(2), s4(4);
  std::vector<uint8_t> packed(32);
  quantize_row_q8(w.data(), 40, codes.data(), s8.data());
  quantize_row_q4(w.data(), 40, packed.data(), s4.data());
  for (size_t i = 0; i < 40; ++i) {
    // q8's scale 2.5/127 rounds to f16; q4 stores a constant group exactly (scale 0, min).
    EXPECT_NEAR(q8_element(codes.data(), s8.data(), i), w[i], 1e-3f) << i;
    EXPECT_EQ(q4_element(packed.data(), s4.data(), i), w[i]) << i;
  }
  EXPECT_NEAR(dot_q8(codes.data(), s8.data(), x.data(), 40), -20.0f, 1e-2f);
  EXPECT_EQ(dot_q4(packed.data(), s4.data(), x.data(), 40), -20.0f);
}

// Linear over q8/q4 (and bf16 through the many-token tile path) against the scalar reference.
// A random rows × cols matrix as a Linear of the given dtype, owning its codes and scales.
struct OwnedLinear {
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales;
  Linear lin;
};
OwnedLinear random_linear(DType dtype, int rows, int cols, std::mt19937& rng) {
  OwnedLinear m;
  const auto w = random_vector(static_cast<size_t>(rows) * cols, rng);
  const size_t g = groups_of(cols);
  if (dtype == DType::I8) {
    m.codes.resize(static_cast<size_t>(rows) * cols);
    m.scales.resize(rows * g);
    for (int r = 0; r < rows; ++r)
      quantize_row_q8(w.data() + static_cast<size_t>(r) * cols, cols,
                      reinterpret_cast<int8_t*>(m.codes.data()) + static_cast<size_t>(r) * cols,
                      m.scales.data() + r * g);
  } else if (dtype == DType::U8) {
    m.codes.resize(rows * g * 16);
    m.scales.resize(rows * g * 2);
    for (int r = 0; r < rows; ++r)
      quantize_row_q4(w.data() + static_cast<size_t>(r) * cols, cols, m.codes.data() + r * g * 16,
                      m.scales.data() + r * g * 2);
  } else {
    m.codes.resize(w.size() * 2);
    for (size_t i = 0; i < w.size(); ++i) {
      uint16_t b = f32_to_bf16(w[i]);
      std::memcpy(m.codes.data() + 2 * i, &b, 2);
    }
  }
  m.lin.dtype = dtype;
  m.lin.rows = rows;
  m.lin.cols = cols;
  m.lin.data = m.codes.data();
  m.lin.qscale = m.scales.empty() ? nullptr : m.scales.data();
  return m;
}

TEST(Quant, LinearForwardMatchesReference) {
  std::mt19937 rng(13);
  for (int rows : {1, 5, 130}) {
    for (int cols : {3, 33, 64, 200}) {
      for (DType dtype : {DType::I8, DType::U8, DType::BF16}) {
        const OwnedLinear m = random_linear(dtype, rows, cols, rng);
        const Linear& lin = m.lin;
        EXPECT_EQ(lin.bytes(), m.codes.size() + m.scales.size() * 2);
        for (int T : {1, 3, 9}) {
          auto x = random_vector(static_cast<size_t>(T) * cols, rng);
          std::vector<float> y(static_cast<size_t>(T) * rows), y_ref(y.size());
          linear_forward(lin, x.data(), T, y.data());
          linear_forward_reference(lin, x.data(), T, y_ref.data());
          for (size_t i = 0; i < y.size(); ++i)
            ASSERT_NEAR(y[i], y_ref[i], 2e-4f * (1 + std::fabs(y_ref[i])))
                << dtype_name(dtype) << " rows " << rows << " cols " << cols << " T " << T;
        }
      }
    }
  }
}

// Products that share their input in one pass (MLA's query and latent projections) give each
// the bits linear_forward gives it alone, whatever the formats beside it.
TEST(Quant, LinearProductsTogetherAsAlone) {
  std::mt19937 rng(29);
  const int cols = 96;
  const OwnedLinear a = random_linear(DType::I8, 130, cols, rng),
                    b = random_linear(DType::U8, 37, cols, rng),
                    c = random_linear(DType::BF16, 50, cols, rng),
                    d = random_linear(DType::I8, 16, cols, rng);
  const std::vector<const Linear*> matrices{&a.lin, &b.lin, &c.lin, &d.lin};
  for (int T : {1, 3, 7, 9}) {
    const auto x = random_vector(static_cast<size_t>(T) * cols, rng);
    std::vector<std::vector<float>> together, alone;
    for (const Linear* w : matrices) {
      together.emplace_back(static_cast<size_t>(T) * w->rows, -1.0f);
      alone.emplace_back(together.back().size());
      linear_forward(*w, x.data(), T, alone.back().data());
    }
    std::vector<LinearProduct> products;
    for (size_t i = 0; i < matrices.size(); ++i)
      products.push_back({matrices[i], together[i].data()});
    linear_forward_together(products, x.data(), T);
    for (size_t i = 0; i < together.size(); ++i)
      EXPECT_EQ(together[i], alone[i]) << "product " << i << ", " << T << " tokens";
  }
}

// RowChunks numbers every row of every run once, in chunks of the run's size, the last short.
TEST(Quant, RowChunksCoverEveryRowOnce) {
  std::mt19937 rng(31);
  const OwnedLinear a = random_linear(DType::I8, 100, 64, rng),
                    b = random_linear(DType::BF16, 7, 64, rng),
                    c = random_linear(DType::U8, 64, 64, rng);
  RowChunks chunks;
  EXPECT_EQ(chunks.add(a.lin, 16), 0);
  EXPECT_EQ(chunks.add(b.lin, 16), 1);
  EXPECT_EQ(chunks.add(c.lin, 32), 2);
  EXPECT_EQ(chunks.items(), 7 + 1 + 2);
  EXPECT_EQ(chunks.chunks(0), 7);
  EXPECT_EQ(chunks.chunks(1), 1);
  EXPECT_EQ(chunks.chunks(2), 2);
  std::vector<std::vector<int>> seen{std::vector<int>(100), std::vector<int>(7),
                                     std::vector<int>(64)};
  for (int item = 0; item < chunks.items(); ++item) {
    const RowChunks::Chunk ch = chunks.chunk(item);
    ASSERT_LT(ch.r0, ch.r1);
    EXPECT_EQ(&chunks.matrix(ch.run), ch.run == 0 ? &a.lin : ch.run == 1 ? &b.lin : &c.lin);
    for (int r = ch.r0; r < ch.r1; ++r) ++seen[ch.run][r];
  }
  for (const auto& rows : seen)
    for (int n : rows) EXPECT_EQ(n, 1);
  // Shares of equal bytes (row_bytes: q8 64, bf16 128, q4 32 a row): a's chunks 1024 bytes but
  // the last 256, b's 896, c's 1024 each — 9344 in all, the first share [0, 5), the second
  // [5, 10).
  WorkShares shares = chunks.shares(2);
  EXPECT_EQ(shares.next(1), 5);
  for (int item = 0; item < 5; ++item) EXPECT_EQ(shares.next(0), item);
}

std::vector<float> model_logits(const std::string& dir, const std::vector<int>& tokens, bool step) {
  auto model = Model::load(dir);
  const int V = model->config().vocab_size, T = static_cast<int>(tokens.size());
  std::vector<float> logits(static_cast<size_t>(T) * V);
  KVCache cache = model->new_cache();
  if (step)
    for (int t = 0; t < T; ++t)
      model->forward(&tokens[t], 1, cache, logits.data() + static_cast<size_t>(t) * V);
  else
    model->forward(tokens.data(), T, cache, logits.data());
  return logits;
}

struct Closeness {
  double mean_kl = 0, top1 = 0;
};

// Mean over rows of KL(softmax(ref) ‖ softmax(q)), and how often the argmaxes agree.
Closeness compare(const std::vector<float>& ref, const std::vector<float>& q, int V) {
  Closeness c;
  const size_t rows = ref.size() / V;
  for (size_t r = 0; r < rows; ++r) {
    const float* a = ref.data() + r * V;
    const float* b = q.data() + r * V;
    double ma = *std::max_element(a, a + V), mb = *std::max_element(b, b + V), za = 0, zb = 0;
    for (int i = 0; i < V; ++i) {
      za += std::exp(a[i] - ma);
      zb += std::exp(b[i] - mb);
    }
    double kl = 0;
    for (int i = 0; i < V; ++i) {
      const double la = a[i] - ma - std::log(za), lb = b[i] - mb - std::log(zb);
      kl += std::exp(la) * (la - lb);
    }
    c.mean_kl += kl / rows;
    c.top1 += (std::max_element(a, a + V) - a == std::max_element(b, b + V) - b) ? 1.0 / rows : 0;
  }
  return c;
}

TEST(Quant, ConvertedModelsStayClose) {
  TempDir tmp;
  std::vector<int> tokens;
  for (int i = 0; i < 64; ++i) tokens.push_back((i * 37 + 5) % 512);
  for (std::string source : {"bf16", "fp8"}) {
    const std::string dir = tmp / source;
    auto r = run_whale("init --preset tiny --dtype " + source + " --seed 5 --out " + dir);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::vector<float> reference = model_logits(dir, tokens, false);
    for (std::string quant : {"q8", "q4"}) {
      const std::string out = tmp / (source + "-" + quant);
      r = run_whale("convert --model " + dir + " --quant " + quant + " --out " + out);
      ASSERT_EQ(r.exit_code, 0) << r.output;
      auto config = nlohmann::json::parse(read_file(out + "/config.json"));
      EXPECT_EQ(config["whale_quantization"]["method"], quant);
      EXPECT_EQ(config["whale_quantization"]["group_size"], 32);
      EXPECT_FALSE(config.contains("quantization_config"));
      Checkpoint ckpt(out);
      const TensorView& q = ckpt.get("model.layers.1.mlp.experts.3.down_proj.weight");
      EXPECT_EQ(q.dtype, quant == "q8" ? DType::I8 : DType::U8);
      EXPECT_EQ(ckpt.get("lm_head.weight").dtype, DType::I8);
      EXPECT_EQ(ckpt.get("model.embed_tokens.weight").dtype, DType::BF16);
      EXPECT_EQ(ckpt.get("model.layers.1.mlp.gate.weight").dtype, DType::BF16);
      EXPECT_EQ(ckpt.find("model.layers.1.mlp.experts.3.down_proj.weight_scale_inv"), nullptr);

      const std::vector<float> prefill = model_logits(out, tokens, false);
      const std::vector<float> decode = model_logits(out, tokens, true);
      EXPECT_LT(testing::relative_max_error(decode, prefill), 1e-4) << source << " " << quant;
      Closeness c = compare(reference, prefill, 512);
      std::printf("[quant] %s -> %s: mean KL %.6f, top-1 agreement %.3f\n", source.c_str(),
                  quant.c_str(), c.mean_kl, c.top1);
      RecordProperty(source + "_" + quant + "_mean_kl", std::to_string(c.mean_kl));
      RecordProperty(source + "_" + quant + "_top1", std::to_string(c.top1));
      if (quant == "q8") {
        EXPECT_LT(c.mean_kl, 0.01);
        EXPECT_GT(c.top1, 0.9);
        if (vnni_available()) {  // int8 activations (the default there): as close
          testing::FastActivations fast;
          const std::vector<float> fast_prefill = model_logits(out, tokens, false);
          const std::vector<float> fast_decode = model_logits(out, tokens, true);
          for (const auto* logits : {&fast_prefill, &fast_decode}) {
            Closeness f = compare(reference, *logits, 512);
            std::printf("[quant] %s -> q8, int8 activations: mean KL %.6f, top-1 agreement %.3f\n",
                        source.c_str(), f.mean_kl, f.top1);
            EXPECT_LT(f.mean_kl, 0.01);
            EXPECT_GT(f.top1, 0.9);
          }
          EXPECT_GT(testing::relative_max_error(fast_prefill, prefill), 0) << "path not taken";
        }
      } else {  // a random model's flat logits make top-1 fragile: loose bounds only
        EXPECT_LT(c.mean_kl, 0.1);
        EXPECT_GT(c.top1, 0.4);
        if (vnni_available()) {
          testing::FastActivations fast;
          Closeness f = compare(reference, model_logits(out, tokens, false), 512);
          std::printf("[quant] %s -> q4, int8 activations: mean KL %.6f, top-1 agreement %.3f\n",
                      source.c_str(), f.mean_kl, f.top1);
          EXPECT_LT(f.mean_kl, 0.1);
          EXPECT_GT(f.top1, 0.4);
        }
      }
    }
  }
  // A quantized model is not converted again; a bad scheme is a one-line error.
  auto r = run_whale("convert --model " + (tmp / "bf16-q8") + " --quant q4 --out " + (tmp / "x"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("already quantized"), std::string::npos) << r.output;
  r = run_whale("convert --model " + (tmp / "bf16") + " --quant q3 --out " + (tmp / "x"));
  EXPECT_EQ(r.exit_code, 1);
}

// --quant bf16: a plain bf16 copy (e.g. of a model whale train wrote in f32, or of an FP8
// release). Every matrix is its source's value rounded to bf16 (FP8: code · block scale), the
// FP8 scales and quantization_config are gone, vectors (norms, biases) are untouched.
TEST(Quant, Bf16CopyOfF32AndFp8Models) {
  TempDir tmp;
  std::vector<int> tokens;
  for (int i = 0; i < 64; ++i) tokens.push_back((i * 37 + 5) % 512);
  for (std::string source : {"f32", "fp8"}) {
    const std::string dir = tmp / source, out = tmp / (source + "-bf16");
    auto r = run_whale("init --preset tiny --dtype " + source + " --seed 5 --out " + dir);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = run_whale("convert --model " + dir + " --quant bf16 --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto config = nlohmann::json::parse(read_file(out + "/config.json"));
    EXPECT_FALSE(config.contains("whale_quantization"));
    EXPECT_FALSE(config.contains("quantization_config"));
    EXPECT_EQ(config["torch_dtype"], "bfloat16");
    const ModelConfig model_config = ModelConfig::load(dir);
    Checkpoint in(dir), converted(out);
    int matrices = 0;
    for (const auto& [name, view] : in.tensors()) {
      if (name.find("_scale_inv") != std::string::npos) {
        EXPECT_EQ(converted.find(name), nullptr) << name;
        continue;
      }
      const TensorView& o = converted.get(name);
      ASSERT_EQ(o.shape, view->shape) << name;
      if (view->shape.size() != 2) {  // copied as they are
        EXPECT_EQ(o.dtype, view->dtype) << name;
        EXPECT_EQ(std::memcmp(o.data, view->data, view->nbytes), 0) << name;
        continue;
      }
      ASSERT_EQ(o.dtype, DType::BF16) << name;
      ++matrices;
      const int64_t rows = view->shape[0], cols = view->shape[1];
      const TensorView* scale = in.find(name + "_scale_inv");
      for (int64_t i = 0; i < rows * cols; i += 7) {  // a sample of every matrix
        float expected;
        if (view->dtype == DType::F8_E4M3) {
          ASSERT_NE(scale, nullptr) << name;
          const int64_t br = model_config.fp8_block_rows, bc = model_config.fp8_block_cols;
          const int64_t block = (i / cols / br) * ((cols + bc - 1) / bc) + (i % cols) / bc;
          float s;
          std::memcpy(&s, scale->data + 4 * block, 4);
          expected = e4m3_to_f32(view->data[i]) * s;
        } else if (view->dtype == DType::BF16) {  // e.g. an FP8 release's head
          uint16_t b;
          std::memcpy(&b, view->data + 2 * i, 2);
          expected = bf16_to_f32(b);
        } else {
          ASSERT_EQ(view->dtype, DType::F32) << name;
          std::memcpy(&expected, view->data + 4 * i, 4);
        }
        uint16_t got;
        std::memcpy(&got, o.data + 2 * i, 2);
        ASSERT_EQ(got, f32_to_bf16(expected)) << name << " element " << i;
      }
    }
    EXPECT_GT(matrices, 20);
    Closeness c = compare(model_logits(dir, tokens, false), model_logits(out, tokens, false), 512);
    std::printf("[quant] %s -> bf16: mean KL %.6f, top-1 agreement %.3f\n", source.c_str(),
                c.mean_kl, c.top1);
    EXPECT_LT(c.mean_kl, 0.01) << source;
  }
}

// --head q4: the head quantized as q4 too (fewer bytes per decode step), recorded in the config,
// still close to the source; its GGUF export keeps it q4 (q4_1). --head keep leaves it as stored.
TEST(Quant, HeadAsQ4OrKept) {
  TempDir tmp;
  std::vector<int> tokens;
  for (int i = 0; i < 64; ++i) tokens.push_back((i * 37 + 5) % 512);
  auto r = run_whale("init --preset tiny --dtype bf16 --seed 5 --out " + (tmp / "bf16"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (std::string head : {"q4", "keep"}) {
    const std::string out = tmp / ("q4-head-" + head);
    r = run_whale("convert --model " + (tmp / "bf16") + " --quant q4 --head " + head + " --out " +
                  out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto config = nlohmann::json::parse(read_file(out + "/config.json"));
    EXPECT_EQ(config["whale_quantization"]["lm_head"], head == "q4" ? "q4" : "unchanged");
    Checkpoint ckpt(out);
    EXPECT_EQ(ckpt.get("lm_head.weight").dtype, head == "q4" ? DType::U8 : DType::BF16);
    Closeness c =
        compare(model_logits(tmp / "bf16", tokens, false), model_logits(out, tokens, false), 512);
    std::printf("[quant] bf16 -> q4, head %s: mean KL %.6f, top-1 agreement %.3f\n", head.c_str(),
                c.mean_kl, c.top1);
    EXPECT_LT(c.mean_kl, 0.1) << head;
  }
  r = run_whale("convert --to gguf --model " + (tmp / "q4-head-q4") + " --quant q4_1 --out " +
                (tmp / "m.gguf"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(GgufFile(tmp / "m.gguf").tensor("output.weight").type, GgmlType::kQ4_1);
}

// --mtp: the MTP module quantized apart from the rest — a q8 draft under a bf16 model (its block's
// matrices, eh_proj and its head; its router gate and embedding as stored), recorded in the
// config; speculative decoding on it still prints plain decoding's greedy tokens (the bf16 main
// model verifies). --quant q8 --mtp bf16 keeps a bf16 MTP module as it is; without --mtp it
// follows the main model.
TEST(Quant, MtpQuantizedApart) {
  TempDir tmp;
  auto r = run_whale("init --preset tiny --dtype bf16 --seed 5 --out " + (tmp / "bf16"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_whale("convert --model " + (tmp / "bf16") + " --quant bf16 --mtp q8 --out " +
                (tmp / "mtp-q8"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto config = nlohmann::json::parse(read_file((tmp / "mtp-q8") + "/config.json"));
  EXPECT_EQ(config["whale_quantization"]["method"], "bf16");
  EXPECT_EQ(config["whale_quantization"]["mtp"], "q8");
  const ModelConfig c = ModelConfig::load(tmp / "bf16");
  ASSERT_TRUE(c.has_mtp());
  const std::string mtp = "model.layers." + std::to_string(c.num_hidden_layers) + ".";
  Checkpoint in(tmp / "bf16"), out(tmp / "mtp-q8");
  int quantized = 0;
  for (const WeightSpec& s : weight_specs(c)) {
    const TensorView& o = out.get(s.name);
    const bool drafts =
        s.name.rfind(mtp, 0) == 0 && (s.quantizable || s.name == mtp + "eh_proj.weight" ||
                                      s.name == mtp + "shared_head.head.weight");
    if (drafts) {
      ASSERT_EQ(o.dtype, DType::I8) << s.name;
      EXPECT_NE(out.find(s.name + "_qscale"), nullptr) << s.name;
      ++quantized;
    } else {
      EXPECT_EQ(o.dtype, in.get(s.name).dtype) << s.name;  // main model, router, embedding
    }
  }
  EXPECT_GT(quantized, 8);
  const std::string common = "--threads 1 generate --tokens 5,6,7 -n 24 --ignore-eos --model ";
  auto plain = run_whale(common + (tmp / "bf16"));
  auto spec = run_whale(common + (tmp / "mtp-q8") + " --speculative mtp --stats");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  ASSERT_EQ(spec.exit_code, 0) << spec.output;
  EXPECT_EQ(spec.output.substr(0, spec.output.find('\n')),
            plain.output.substr(0, plain.output.find('\n')));
  EXPECT_NE(spec.output.find("speculative:"), std::string::npos) << spec.output;

  r = run_whale("convert --model " + (tmp / "bf16") + " --quant q8 --mtp bf16 --out " +
                (tmp / "q8-mtp-bf16"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Checkpoint q8(tmp / "q8-mtp-bf16");
  EXPECT_EQ(q8.get(mtp + "eh_proj.weight").dtype, DType::BF16);
  EXPECT_EQ(q8.get(mtp + "self_attn.o_proj.weight").dtype, DType::BF16);
  EXPECT_EQ(q8.get("model.layers.0.self_attn.o_proj.weight").dtype, DType::I8);
  // Without --mtp the module follows the main model: eh_proj as --quant, its head as --head.
  for (const std::string head : {"q8", "keep"}) {
    const std::string dir = tmp / ("q4-head-" + head);
    r = run_whale("convert --model " + (tmp / "bf16") + " --quant q4 --head " + head + " --out " +
                  dir);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    Checkpoint q4(dir);
    EXPECT_EQ(q4.get(mtp + "eh_proj.weight").dtype, DType::U8) << head;
    EXPECT_EQ(q4.get(mtp + "shared_head.head.weight").dtype,
              head == "q8" ? DType::I8 : DType::BF16);
    EXPECT_EQ(q4.get(mtp + "embed_tokens.weight").dtype, DType::BF16);
  }
  r = run_whale("convert --to gguf --model " + (tmp / "bf16") + " --mtp q8 --out " +
                (tmp / "m.gguf"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--mtp"), std::string::npos) << r.output;
}

// A q8/q4 matrix whose scales are missing or misshapen is an error naming the tensor.
TEST(Quant, BadScalesAreClearErrors) {
  TempDir tmp;
  auto r = run_whale("init --preset tiny --seed 2 --out " + (tmp / "m"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_whale("convert --model " + (tmp / "m") + " --quant q4 --out " + (tmp / "q4"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string bad = "model.layers.0.mlp.up_proj.weight_qscale";
  for (bool drop : {true, false}) {
    std::vector<TensorData> tensors;
    {
      Checkpoint ckpt(tmp / "q4");
      for (const auto& [name, view] : ckpt.tensors()) {
        TensorData t{{name, view->dtype, view->shape},
                     std::vector<uint8_t>(view->data, view->data + view->nbytes)};
        if (name == bad) {
          if (drop) continue;
          t.spec.shape = {t.spec.shape[0], t.spec.shape[1] * 2};  // [rows, 2G]: not [rows, G, 2]
        }
        tensors.push_back(std::move(t));
      }
    }
    const std::string dir = tmp / (drop ? "dropped" : "reshaped");
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(tmp / "q4/config.json", dir + "/config.json");
    write_safetensors(dir + "/model.safetensors", tensors);
    r = run_whale("logits --model " + dir + " --tokens 1,2 --out " + (tmp / "l.npy"));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.output.find(bad), std::string::npos) << r.output;
  }
}

TEST(Quant, BenchPrintsJson) {
  TempDir tmp;
  const std::string dir = tmp / "m";
  auto r = run_whale("init --preset tiny --seed 1 --out " + dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_whale("convert --model " + dir + " --quant q4 --out " + (tmp / "q4"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_whale("bench --model " + (tmp / "q4") +
                " --json --threads 2 --prompt-lengths 8,20 --decode-prompt 8 --decode-tokens 4 "
                "--bandwidth-mib 16 --repeats 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json j = nlohmann::json::parse(r.output);
  for (const char* key : {"decode_tok_s", "prefill_tok_s", "ttft_s", "peak_rss_mib",
                          "bytes_per_token", "bandwidth_gbps", "bandwidth_fraction"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_TRUE(j["prefill_tok_s"].contains("8"));
  EXPECT_TRUE(j["prefill_tok_s"].contains("20"));
  EXPECT_GT(j["decode_tok_s"].get<double>(), 0);
  EXPECT_GT(j["bandwidth_gbps"].get<double>(), 0);
  // Part of the resident memory, never more (0 where the system has no huge pages).
  EXPECT_GE(j["huge_pages_mib"].get<double>(), 0);
  EXPECT_LE(j["huge_pages_mib"].get<double>(), j["peak_rss_mib"].get<double>());
  EXPECT_GT(j["bandwidth_fraction"].get<double>(), 0);
  // The probes around the decode's blocks (4 tokens: 4 blocks, 5 probes); the bandwidth is their
  // mean, and the fraction holds decode against a mix of them: between what the fastest and the
  // slowest probe alone would give.
  const auto probes = j["bandwidth_probes_gbps"].get<std::vector<double>>();
  ASSERT_EQ(probes.size(), 5u);
  double mean = 0;
  for (double p : probes) mean += p / probes.size();
  EXPECT_NEAR(j["bandwidth_gbps"].get<double>(), mean, 1e-9 * mean);
  const double read_gbps =
      j["bytes_per_token"].get<double>() * j["decode_tok_s"].get<double>() / 1e9;
  EXPECT_GE(j["bandwidth_fraction"].get<double>(),
            read_gbps / *std::max_element(probes.begin(), probes.end()) * (1 - 1e-9));
  EXPECT_LE(j["bandwidth_fraction"].get<double>(),
            read_gbps / *std::min_element(probes.begin(), probes.end()) * (1 + 1e-9));
  // Per token: the head and at least K routed experts of each MoE layer.
  auto model = Model::load(tmp / "q4");
  EXPECT_GT(j["bytes_per_token"].get<double>(), model->weights().lm_head.bytes());
  r = run_whale("bench --model " + (tmp / "q4") + " --prompt-lengths 8 --decode-prompt 8 " +
                "--decode-tokens 2 --bandwidth-mib 8 --repeats 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("decode/bandwidth"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace whale
