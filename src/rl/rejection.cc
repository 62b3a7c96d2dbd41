#include "rl/rejection.h"

#include <algorithm>
#include <random>

#include "base/error.h"
#include "rl/reward.h"
#include "rl/rollout.h"
#include "text/tokenizer.h"

namespace whale {

SampleResult sample_answers(const Model& model, const text::Tokenizer& tokenizer, const SampleConfig& cfg) {
  check(cfg.prompts > 0 && cfg.samples > 0, "sample: prompts and samples must be positive");
  std::vector<Problem> problems = cfg.problems;
  std::mt19937_64 rng(cfg.seed);
  if (problems.empty()) {
    check(!cfg.tasks.empty(), "sample: no tasks");
    for (int i = 0; i < cfg.prompts; ++i)
      problems.push_back(draw_problem(cfg.tasks[rng() % cfg.tasks.size()], Split::kTrain, rng));
  }
  std::vector<std::vector<int>> prompts;
  for (const Problem& p : problems) prompts.push_back(tokenizer.encode(prompt_text(p), true));
  RolloutOptions o;
  o.group_size = cfg.samples;
  o.max_new_tokens = cfg.max_new_tokens;
  o.sampling.temperature = cfg.temperature;
  o.sampling.top_p = cfg.top_p;
  o.sampling.seed = cfg.seed * 7919 + 1;
  RolloutStats stats;
  std::vector<Rollout> rollouts = sample_rollouts(model, prompts, o, &stats);
  SampleResult result;
  result.groups.resize(problems.size());
  for (const Rollout& r : rollouts) {
    std::vector<int> ids = r.response;
    if (!ids.empty() && !r.truncated) ids.pop_back();  // the EOS
    const Problem& p = problems[r.prompt_index];
    Sampled s{prompt_text(p), tokenizer.decode(ids, true), p.task, false};
    s.correct = !r.truncated && score_response(p, s.response, RewardWeights{}).correct;
    result.groups[r.prompt_index].push_back(std::move(s));
  }
  result.seconds = stats.seconds;
  result.tokens_per_second = stats.generated_tokens / std::max(stats.seconds, 1e-9);
  return result;
}

std::vector<Sampled> keep_correct(const SampleResult& result, int per_prompt) {
  std::vector<Sampled> kept;
  for (const auto& group : result.groups) {
    std::vector<std::string> seen;
    for (const Sampled& s : group) {
      if (!s.correct || static_cast<int>(seen.size()) >= per_prompt) continue;
      if (std::find(seen.begin(), seen.end(), s.response) != seen.end()) continue;
      seen.push_back(s.response);
      kept.push_back(s);
    }
  }
  return kept;
}

std::vector<std::pair<Sampled, Sampled>> preference_pairs(const SampleResult& result) {
  std::vector<std::pair<Sampled, Sampled>> pairs;
  for (const auto& group : result.groups) {
    auto good = std::find_if(group.begin(), group.end(), [](const Sampled& s) { return s.correct; });
    auto bad = std::find_if(group.begin(), group.end(), [](const Sampled& s) { return !s.correct; });
    if (good != group.end() && bad != group.end()) pairs.emplace_back(*good, *bad);
  }
  return pairs;
}

}  // namespace whale
