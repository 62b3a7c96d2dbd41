// Held-out evaluation: greedy answers to a fixed problem set, decoded together, scored by the
// rule rewards.
#pragma once
#include <nlohmann/json.hpp>
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

// For run reports: accuracy, format rate, response length and per-task accuracy as JSON; and
// an HTML table with one column per named result.
nlohmann::json eval_json(const EvalResult& r);
std::string eval_table_html(const std::vector<std::pair<std::string, const EvalResult*>>& columns);
std::string html_escape(const std::string& s);

}  // namespace whale
