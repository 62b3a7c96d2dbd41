// Rule-based rewards (MISSION §3): accuracy (the final answer checked exactly) and format
// (reasoning inside <think>…</think>, then <answer>…</answer>), optionally language
// consistency; their weights are flags.
#pragma once
#include <string>

#include "rl/tasks.h"

namespace whale {

struct RewardWeights {
  float accuracy = 1.0f, format = 0.1f, language = 0.0f;
};

struct Reward {
  bool correct = false, well_formed = false;
  float language = 0;  // share of the response's letters that are ASCII (the task's language)
  float total = 0;
  std::string answer;  // what the response put inside <answer>
};

// `response` is the text after the prompt (which ends with "<think>").
Reward score_response(const Problem& p, const std::string& response, const RewardWeights& w);

// The countdown checker: does `expression` use exactly `numbers` (each once) with + − × ÷ and
// parentheses, and evaluate to `target` (exact rational arithmetic)?
bool check_countdown(const std::string& expression, const std::vector<int>& numbers, long target);

}  // namespace whale
