// Rejection sampling (R1's third stage): sample several answers to each training problem from a
// policy, score them with the rule rewards, and keep the correct ones as SFT data — or pair a
// correct with an incorrect answer to the same prompt as DPO preference data.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/transformer.h"
#include "rl/tasks.h"

namespace whale {

namespace text {
class Tokenizer;
}

struct SampleConfig {
  std::vector<std::string> tasks = {"arithmetic", "word", "countdown"};
  std::vector<Problem> problems;  // instead of drawing from tasks, when not empty
  int prompts = 256, samples = 8, max_new_tokens = 72;
  float temperature = 1.0f, top_p = 1.0f;
  uint64_t seed = 0;
};

struct Sampled {
  std::string prompt, response, task;  // response without EOS
  bool correct = false;
};

struct SampleResult {
  std::vector<std::vector<Sampled>> groups;  // per prompt, its `samples` answers
  double seconds = 0, tokens_per_second = 0;
};

SampleResult sample_answers(const Model& model, const text::Tokenizer& tokenizer, const SampleConfig& config);

// The correct answers, at most `per_prompt` of each prompt's, duplicates dropped.
std::vector<Sampled> keep_correct(const SampleResult& result, int per_prompt);
// Per prompt with both kinds: (the first correct, the first incorrect answer).
std::vector<std::pair<Sampled, Sampled>> preference_pairs(const SampleResult& result);

}  // namespace whale
