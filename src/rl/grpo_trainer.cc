#include "rl/grpo_trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <random>

#include "base/error.h"
#include "base/file.h"
#include "base/plot.h"
#include "base/progress.h"
#include "rl/evaluate.h"
#include "rl/rollout.h"
#include "text/tokenizer.h"

namespace whale {

namespace fs = std::filesystem;

namespace {

std::string fmt(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}


}  // namespace

GrpoTrainSummary grpo_train(const GrpoTrainConfig& cfg) {
  using clock = std::chrono::steady_clock;
  check(!cfg.model_dir.empty(), "grpo: --model DIR is required");
  check(fs::exists(cfg.model_dir + "/tokenizer.json"), cfg.model_dir + ": no tokenizer.json (GRPO needs text)");
  check(cfg.prompts_per_step > 0 && cfg.grpo.group_size > 1 && cfg.inner_steps > 0,
        "grpo: prompts, group size (> 1) and inner steps must be positive");
  fs::create_directories(cfg.out_dir);
  auto tokenizer = text::Tokenizer::load(cfg.model_dir);
  const ModelConfig config = ModelConfig::load(cfg.model_dir);
  ParamStore policy_store(config), reference_store(config);
  {
    Checkpoint checkpoint(cfg.model_dir);
    policy_store.load(checkpoint);
    reference_store.load(checkpoint);
  }
  auto policy = Model::from_source(config, policy_store);  // sees every update (views)
  TrainModel train_model(policy_store), reference(reference_store);
  AdamW optimizer(policy_store, cfg.adamw);

  std::vector<Problem> custom;
  if (!cfg.task_file.empty()) custom = load_task_file(cfg.task_file);
  std::vector<Problem> heldout = custom.empty() ? heldout_set(cfg.tasks, cfg.heldout_per_task, cfg.seed + 99)
                                                : std::vector<Problem>{};
  std::mt19937_64 rng(cfg.seed);
  auto draw = [&]() {
    if (!custom.empty()) return custom[rng() % custom.size()];
    return draw_problem(cfg.tasks[rng() % cfg.tasks.size()], Split::kTrain, rng);
  };

  GrpoTrainSummary summary;
  std::string log = "step,reward,accuracy,format_rate,response_tokens,kl,clip_fraction,masked,"
                    "rollout_tokens_per_s,step_seconds,heldout_accuracy\n";
  Progress progress(cfg.progress ? "grpo" : "", static_cast<size_t>(cfg.steps), " steps");
  const auto start = clock::now();
  long rollout_tokens = 0;
  const int G = cfg.grpo.group_size;
  for (int step = 0; step < cfg.steps; ++step) {
    if (cfg.time_budget_seconds > 0 &&
        std::chrono::duration<double>(clock::now() - start).count() > cfg.time_budget_seconds)
      break;
    const auto step_start = clock::now();
    std::vector<Problem> problems;
    std::vector<std::vector<int>> prompts;
    for (int i = 0; i < cfg.prompts_per_step; ++i) {
      problems.push_back(draw());
      prompts.push_back(tokenizer->encode(prompt_text(problems.back()), true));
    }
    RolloutOptions ro;
    ro.group_size = G;
    ro.max_new_tokens = cfg.max_new_tokens;
    ro.sampling = {cfg.temperature, cfg.top_k, cfg.top_p, cfg.seed * 7919 + step};
    ro.record_support = cfg.grpo.keep_sampling_mask;
    ro.record_routing = cfg.grpo.keep_routing;
    RolloutStats rs;
    std::vector<Rollout> rollouts = sample_rollouts(*policy, prompts, ro, &rs);
    rollout_tokens += rs.generated_tokens;
    summary.rollout_seconds += rs.seconds;

    GrpoBatch batch;
    double reward_sum = 0, correct = 0, formatted = 0, length = 0;
    for (const Rollout& r : rollouts) {
      std::vector<int> ids = r.response;
      if (!ids.empty() && !r.truncated) ids.pop_back();
      Reward score = score_response(problems[r.prompt_index], tokenizer->decode(ids, true), cfg.rewards);
      batch.sequences.push_back(r.prompt);
      batch.sequences.back().insert(batch.sequences.back().end(), r.response.begin(), r.response.end());
      batch.prompt_lengths.push_back(static_cast<int>(r.prompt.size()));
      batch.rewards.push_back(score.total);
      if (cfg.grpo.keep_sampling_mask) batch.sampling_masks.push_back(r.support);
      if (cfg.grpo.keep_routing) batch.routing.push_back(r.routing);
      reward_sum += score.total;
      correct += score.correct;
      formatted += score.well_formed;
      length += r.response.size();
    }
    if (step % 10 == 0 && summary.sample_traces.size() < 12) {
      const Rollout& r = rollouts[0];
      summary.sample_traces.push_back("step " + std::to_string(step) + ": " +
                                      prompt_text(problems[0]) + tokenizer->decode(r.response, true));
    }
    const auto update_start = clock::now();
    // π_old: the policy that sampled, read off the first inner step's forward (so ρ = 1
    // there exactly); π_ref: the frozen start.
    batch.ref_logprobs = response_logprobs(reference, batch, cfg.grpo);
    GrpoStats stats;
    for (int k = 0; k < cfg.inner_steps; ++k) {
      policy_store.zero_grads();
      stats = grpo_step(train_model, batch, cfg.grpo, true);
      if (k == 0) batch.old_logprobs = std::move(stats.logprobs);
      // Adam's first updates move every parameter by about lr whatever its gradient: ramp up.
      const float ramp = std::min(1.0f, static_cast<float>(step + 1) / std::max(1, cfg.warmup));
      optimizer.step(policy_store, cfg.lr * ramp);
    }
    summary.update_seconds += std::chrono::duration<double>(clock::now() - update_start).count();
    const double n = static_cast<double>(rollouts.size());
    double heldout_accuracy = NAN;
    if (!heldout.empty() && (step % cfg.eval_every == 0 || step + 1 == cfg.steps))
      heldout_accuracy = evaluate(*policy, *tokenizer, heldout, cfg.max_new_tokens).accuracy;
    const double step_seconds = std::chrono::duration<double>(clock::now() - step_start).count();
    summary.curve.push_back({step, reward_sum / n, correct / n, formatted / n, length / n, stats.kl, heldout_accuracy});
    log += std::to_string(step) + "," + fmt(reward_sum / n) + "," + fmt(correct / n) + "," +
           fmt(formatted / n) + "," + fmt(length / n) + "," + fmt(stats.kl) + "," +
           fmt(stats.clip_fraction) + "," + std::to_string(stats.masked_sequences) + "," +
           fmt(rs.generated_tokens / std::max(rs.seconds, 1e-9)) + "," + fmt(step_seconds) + "," +
           (std::isnan(heldout_accuracy) ? "" : fmt(heldout_accuracy)) + "\n";
    char status[128];
    std::snprintf(status, sizeof status, "reward %.2f acc %.2f len %.1f", reward_sum / n, correct / n, length / n);
    progress.set_status(status);
    progress.advance(1);
    summary.steps = step + 1;
  }
  progress.finish();
  summary.seconds = std::chrono::duration<double>(clock::now() - start).count();
  summary.rollout_tokens_per_second = rollout_tokens / std::max(summary.rollout_seconds, 1e-9);
  summary.step_seconds = summary.steps ? summary.seconds / summary.steps : 0;
  write_file_atomic(cfg.out_dir + "/rl_log.csv", log);

  // Curves: reward and accuracy (training rollouts, held-out) and response length.
  Series reward{"reward (mean)", {}, {}, 0x1f77b4}, acc{"train accuracy", {}, {}, 0x2ca02c},
      held{"held-out accuracy", {}, {}, 0xd62728}, len{"response length (tokens)", {}, {}, 0x9467bd};
  for (auto& p : summary.curve) {
    reward.x.push_back(p.step);
    reward.y.push_back(p.reward);
    acc.x.push_back(p.step);
    acc.y.push_back(p.accuracy);
    if (!std::isnan(p.heldout_accuracy)) {
      held.x.push_back(p.step);
      held.y.push_back(p.heldout_accuracy);
    }
    len.x.push_back(p.step);
    len.y.push_back(p.response_tokens);
  }
  write_line_plot(cfg.out_dir + "/rl_reward.png", {reward, acc, held},
                  {"GRPO: reward and accuracy", "RL step", "", 900, 460, false});
  write_line_plot(cfg.out_dir + "/rl_length.png", {len},
                  {"GRPO: mean response length", "RL step", "tokens", 900, 360, false});
  policy_store.save(cfg.out_dir + "/model", DType::F32);
  text::copy_tokenizer_files(cfg.model_dir, cfg.out_dir + "/model");
  return summary;
}

}  // namespace whale
