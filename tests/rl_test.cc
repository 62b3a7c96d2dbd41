// Tasks, rule rewards, batched rollouts and the GRPO loop.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "base/error.h"
#include "base/file.h"
#include "model/random_init.h"
#include "rl/evaluate.h"
#include "rl/grpo_trainer.h"
#include "rl/r1_zero.h"
#include "rl/rollout.h"
#include "test_util.h"
#include "train/data.h"

namespace whale {
namespace {

TEST(Tasks, SplitsNeverOverlapAndSolutionsAreCorrect) {
  std::mt19937_64 rng(1);
  std::set<std::string> train, heldout;
  for (const std::string& task : builtin_tasks())
    for (int i = 0; i < 400; ++i) {
      Problem a = draw_problem(task, Split::kTrain, rng),
              b = draw_problem(task, Split::kHeldOut, rng);
      train.insert(a.task + a.question);
      heldout.insert(b.task + b.question);
      // The reference solution earns full accuracy and format reward.
      for (const Problem& p : {a, b}) {
        for (bool reason : {true, false}) {
          Reward r = score_response(p, solution_text(p, reason), RewardWeights{});
          EXPECT_TRUE(r.correct && r.well_formed)
              << p.question << " → " << solution_text(p, reason);
        }
      }
    }
  for (const std::string& q : heldout) EXPECT_EQ(train.count(q), 0u) << q;
  // The held-out set is fixed for a seed.
  auto h1 = heldout_set(builtin_tasks(), 10, 5), h2 = heldout_set(builtin_tasks(), 10, 5);
  ASSERT_EQ(h1.size(), 10 * builtin_tasks().size());
  for (size_t i = 0; i < h1.size(); ++i) EXPECT_EQ(h1[i].question, h2[i].question);
}

// The chain's worked steps have the question's layout: the trace with each computed digit
// replaced by "?" is the question's chain, so every copied token sits one fixed distance back.
TEST(Tasks, ChainStepsAreTheQuestionFilledIn) {
  std::mt19937_64 rng(3);
  for (int i = 0; i < 200; ++i) {
    Problem p = draw_problem("chain", i % 2 ? Split::kTrain : Split::kHeldOut, rng);
    const std::string think =
        solution_text(p, true).substr(0, solution_text(p, true).find("</think>"));
    std::string masked = think;
    for (size_t k = 1; k < masked.size(); ++k)
      if (masked[k - 1] == '=') masked[k] = '?';
    EXPECT_EQ("last digit: " + masked, p.question);
    // Recompute the answer independently: ((a*b)+c)*d, last digit.
    ASSERT_EQ(p.numbers.size(), 4u);
    const int a = p.numbers[0], b = p.numbers[1], c = p.numbers[2], d = p.numbers[3];
    EXPECT_EQ(p.answer, std::to_string(((a * b + c) * d) % 10)) << p.question;
    EXPECT_EQ(think.back() - '0', ((a * b + c) * d) % 10) << think;
  }
}

TEST(Rewards, FormatAndAccuracyAreCheckedExactly) {
  Problem p;
  p.task = "arithmetic";
  p.question = "23+45";
  p.answer = "68";
  p.checker = "number";
  RewardWeights w{1.0f, 0.1f, 0.0f};
  EXPECT_FLOAT_EQ(score_response(p, "3+5=8 2+4=6</think><answer>68</answer>", w).total, 1.1f);
  EXPECT_FLOAT_EQ(score_response(p, "</think><answer>67</answer>", w).total, 0.1f);
  EXPECT_FLOAT_EQ(score_response(p, "68", w).total, 0.0f);  // no format
  EXPECT_FLOAT_EQ(score_response(p, "</think><answer>68</answer> more", w).total,
                  0.0f);  // trailing text
  EXPECT_FLOAT_EQ(score_response(p, "<think></think><answer>68</answer>", w).total,
                  0.0f);  // nested think
  EXPECT_TRUE(check_countdown("(3+5)*7", {3, 5, 7}, 56));
  EXPECT_TRUE(check_countdown("12/4+1", {12, 4, 1}, 4));
  EXPECT_FALSE(check_countdown("3*5+7", {3, 5, 7}, 23));      // wrong value
  EXPECT_FALSE(check_countdown("3*5+5", {3, 5, 7}, 20));      // wrong numbers
  EXPECT_FALSE(check_countdown("3*5", {3, 5, 7}, 15));        // a number unused
  EXPECT_FALSE(check_countdown("(3+5*7", {3, 5, 7}, 38));     // unbalanced
  EXPECT_FALSE(check_countdown("7/0+3+5", {7, 0, 3, 5}, 8));  // division by zero
  Problem lang = p;
  Reward mixed = score_response(lang, "abc\xe4\xbd\xa0</think><answer>68</answer>", {0, 0, 1});
  EXPECT_LT(mixed.language, 1.0f);
}

TEST(Rollouts, GroupsAreBatchedDeterministicAndMatchSingleDecoding) {
  testing::TempDir tmp;
  InitOptions init;
  init.seed = 4;
  write_random_model(preset_config("tiny"), tmp / "m", init);
  auto model = Model::load(tmp / "m");
  std::vector<std::vector<int>> prompts = {{0, 5, 6, 7}, {0, 9}, {0, 3, 3, 3, 3, 3}};
  RolloutOptions o;
  o.group_size = 3;
  o.max_new_tokens = 12;
  o.sampling.temperature = 1.0f;
  o.sampling.seed = 9;
  o.record_support = true;
  o.record_routing = true;
  auto a = sample_rollouts(*model, prompts, o), b = sample_rollouts(*model, prompts, o);
  ASSERT_EQ(a.size(), 9u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].response, b[i].response);
    EXPECT_EQ(a[i].prompt, prompts[i / 3]);
    EXPECT_EQ(a[i].support.size(), a[i].response.size());
    ASSERT_EQ(a[i].routing.size(), 1u);  // tiny has one MoE layer
    EXPECT_EQ(a[i].routing[0].size(), (a[i].prompt.size() + a[i].response.size()) * 2);
  }
  // Greedy batched rollouts equal one-by-one greedy generation.
  o.sampling.temperature = 0;
  o.group_size = 1;
  auto greedy = sample_rollouts(*model, prompts, o);
  for (size_t p = 0; p < prompts.size(); ++p) {
    KVCache cache = model->new_cache();
    std::vector<float> logits(prompts[p].size() * 512);
    model->forward(prompts[p].data(), static_cast<int>(prompts[p].size()), cache, logits.data());
    const float* last = logits.data() + (prompts[p].size() - 1) * 512;
    std::vector<float> step(512);
    for (size_t t = 0; t < greedy[p].response.size(); ++t) {
      int token = argmax(last, 512);
      ASSERT_EQ(token, greedy[p].response[t]) << "prompt " << p << " token " << t;
      if (token == 1) break;
      model->forward(&token, 1, cache, step.data());
      last = step.data();
    }
  }
}

