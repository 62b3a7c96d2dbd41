#include "rl/evaluate.h"

#include "rl/rollout.h"

namespace whale {

EvalResult evaluate(const Model& model, const text::Tokenizer& tokenizer,
                    const std::vector<Problem>& problems, int max_new_tokens) {
  std::vector<std::vector<int>> prompts;
  for (const Problem& p : problems) prompts.push_back(tokenizer.encode(prompt_text(p), true));
  RolloutOptions o;
  o.group_size = 1;
  o.max_new_tokens = max_new_tokens;
  o.sampling.temperature = 0.0f;  // greedy
  std::vector<Rollout> rollouts = sample_rollouts(model, prompts, o);
  EvalResult r;
  std::map<std::string, int> per_task_total, per_task_correct;
  for (size_t i = 0; i < problems.size(); ++i) {
    std::vector<int> ids = rollouts[i].response;
    if (!ids.empty() && !rollouts[i].truncated) ids.pop_back();  // the EOS
    std::string text = tokenizer.decode(ids, true);
    Reward score = score_response(problems[i], text, RewardWeights{});
    r.responses.push_back(text);
    r.correct.push_back(score.correct);
    r.accuracy += score.correct;
    r.format_rate += score.well_formed;
    r.mean_response_tokens += rollouts[i].response.size();
    per_task_total[problems[i].task]++;
    per_task_correct[problems[i].task] += score.correct;
  }
  const double n = std::max<size_t>(1, problems.size());
  r.accuracy /= n;
  r.format_rate /= n;
  r.mean_response_tokens /= n;
  for (auto& [task, total] : per_task_total)
    r.task_accuracy[task] = static_cast<double>(per_task_correct[task]) / total;
  return r;
}

}  // namespace whale
