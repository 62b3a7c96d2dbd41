// GRPO's objective and gradient against the PyTorch reference (tests/golden/grpo_reference.py)
// on a tiny V3 model: clipping on both sides, k3 KL, and each V3.2 option.
#include "rl/grpo.h"

#include <gtest/gtest.h>

#include <cmath>

#include "io/safetensors.h"
#include "test_util.h"

namespace whale {
namespace {

class GrpoGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(GrpoGolden, LossAndGradientMatchPyTorch) {
  const std::string dir = testing::source_dir() + "/tests/golden/grpo_fixtures/" + GetParam();
  auto j = nlohmann::json::parse(read_file(dir + "/batch.json"));
  GrpoBatch batch;
  batch.sequences = j["sequences"].get<std::vector<std::vector<int>>>();
  batch.prompt_lengths = j["prompt_lengths"].get<std::vector<int>>();
  batch.rewards = j["rewards"].get<std::vector<float>>();
  batch.old_logprobs = j["old_logprobs"].get<std::vector<std::vector<float>>>();
  batch.ref_logprobs = j["ref_logprobs"].get<std::vector<std::vector<float>>>();
  const auto& o = j["options"];
  GrpoOptions options;
  options.group_size = static_cast<int>(batch.sequences.size());
  options.clip_eps = o["clip_eps"].get<float>();
  options.kl_beta = o["kl_beta"].get<float>();
  options.unbiased_kl = o["unbiased_kl"].get<bool>();
  if (!o["offpolicy_delta"].is_null()) options.offpolicy_delta = o["offpolicy_delta"].get<float>();
  options.keep_sampling_mask = o["keep_sampling_mask"].get<bool>();
  options.keep_routing = o["keep_routing"].get<bool>();
  if (options.keep_sampling_mask)
    batch.sampling_masks = j["sampling_masks"].get<std::vector<std::vector<std::vector<int>>>>();
  if (options.keep_routing)
    batch.routing = j["routing"].get<std::vector<std::vector<std::vector<int>>>>();

  ParamStore store(ModelConfig::load(dir));
  store.load(Checkpoint(dir));
  TrainModel model(store);
  store.zero_grads();
  GrpoStats stats = grpo_step(model, batch, options, true);
  SafetensorsFile expected(dir + "/grads.safetensors");
  double loss = std::stod(expected.metadata().at("loss"));
  EXPECT_NEAR(stats.loss, loss, 1e-5 * (1 + std::fabs(loss)));
  int compared = 0;
  for (const Param& p : store.params()) {
    const TensorView& e = expected.tensors().at(p.name);
    std::vector<float> want(p.size),
        got(store.grads() + p.offset, store.grads() + p.offset + p.size);
    std::memcpy(want.data(), e.data, e.nbytes);
    double scale = 0;
    for (float v : want) scale = std::max(scale, static_cast<double>(std::fabs(v)));
    if (scale == 0) {
      for (float v : got) ASSERT_EQ(v, 0.0f) << p.name;
      continue;
    }
    EXPECT_LT(testing::relative_max_error(got, want), 1e-4) << p.name;
    ++compared;
  }
  EXPECT_GT(compared, 20);
}

INSTANTIATE_TEST_SUITE_P(Cases, GrpoGolden,
                         ::testing::Values("grpo_basic", "grpo_unbiased_kl", "grpo_offpolicy",
                                           "grpo_sampling_mask", "grpo_keep_routing"));

// The first update after sampling may leave π_old out: it is then read off the same forward,
// which must give what an explicit forward of the sampling policy gives.
TEST(Grpo, OnPolicyStepEqualsExplicitOldLogprobs) {
  const std::string dir = testing::source_dir() + "/tests/golden/grpo_fixtures/grpo_basic";
  auto j = nlohmann::json::parse(read_file(dir + "/batch.json"));
  GrpoBatch batch;
  batch.sequences = j["sequences"].get<std::vector<std::vector<int>>>();
  batch.prompt_lengths = j["prompt_lengths"].get<std::vector<int>>();
  batch.rewards = j["rewards"].get<std::vector<float>>();
  batch.ref_logprobs = j["ref_logprobs"].get<std::vector<std::vector<float>>>();
  GrpoOptions options;
  options.group_size = static_cast<int>(batch.sequences.size());
  ParamStore store(ModelConfig::load(dir));
  store.load(Checkpoint(dir));
  TrainModel model(store);
  batch.old_logprobs = response_logprobs(model, batch, options);
  store.zero_grads();
  GrpoStats explicit_old = grpo_step(model, batch, options, true);
  std::vector<float> grads(store.grads(), store.grads() + store.size());
  batch.old_logprobs.clear();
  store.zero_grads();
  GrpoStats on_policy = grpo_step(model, batch, options, true);
  EXPECT_EQ(on_policy.loss, explicit_old.loss);
  EXPECT_EQ(on_policy.logprobs, explicit_old.logprobs);
  EXPECT_LT(testing::relative_max_error(
                std::vector<float>(store.grads(), store.grads() + store.size()), grads),
            1e-6);
}

TEST(Grpo, AdvantagesAreGroupNormalized) {
  auto a = group_advantages({1, 0, 0, 1, 2, 2, 2, 2}, 4);
  EXPECT_NEAR(a[0], 0.5 / (std::sqrt(1.0 / 3) + 1e-4), 1e-5);
  EXPECT_NEAR(a[1], -0.5 / (std::sqrt(1.0 / 3) + 1e-4), 1e-5);
  for (int i = 4; i < 8; ++i) EXPECT_EQ(a[i], 0.0f);  // a group that all agrees teaches nothing
}

}  // namespace
}  // namespace whale