// The whole GRPO loop on a tiny model for a few steps: it runs, logs, plots, saves a model.
TEST(GrpoTrainer, RunsAndWritesItsRunFolder) {
  testing::TempDir tmp;
  ModelConfig c = preset_config("r1-zero-demo");
  c.num_hidden_layers = 2;
  c.hidden_size = 64;
  InitOptions init;
  write_random_model(c, tmp / "m", init);
  write_file_atomic(tmp / "m/tokenizer.json", byte_level_tokenizer_json());
  write_file_atomic(tmp / "m/tokenizer_config.json", byte_level_tokenizer_config_json());
  GrpoTrainConfig g;
  g.model_dir = tmp / "m";
  g.out_dir = tmp / "run";
  g.steps = 3;
  g.prompts_per_step = 2;
  g.grpo.group_size = 4;
  g.max_new_tokens = 8;
  g.heldout_per_task = 2;
  g.eval_every = 2;
  g.progress = false;
  g.grpo.keep_routing = true;
  g.grpo.keep_sampling_mask = true;
  g.top_k = 50;
  GrpoTrainSummary s = grpo_train(g);
  EXPECT_EQ(s.steps, 3);
  for (const char* f : {"rl_log.csv", "rl_reward.png", "rl_length.png", "model/config.json",
                        "model/model.safetensors", "model/tokenizer.json"})
    EXPECT_TRUE(std::filesystem::exists(tmp / ("run/" + std::string(f)))) << f;
  EXPECT_GT(s.rollout_tokens_per_second, 0);
}

}  // namespace
}  // namespace whale

namespace whale {
namespace {

// Users' task files are hostile input: each bad line is an error naming file and line.
TEST(Tasks, TaskFileErrorsNameTheLine) {
  const std::string path = ::testing::TempDir() + "/whale_tasks.jsonl";
  auto error_of = [&](const std::string& text) {
    write_file_atomic(path, text);
    try {
      load_task_file(path);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string good = "{\"prompt\": \"2+2\", \"answer\": 4, \"checker\": \"number\"}\n";
  write_file_atomic(path, good +
                              "\n{\"prompt\": \"Use 3 5 to make 15\", \"answer\": \"15\", "
                              "\"checker\": \"countdown\", \"numbers\": [3, 5]}\n");
  auto problems = load_task_file(path);
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0].answer, "4");
  EXPECT_EQ(problems[1].numbers, (std::vector<int>{3, 5}));
  EXPECT_NE(error_of(good + "{not json\n").find(":2: not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(good + "[1, 2]\n").find(":2: expected a JSON object"), std::string::npos);
  EXPECT_NE(error_of(good + "{\"prompt\": 3, \"answer\": 4}\n").find(":2:"), std::string::npos);
  EXPECT_NE(error_of("{\"prompt\": \"x\", \"answer\": 4, \"checker\": 7}\n")
                .find(":1: \"checker\" must be a string"),
            std::string::npos);
  EXPECT_NE(error_of("{\"prompt\": \"x\", \"answer\": 4, \"checker\": \"regex\"}\n")
                .find("checker must be"),
            std::string::npos);
  EXPECT_NE(
      error_of(
          "{\"prompt\": \"x\", \"answer\": 4, \"checker\": \"countdown\", \"numbers\": [\"a\"]}\n")
          .find("must be integers"),
      std::string::npos);
  EXPECT_NE(error_of("\n\n").find("no lines"), std::string::npos);
}

}  // namespace
}  // namespace whale
