// Fine-tuning objectives (rl/sft.h, rl/dpo.h): each loss's gradient against central differences,
// the loss values against direct computations from the logits, and the loops end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "base/file.h"
#include "model/random_init.h"
#include "rl/dpo.h"
#include "rl/rejection.h"
#include "rl/responses.h"
#include "rl/sft.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "train/data.h"

namespace whale {
namespace {

// A small dense model: no routing, so the loss is smooth in every parameter.
ModelConfig small_dense() {
  ModelConfig c = preset_config("tiny-qwen2");
  c.vocab_size = 24;
  return c;
}

std::vector<SftExample> sft_batch() {
  return {{{1, 5, 9}, {4, 4, 12, 2}}, {{1, 7}, {3, 11, 19, 20, 2}}, {{1, 8, 8, 6}, {13, 2}}};
}

// Central differences of `loss` on the largest-gradient entry of every tensor.
void expect_gradient_matches(ParamStore& store, const std::function<double()>& loss,
                             int min_checked) {
  std::vector<float> analytic(store.grads(), store.grads() + store.size());
  int checked = 0;
  for (const Param& p : store.params()) {
    if (!p.trainable) continue;
    size_t best = 0;
    for (size_t i = 0; i < p.size; ++i)
      if (std::fabs(analytic[p.offset + i]) > std::fabs(analytic[p.offset + best])) best = i;
    const double a = analytic[p.offset + best];
    if (std::fabs(a) < 1e-5) continue;
    float* v = store.values() + p.offset + best;
    const float saved = *v, eps = 1e-2f * std::max(1.0f, std::fabs(saved));
    *v = saved + eps;
    const double up = loss();
    *v = saved - eps;
    const double down = loss();
    *v = saved;
    EXPECT_NEAR((up - down) / (2 * eps), a, 3e-2 * std::fabs(a) + 2e-4) << p.name;
    ++checked;
  }
  EXPECT_GE(checked, min_checked);
}

TEST(Sft, LossCoversTheResponseOnlyAndMatchesTheLogits) {
  ParamStore store(small_dense());
  store.init_random(3, 0.2f);
  TrainModel model(store);
  auto batch = sft_batch();
  SftStats s = sft_step(model, batch, DistillOptions{}, nullptr, false);
  // Direct: −log softmax of each response token, from a forward of each sequence alone.
  double sum = 0;
  long n = 0;
  for (const SftExample& e : batch) {
    std::vector<int> seq = e.prompt;
    seq.insert(seq.end(), e.response.begin(), e.response.end());
    PaddedBatch p = pad_sequences({seq});
    forward_padded(model, p);
    for (size_t pos = e.prompt.size(); pos < seq.size(); ++pos, ++n)
      sum -= token_log_prob(prediction_row(model, p, 0, static_cast<int>(pos)), 24, seq[pos],
                            nullptr, nullptr);
  }
  EXPECT_EQ(s.tokens, n);
  EXPECT_NEAR(s.ce, sum / n, 1e-5);
  EXPECT_NEAR(s.loss, s.ce, 1e-12);
}

TEST(Sft, GradientsOfCeKdAndCckdMatchFiniteDifferences) {
  ParamStore student_store(small_dense()), teacher_store(small_dense());
  student_store.init_random(3, 0.3f);
  teacher_store.init_random(4, 0.3f);
  TrainModel student(student_store), teacher(teacher_store);
  auto batch = sft_batch();
  for (int mode = 0; mode < 3; ++mode) {
    DistillOptions o;
    if (mode >= 1) {
      o.kd_weight = 0.6f;
      o.temperature = 2.0f;
    }
    if (mode == 2) {
      o.cckd_weight = 5.0f;  // large enough that its share of the gradient is visible
      o.cckd_tokens = 7;
    }
    student_store.zero_grads();
    SftStats s = sft_step(student, batch, o, &teacher, true);
    if (mode >= 1) {
      EXPECT_GT(s.kd, 0);
    }
    if (mode == 2) {
      EXPECT_GT(s.cckd, 0);
    }
    expect_gradient_matches(
        student_store, [&] { return sft_step(student, batch, o, &teacher, false).loss; }, 8);
  }
}

TEST(Sft, TeacherEqualToStudentHasNoDistillationLoss) {
  ParamStore a(small_dense()), b(small_dense());
  a.init_random(9, 0.3f);
  b.init_random(9, 0.3f);
  TrainModel student(a), teacher(b);
  DistillOptions o;
  o.kd_weight = 1.0f;
  o.cckd_weight = 1.0f;
  SftStats s = sft_step(student, sft_batch(), o, &teacher, false);
  EXPECT_NEAR(s.kd, 0, 1e-9);
  EXPECT_NEAR(s.cckd, 0, 1e-12);
}

TEST(Dpo, LossAndGradientMatchTheirDefinition) {
  ParamStore store(small_dense()), ref_store(small_dense());
  store.init_random(5, 0.3f);
  ref_store.init_random(6, 0.3f);
  TrainModel policy(store), reference(ref_store);
  std::vector<PreferencePair> pairs = {{{1, 5}, {7, 7, 2}, {9, 2}},
                                       {{1, 3, 4}, {10, 2}, {11, 12, 13, 2}}};
  const std::vector<double> ref = pair_logprobs(reference, pairs);
  const std::vector<double> pol = pair_logprobs(policy, pairs);
  ASSERT_EQ(ref.size(), 4u);
  const float beta = 0.5f;
  double want = 0;
  for (int i = 0; i < 2; ++i) {
    const double z = beta * ((pol[2 * i] - ref[2 * i]) - (pol[2 * i + 1] - ref[2 * i + 1]));
    want += -std::log(1 / (1 + std::exp(-z))) / 2;
  }
  store.zero_grads();
  DpoStats s = dpo_step(policy, pairs, ref, beta, true);
  EXPECT_NEAR(s.loss, want, 1e-6);
  expect_gradient_matches(
      store, [&] { return dpo_step(policy, pairs, ref, beta, false).loss; }, 8);
  // At the reference itself every margin is 0: loss log 2.
  EXPECT_NEAR(dpo_step(reference, pairs, ref, beta, false).loss, std::log(2.0), 1e-6);
}

// The R1 recipe's data path: sample → keep correct → SFT, and pairs → DPO, through the CLI.
TEST(FinetuneCli, SampleSftAndDpoRunEndToEnd) {
  namespace fs = std::filesystem;
  const testing::TempDir tmp;  // removed at the end, pass or fail
  const std::string dir = tmp.path.string();
  fs::create_directories(dir + "/model");
  ModelConfig c = preset_config("tiny");
  c.vocab_size = kByteVocabSize;
  c.bos_token_id = 256;
  InitOptions init;
  write_random_model(c, dir + "/model", init);
  write_file_atomic(dir + "/model/tokenizer.json", byte_level_tokenizer_json());
  write_file_atomic(dir + "/model/tokenizer_config.json", byte_level_tokenizer_config_json());
  // A random model is rarely right, so keep everything and make SFT and DPO data by hand.
  auto r = testing::run_whale("sample --model " + dir + "/model --out " + dir +
                              "/all.jsonl --keep all --prompts 4 --samples 2 --max-tokens 8");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("8 answers to 4 problems"), std::string::npos) << r.output;
  write_file_atomic(dir + "/sft.jsonl",
                    "{\"prompt\": \"Q: 2+3\\nA: <think>\", \"response\": \"2+3 "
                    "2+3=5</think><answer>5</answer>\"}\n"
                    "{\"prompt\": \"Q: 4+4\\nA: <think>\", \"response\": \"4+4 "
                    "4+4=8</think><answer>8</answer>\"}\n");
  r = testing::run_whale("sft --model " + dir + "/model --data " + dir + "/sft.jsonl --out " + dir +
                         "/sft --steps 3 --batch 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir + "/sft/model/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir + "/sft/model/tokenizer.json"));
  EXPECT_TRUE(fs::exists(dir + "/sft/sft_loss.png"));
  write_file_atomic(
      dir + "/pairs.jsonl",
      "{\"prompt\": \"Q: 2+3\\nA: <think>\", \"chosen\": \"</think><answer>5</answer>\", "
      "\"rejected\": \"</think><answer>6</answer>\"}\n");
  r = testing::run_whale("dpo --model " + dir + "/model --data " + dir + "/pairs.jsonl --out " +
                         dir + "/dpo --steps 2 --batch 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir + "/dpo/model/model.safetensors"));
  // Hostile input: a line that is not an object with strings names the file and line.
  write_file_atomic(dir + "/bad.jsonl", "{\"prompt\": 3, \"response\": \"x\"}\n");
  r = testing::run_whale("sft --model " + dir + "/model --data " + dir + "/bad.jsonl --out " + dir +
                         "/bad");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("bad.jsonl:1"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace whale

namespace whale {
namespace {

// Both demos end to end at a tiny budget: every stage runs and the report has what the issue
// names (the accuracy figures themselves are the demos' business, not a unit test's).
TEST(Demo, R1ZeroAndR1WriteTheirReports) {
  namespace fs = std::filesystem;
  // Own folder (mkdtemp: two checkouts may run this test at once), removed at the end: the demos
  // write ~250 MB.
  const testing::TempDir tmp;
  const std::string dir = tmp.path.string();
  auto r = testing::run_whale("demo r1-zero --budget 0.01 --out " + dir + "/r1-zero");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto s = nlohmann::json::parse(read_file(dir + "/r1-zero/summary.json"));
  for (const char* key :
       {"accuracy_before", "accuracy_after", "sft_baseline_accuracy", "response_length_before",
        "response_length_after", "heldout_size", "per_task", "stage_seconds"})
    EXPECT_TRUE(s.contains(key)) << key;
  EXPECT_EQ(s["heldout_size"].get<int>(), 200);
  for (const char* f : {"report.html", "rl_reward.png", "rl_length.png", "model/model.safetensors",
                        "model/tokenizer.json"})
    EXPECT_TRUE(fs::exists(dir + "/r1-zero/" + f)) << f;

  r = testing::run_whale("demo r1 --budget 0.01 --out " + dir + "/r1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  s = nlohmann::json::parse(read_file(dir + "/r1/summary.json"));
  for (const char* key : {"pretrained", "cold_start", "grpo", "teacher", "student_distilled",
                          "student_without_teacher"})
    EXPECT_TRUE(s.contains(key) && s[key].contains("accuracy")) << key;
  for (const char* f :
       {"report.html", "teacher_model/model.safetensors", "student_model/config.json"})
    EXPECT_TRUE(fs::exists(dir + "/r1/" + f)) << f;
}

}  // namespace
}  // namespace whale
