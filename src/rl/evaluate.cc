#include "rl/evaluate.h"

#include "rl/rollout.h"

#include <cstdio>

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

nlohmann::json eval_json(const EvalResult& r) {
  return {{"accuracy", r.accuracy}, {"format_rate", r.format_rate},
          {"response_length", r.mean_response_tokens}, {"per_task", r.task_accuracy}};
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '&')
      out += "&amp;";
    else
      out += c;
  }
  return out;
}

std::string eval_table_html(const std::vector<std::pair<std::string, const EvalResult*>>& columns) {
  std::string html = "<table><tr><th></th>";
  for (auto& [name, r] : columns) html += "<th>" + html_escape(name) + "</th>";
  html += "</tr>";
  char cell[64];
  auto row = [&](const std::string& label, auto&& value, const char* format) {
    html += "<tr><td>" + label + "</td>";
    for (auto& [name, r] : columns) {
      std::snprintf(cell, sizeof cell, format, value(*r));
      html += std::string("<td>") + cell + "</td>";
    }
    html += "</tr>";
  };
  row("held-out accuracy", [](const EvalResult& r) { return 100 * r.accuracy; }, "%.1f%%");
  if (!columns.empty())
    for (auto& [task, unused] : columns[0].second->task_accuracy)
      row("&nbsp; " + html_escape(task), [&](const EvalResult& r) {
        auto it = r.task_accuracy.find(task);
        return it == r.task_accuracy.end() ? 0.0 : 100 * it->second;
      }, "%.1f%%");
  row("well-formed answers", [](const EvalResult& r) { return 100 * r.format_rate; }, "%.1f%%");
  row("mean response length (tokens)", [](const EvalResult& r) { return r.mean_response_tokens; }, "%.1f");
  return html + "</table>";
}

}  // namespace whale
