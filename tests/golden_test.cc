// The forward pass against the independent PyTorch reference (tests/golden/reference.py):
// every model type, full-sequence prefill, one-token-at-a-time decode through the cache, the
// absorbed and the naive MLA forms, and the MTP module.
#include <gtest/gtest.h>

#include "base/npy.h"
#include "model/transformer.h"
#include "ops/linear.h"
#include "ops/precision.h"
#include "test_util.h"

namespace whale {
namespace {

using testing::golden_dir;
using testing::golden_tokens;
using testing::relative_max_error;

constexpr double kTolerance = 1e-4;  // of the logits' scale, as the issue asks

class Golden : public ::testing::TestWithParam<std::string> {};

std::vector<float> run(const Model& model, const std::vector<int>& tokens, bool step,
                       AttentionPath path, std::vector<float>* hidden = nullptr) {
  const int T = static_cast<int>(tokens.size()), V = model.config().vocab_size;
  const int H = model.config().hidden_size;
  std::vector<float> logits(static_cast<size_t>(T) * V), h(static_cast<size_t>(T) * H);
  KVCache cache = model.new_cache();
  ForwardOptions options;
  options.attention = path;
  if (step) {
    for (int t = 0; t < T; ++t)
      model.forward(&tokens[t], 1, cache, logits.data() + static_cast<size_t>(t) * V,
                    h.data() + static_cast<size_t>(t) * H, options);
  } else {
    model.forward(tokens.data(), T, cache, logits.data(), h.data(), options);
  }
  EXPECT_EQ(cache.length, T);
  if (hidden) *hidden = h;
  return logits;
}

TEST_P(Golden, LogitsMatchReferenceInEveryForm) {
  const std::string name = GetParam();
  auto model = Model::load(golden_dir(name));
  auto tokens = golden_tokens(name);
  NpyArray expected = read_npy(golden_dir(name) + "/logits.npy");
  ASSERT_EQ(expected.shape,
            (std::vector<size_t>{tokens.size(), static_cast<size_t>(model->config().vocab_size)}));
  struct Form {
    const char* label;
    bool step;
    AttentionPath path;
  };
  // Auto: naive for a prompt of kAbsorbedMaxRows tokens or more, absorbed below and in decode.
  std::vector<Form> forms = {{"prefill (auto)", false, AttentionPath::kAuto},
                             {"decode (auto: absorbed)", true, AttentionPath::kAuto}};
  if (model->config().is_deepseek()) {
    forms.push_back({"prefill naive", false, AttentionPath::kNaive});
    forms.push_back({"prefill absorbed", false, AttentionPath::kAbsorbed});
    forms.push_back({"decode naive", true, AttentionPath::kNaive});
  }
  for (const Form& f : forms) {
    auto logits = run(*model, tokens, f.step, f.path);
    EXPECT_LT(relative_max_error(logits, expected.data), kTolerance) << name << ": " << f.label;
  }
}

TEST_P(Golden, MtpLogitsMatchReference) {
  const std::string name = GetParam();
  auto model = Model::load(golden_dir(name));
  if (!model->config().has_mtp()) GTEST_SKIP() << name << " has no MTP module";
  auto tokens = golden_tokens(name);
  NpyArray expected = read_npy(golden_dir(name) + "/mtp_logits.npy");
  const int T = static_cast<int>(tokens.size()), V = model->config().vocab_size;
  const int H = model->config().hidden_size;
  std::vector<float> hidden;
  run(*model, tokens, false, AttentionPath::kAuto, &hidden);
  // All positions at once, and one at a time through the MTP layer's own cache.
  std::vector<float> all(static_cast<size_t>(T - 1) * V), stepped(all.size());
  KVCache cache = model->new_mtp_cache();
  model->mtp_forward(tokens.data() + 1, hidden.data(), T - 1, cache, all.data());
  KVCache step_cache = model->new_mtp_cache();
  for (int t = 0; t + 1 < T; ++t)
    model->mtp_forward(&tokens[t + 1], hidden.data() + static_cast<size_t>(t) * H, 1, step_cache,
                       stepped.data() + static_cast<size_t>(t) * V);
  EXPECT_LT(relative_max_error(all, expected.data), kTolerance) << name;
  EXPECT_LT(relative_max_error(stepped, expected.data), kTolerance) << name;
  // Only the last row's outputs: the rows before it only enter the cache (their latents), in the
  // same call or in an earlier one that fills the cache alone; the last row attends to them.
  const std::vector<float> expected_last(expected.data.end() - V, expected.data.end());
  ForwardOptions last_row;
  last_row.last_logits_only = true;
  std::vector<float> last(V), head_input(H);
  KVCache last_cache = model->new_mtp_cache();
  model->mtp_forward(tokens.data() + 1, hidden.data(), T - 1, last_cache, last.data(), last_row,
                     head_input.data());
  EXPECT_EQ(last_cache.length, T - 1);
  EXPECT_LT(relative_max_error(last, expected_last), kTolerance) << name << ": last row only";
  KVCache filled = model->new_mtp_cache();
  model->mtp_forward(tokens.data() + 1, hidden.data(), T - 2, filled, nullptr);
  ASSERT_EQ(filled.length, T - 2);
  model->mtp_forward(&tokens[T - 1], hidden.data() + static_cast<size_t>(T - 2) * H, 1, filled,
                     last.data());
  EXPECT_LT(relative_max_error(last, expected_last), kTolerance) << name << ": after filling";
}

INSTANTIATE_TEST_SUITE_P(AllModelTypes, Golden,
                         ::testing::Values("v2_lite", "v2_group_yarn", "v3_sharded", "v3_fp8",
                                           "v32", "v32_fp8_ue8m0", "qwen2", "llama3"));

// The default fast path on AVX512-BF16 CPUs (prompts and batches by GEMM, decode by row dots)
// rounds the activations to bf16 before each product with bf16 weights: the logits stay within
// bf16's rounding of the reference (a few parts in a thousand of their scale), and the next-token
// choices agree.
TEST(GoldenBf16, RoundedActivationsStayCloseToReference) {
  if (!bf16_gemm_available()) GTEST_SKIP() << "this CPU has no AVX512-BF16";
  testing::FastActivations fast;
  for (std::string name : {"v3_sharded", "v2_lite", "qwen2"}) {
    auto model = Model::load(golden_dir(name));
    auto tokens = golden_tokens(name);
    ASSERT_GE(static_cast<int>(tokens.size()), kGemmMinTokens) << "the prefill must take the path";
    NpyArray expected = read_npy(golden_dir(name) + "/logits.npy");
    for (bool step : {false, true}) {  // prefill (bf16 GEMM), decode (bf16 row dots)
      auto logits = run(*model, tokens, step, AttentionPath::kAuto);
      const double error = relative_max_error(logits, expected.data);
      EXPECT_GT(error, kTolerance) << name << ": the rounding should show (is the path taken?)";
      EXPECT_LT(error, 2e-2) << name << " step " << step;
      const size_t V = model->config().vocab_size;
      int agree = 0;
      for (size_t t = 0; t < tokens.size(); ++t) {
        const auto row = logits.begin() + t * V, ref = expected.data.begin() + t * V;
        agree += std::max_element(row, row + V) - row == std::max_element(ref, ref + V) - ref;
      }
      EXPECT_GE(agree, static_cast<int>(tokens.size()) - 1) << name << " step " << step;
    }
  }
}

// Through the CLI: `whale logits` writes the same numbers, and --mtp the MTP rows.
TEST(GoldenCli, LogitsCommandWritesReferenceLogits) {
  testing::TempDir tmp;
  for (std::string name : {"v3_sharded", "llama3"}) {
    auto tokens = golden_tokens(name);
    auto r = testing::run_whale("logits --model " + golden_dir(name) + " --tokens " +
                                testing::join_ids(tokens) + " --out " + (tmp / "l.npy"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    NpyArray got = read_npy(tmp / "l.npy");
    NpyArray expected = read_npy(golden_dir(name) + "/logits.npy");
    EXPECT_EQ(got.shape, expected.shape);
    EXPECT_LT(relative_max_error(got.data, expected.data), kTolerance);
  }
  auto tokens = golden_tokens("v3_sharded");
  auto r =
      testing::run_whale("logits --mtp --step --model " + golden_dir("v3_sharded") + " --tokens " +
                         testing::join_ids(tokens) + " --out " + (tmp / "m.npy"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  NpyArray got = read_npy(tmp / "m.npy");
  NpyArray expected = read_npy(golden_dir("v3_sharded") + "/mtp_logits.npy");
  EXPECT_EQ(got.shape, (std::vector<size_t>{tokens.size() - 1, expected.shape[1]}));
  EXPECT_LT(relative_max_error(got.data, expected.data), kTolerance);
}

// The V3.2 fixture is longer than index_topk: the indexer really drops positions, and the
// result depends on it (the same model with the indexer disabled gives other logits).
TEST(GoldenSparse, IndexerSelectionMatters) {
  auto model = Model::load(golden_dir("v32"));
  const ModelConfig& c = model->config();
  auto tokens = golden_tokens("v32");
  ASSERT_GT(static_cast<int>(tokens.size()), c.index_topk);
  NpyArray expected = read_npy(golden_dir("v32") + "/logits.npy");
  const int T = static_cast<int>(tokens.size()), V = c.vocab_size;
  std::vector<float> logits(static_cast<size_t>(T) * V);
  KVCache cache = model->new_cache();
  ForwardOptions dense;
  dense.sparse_attention = false;
  model->forward(tokens.data(), T, cache, logits.data(), nullptr, dense);
  double max_diff = 0;
  for (size_t i = static_cast<size_t>(c.index_topk) * V; i < logits.size(); ++i)
    max_diff = std::max(max_diff, static_cast<double>(std::fabs(logits[i] - expected.data[i])));
  EXPECT_GT(max_diff, 1e-2) << "dense attention should differ from sparse past index_topk";
  for (size_t i = 0; i < static_cast<size_t>(c.index_topk) * V; ++i)
    ASSERT_NEAR(logits[i], expected.data[i], 1e-4) << "rows before index_topk see everything";
}

}  // namespace
}  // namespace whale

namespace whale {
namespace {

// Several sequences in one forward (continuous batching's step: prefills and decodes mixed)
// give each sequence exactly the logits it gets alone.
TEST(BatchedForward, MixedPrefillAndDecodeMatchSeparateRuns) {
  for (std::string name : {"v3_sharded", "v32", "v2_lite", "llama3"}) {
    auto model = Model::load(testing::golden_dir(name));
    const int V = model->config().vocab_size;
    auto a = testing::golden_tokens(name);
    std::vector<int> b(a.rbegin(), a.rend());
    auto alone = [&](const std::vector<int>& seq) {
      std::vector<float> logits(seq.size() * V);
      KVCache cache = model->new_cache();
      model->forward(seq.data(), static_cast<int>(seq.size()), cache, logits.data());
      return logits;
    };
    std::vector<float> expect_a = alone(a), expect_b = alone(b);
    KVCache ca = model->new_cache(), cb = model->new_cache();
    std::vector<float> got_a(a.size() * V), got_b(b.size() * V);
    size_t ia = 0, ib = 0;
    // Steps: (rows of a, rows of b) — a prefill of both, single-token decodes, mixed chunks.
    std::vector<std::pair<int, int>> steps = {{5, 3}, {1, 1}, {1, 4}, {2, 1}};
    while (ia < a.size() || ib < b.size()) {
      std::pair<int, int> s = steps.empty() ? std::pair{1, 1} : steps.front();
      if (!steps.empty()) steps.erase(steps.begin());
      int na = std::min<int>(s.first, a.size() - ia), nb = std::min<int>(s.second, b.size() - ib);
      std::vector<int> tokens;
      std::vector<KVCache*> caches;
      std::vector<int> counts;
      if (na > 0) {
        tokens.insert(tokens.end(), a.begin() + ia, a.begin() + ia + na);
        caches.push_back(&ca);
        counts.push_back(na);
      }
      if (nb > 0) {
        tokens.insert(tokens.end(), b.begin() + ib, b.begin() + ib + nb);
        caches.push_back(&cb);
        counts.push_back(nb);
      }
      std::vector<float> logits(tokens.size() * V);
      model->forward_batch(tokens.data(), caches, counts, logits.data());
      std::copy_n(logits.begin(), na * V, got_a.begin() + ia * V);
      std::copy_n(logits.begin() + na * V, nb * V, got_b.begin() + ib * V);
      ia += na;
      ib += nb;
    }
    EXPECT_LT(testing::relative_max_error(got_a, expect_a), 1e-5) << name;
    EXPECT_LT(testing::relative_max_error(got_b, expect_b), 1e-5) << name;
  }
}

}  // namespace
}  // namespace whale
