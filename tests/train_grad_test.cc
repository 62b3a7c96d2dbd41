// Training's backward pass: `whale grad` against PyTorch autograd on the golden gradient
// fixtures (V3 with MTP and the balance loss, V2, Qwen2), the training forward against the
// inference forward, and finite differences where the fixtures do not reach (batches, the
// batch-wide balance loss).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "base/npy.h"
#include "io/safetensors.h"
#include "model/transformer.h"
#include "test_util.h"
#include "train/objective.h"

namespace whale {
namespace {

using testing::TempDir;

std::string grad_dir(const std::string& name) {
  return testing::source_dir() + "/tests/golden/grad_fixtures/" + name;
}

class GoldenGrad : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenGrad, MatchesAutogradForEveryParameter) {
  const std::string name = GetParam();
  const std::string dir = grad_dir(name);
  auto tokens =
      nlohmann::json::parse(read_file(dir + "/tokens.json"))["tokens"].get<std::vector<int>>();
  auto options = nlohmann::json::parse(read_file(dir + "/case.json"));
  TempDir tmp;
  auto r =
      testing::run_whale("grad --model " + dir + " --tokens " + testing::join_ids(tokens) +
                         " --mtp-weight " + options["mtp_weight"].dump() + " --balance-alpha " +
                         options["balance_alpha"].dump() + " --out " + (tmp / "g.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  SafetensorsFile got(tmp / "g.safetensors");
  SafetensorsFile expected(dir + "/grads.safetensors");
  for (const char* key : {"loss", "ce_main", "ce_mtp", "bal"}) {
    double a = std::stod(got.metadata().at(key)), b = std::stod(expected.metadata().at(key));
    EXPECT_NEAR(a, b, 1e-5 * (1 + std::fabs(b))) << key;
  }
  ASSERT_EQ(got.tensors().size(), expected.tensors().size());
  int nonzero = 0;
  for (auto& [tensor, e] : expected.tensors()) {
    ASSERT_TRUE(got.tensors().count(tensor)) << tensor;
    const TensorView& g = got.tensors().at(tensor);
    ASSERT_EQ(g.shape, e.shape) << tensor;
    std::vector<float> a(g.numel()), b(e.numel());
    std::memcpy(a.data(), g.data, g.nbytes);
    std::memcpy(b.data(), e.data, e.nbytes);
    double scale = 0;
    for (float v : b) scale = std::max(scale, static_cast<double>(std::fabs(v)));
    if (scale == 0) {
      for (float v : a) ASSERT_EQ(v, 0.0f) << tensor << " must have no gradient";
      continue;
    }
    ++nonzero;
    EXPECT_LT(testing::relative_max_error(a, b), 1e-4) << tensor;
  }
  EXPECT_GT(nonzero, 10);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenGrad,
                         ::testing::Values("grad_v3", "grad_v2", "grad_qwen2"));

// The training forward (f32 master weights, naive attention, whole batch) gives the inference
// forward's logits.
TEST(TrainForward, MatchesInferenceLogits) {
  for (std::string name : {"v3_sharded", "v2_group_yarn", "qwen2", "llama3", "v3_fp8"}) {
    std::string dir = testing::golden_dir(name);
    ParamStore store(ModelConfig::load(dir));
    store.load(Checkpoint(dir));
    TrainModel model(store);
    auto tokens = testing::golden_tokens(name);
    const int T = static_cast<int>(tokens.size());
    // Two copies of the sequence in one batch: each row must see only its own sequence.
    std::vector<int> batch = tokens;
    batch.insert(batch.end(), tokens.begin(), tokens.end());
    model.forward(batch.data(), 2, T, TrainOptions{});
    NpyArray expected = read_npy(dir + "/logits.npy");
    const size_t half = expected.data.size();
    std::vector<float> first(model.logits().begin(), model.logits().begin() + half);
    std::vector<float> second(model.logits().begin() + half, model.logits().end());
    EXPECT_LT(testing::relative_max_error(first, expected.data), 1e-4) << name;
    EXPECT_LT(testing::relative_max_error(second, expected.data), 1e-4) << name;
    if (model.has_mtp_output()) {
      NpyArray mtp = read_npy(dir + "/mtp_logits.npy");
      std::vector<float> m(model.mtp_logits().begin(),
                           model.mtp_logits().begin() + mtp.data.size());
      EXPECT_LT(testing::relative_max_error(m, mtp.data), 1e-4) << name;
    }
  }
}

// Central differences at each probed tensor's largest-gradient entry (the one a wrong formula
// would move most); returns how many tensors were probed.
int check_largest_gradients(ParamStore& store, const std::vector<float>& analytic,
                            const std::function<double()>& loss_at, double abs_tolerance,
                            const std::function<bool(const Param&)>& probe) {
  int checked = 0;
  for (const Param& p : store.params()) {
    if (!p.trainable || !probe(p)) continue;
    size_t best = 0;
    for (size_t i = 0; i < p.size; ++i)
      if (std::fabs(analytic[p.offset + i]) > std::fabs(analytic[p.offset + best])) best = i;
    if (analytic[p.offset + best] == 0) continue;
    float* v = store.values() + p.offset + best;
    const float saved = *v, eps = 1e-2f * std::max(1.0f, std::fabs(saved));
    *v = saved + eps;
    double up = loss_at();
    *v = saved - eps;
    double down = loss_at();
    *v = saved;
    double numeric = (up - down) / (2 * eps);
    double a = analytic[p.offset + best];
    EXPECT_NEAR(numeric, a, 2e-2 * std::fabs(a) + abs_tolerance) << p.name;
    ++checked;
  }
  return checked;
}

// The tiny preset narrowed further, so that every tensor's probe is cheap.
ModelConfig narrow_tiny_config() {
  ModelConfig c = preset_config("tiny");
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.num_attention_heads = 2;
  c.q_lora_rank = 16;
  c.kv_lora_rank = 16;
  return c;
}

// Central differences of the loss (in double) for a batch of two sequences with the
// batch-scope balance loss, against the analytic gradient, on entries of every kind.
TEST(TrainGradient, FiniteDifferencesOnABatch) {
  ModelConfig c = narrow_tiny_config();
  ParamStore store(c);
  store.init_random(5, 0.3f);
  TrainModel model(store);
  std::vector<int> tokens = {3, 9, 14, 2, 33, 61, 7, 7, 20, 41, 5, 18, 0, 63, 12, 30};
  ObjectiveOptions options;
  options.mtp_weight = 0.3f;
  options.balance_alpha = 0.05f;
  options.balance_scope = BalanceScope::kBatch;
  store.zero_grads();
  language_model_loss(model, tokens.data(), 2, 8, options, true);
  std::vector<float> analytic(store.grads(), store.grads() + store.size());
  auto routing = model.routing();
  // Routing must not change under the probe, so keep the chosen experts fixed.
  auto loss_at = [&]() {
    TrainOptions t;
    t.mtp = true;
    t.balance_alpha = options.balance_alpha;
    t.balance_scope = options.balance_scope;
    t.forced_routing = &routing;
    model.forward(tokens.data(), 2, 8, t);
    std::vector<int> targets(16), mtp_targets(14);
    for (int b = 0; b < 2; ++b) {
      for (int i = 0; i < 8; ++i) targets[b * 8 + i] = i + 1 < 8 ? tokens[b * 8 + i + 1] : -1;
      for (int i = 0; i < 7; ++i) mtp_targets[b * 7 + i] = i + 2 < 8 ? tokens[b * 8 + i + 2] : -1;
    }
    double ce = cross_entropy(model.logits().data(), targets.data(), 16, 64, 1, nullptr);
    double mtp = cross_entropy(model.mtp_logits().data(), mtp_targets.data(), 14, 64, 1, nullptr);
    return ce + options.mtp_weight * mtp + options.balance_alpha * model.balance_loss_value();
  };
  EXPECT_GT(
      check_largest_gradients(store, analytic, loss_at, 1e-4, [](const Param&) { return true; }),
      30);
}

// --train mtp with --mtp-target model: only the MTP module gets gradients, and they are those of
// λ·mean over rows of KL(softmax(main row (b, i+1)) ‖ softmax(MTP row (b, i))), computed here
// independently and probed by central differences. With the data target, the MTP module's
// gradients are exactly those of full training.
TEST(TrainGradient, MtpOnlySelfDistillation) {
  ModelConfig c = narrow_tiny_config();
  ParamStore store(c);
  store.init_random(7, 0.3f);
  TrainModel model(store);
  std::vector<int> tokens = {3, 9, 14, 2, 33, 61, 7, 7, 20, 41, 5, 18, 0, 63, 12, 30};
  const int B = 2, T = 8, V = 64, Tm = T - 1;
  const std::string mtp_prefix = "model.layers." + std::to_string(c.num_hidden_layers) + ".";
  const auto is_mtp = [&](const Param& p) { return p.name.rfind(mtp_prefix, 0) == 0; };

  // The data target: the MTP module's gradients alone, the same bits as in full training.
  ObjectiveOptions full;
  full.mtp_weight = 0.3f;
  store.zero_grads();
  language_model_loss(model, tokens.data(), B, T, full, true);
  std::vector<float> full_grads(store.grads(), store.grads() + store.size());
  ObjectiveOptions only = full;
  only.mtp_only = true;
  store.zero_grads();
  language_model_loss(model, tokens.data(), B, T, only, true);
  int mtp_tensors = 0;
  for (const Param& p : store.params()) {
    for (size_t i = 0; i < p.size; ++i) {
      const float expected = is_mtp(p) ? full_grads[p.offset + i] : 0.0f;
      ASSERT_EQ(store.grads()[p.offset + i], expected) << p.name << "[" << i << "]";
    }
    mtp_tensors += is_mtp(p);
  }
  EXPECT_GT(mtp_tensors, 10);

  // The model target.
  ObjectiveOptions options;
  options.mtp_weight = 0.5f;
  options.mtp_target = MtpTarget::kModel;
  options.mtp_only = true;
  store.zero_grads();
  LossParts parts = language_model_loss(model, tokens.data(), B, T, options, true);
  std::vector<float> analytic(store.grads(), store.grads() + store.size());
  const auto log_softmax = [&](const float* z) {
    std::vector<double> out(V);
    double max = z[0], sum = 0;
    for (int v = 1; v < V; ++v) max = std::max(max, static_cast<double>(z[v]));
    for (int v = 0; v < V; ++v) sum += std::exp(z[v] - max);
    for (int v = 0; v < V; ++v) out[v] = z[v] - max - std::log(sum);
    return out;
  };
  // Mean KL over the B·(T−1) MTP rows, and how many rows' top tokens agree.
  const auto mean_kl = [&](int* agree) {
    double total = 0;
    *agree = 0;
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < Tm; ++i) {
        const float* main = model.logits().data() + static_cast<size_t>(b * T + i + 1) * V;
        const float* mtp = model.mtp_logits().data() + static_cast<size_t>(b * Tm + i) * V;
        auto lp = log_softmax(main), lq = log_softmax(mtp);
        for (int v = 0; v < V; ++v) total += std::exp(lp[v]) * (lp[v] - lq[v]);
        *agree += std::max_element(main, main + V) - main == std::max_element(mtp, mtp + V) - mtp;
      }
    return total / (B * Tm);
  };
  int agree = 0;
  EXPECT_NEAR(parts.ce_mtp, mean_kl(&agree), 1e-6);
  EXPECT_DOUBLE_EQ(parts.mtp_agreement, static_cast<double>(agree) / (B * Tm));
  const auto loss_at = [&]() {
    TrainOptions t;
    t.mtp = true;
    model.forward(tokens.data(), B, T, t);
    int unused;
    return options.mtp_weight * mean_kl(&unused);
  };
  for (const Param& p : store.params()) {
    if (is_mtp(p)) continue;
    for (size_t i = 0; i < p.size; ++i) ASSERT_EQ(analytic[p.offset + i], 0.0f) << p.name;
  }
  EXPECT_GT(check_largest_gradients(store, analytic, loss_at, 1e-5, is_mtp), 8);
}

}  // namespace
}  // namespace whale
