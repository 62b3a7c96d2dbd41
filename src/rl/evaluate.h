// Held-out evaluation: greedy answers to a fixed problem set, decoded together, scored by the
// rule rewards.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "model/transformer.h"
#include "rl/reward.h"
#include "text/tokenizer.h"

namespace whale {

struct EvalResult {
  double accuracy = 0, format_rate = 0, mean_response_tokens = 0;
  std::map<std::string, double> task_accuracy;
  std::vector<std::string> responses;  // one per problem
  std::vector<bool> correct;
};

EvalResult evaluate(const Model& model, const text::Tokenizer& tokenizer,
                    const std::vector<Problem>& problems, int max_new_tokens);

}  // namespace whale
