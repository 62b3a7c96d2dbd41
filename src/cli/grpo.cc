#include <cstdio>

#include "base/error.h"
#include "cli/commands.h"
#include "rl/evaluate.h"
#include "rl/grpo_trainer.h"
#include "text/tokenizer.h"

namespace whale {

void add_grpo_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "grpo", "Reinforcement learning with GRPO on tasks with checkable answers (R1-Zero style)");
  static GrpoTrainConfig g;
  static std::string tasks = "arithmetic,word,countdown";
  static float offpolicy = -1;
  cmd->add_option("--model", g.model_dir, "Policy to start from (also the KL reference)")->required();
  cmd->add_option("--out", g.out_dir, "Run folder (default runs/grpo)");
  cmd->add_option("--tasks", tasks, "Built-in tasks, comma-separated (arithmetic,word,countdown)");
  cmd->add_option("--task-file", g.task_file,
                  "Your own tasks: JSONL lines {\"prompt\", \"answer\", \"checker\": exact|number|countdown}");
  cmd->add_option("--steps", g.steps, "RL steps (100)");
  cmd->add_option("--time-budget", g.time_budget_seconds, "Stop after this many seconds");
  cmd->add_option("--prompts", g.prompts_per_step, "Prompts per step (16)");
  cmd->add_option("--group-size", g.grpo.group_size, "Answers sampled per prompt, G (8)");
  cmd->add_option("--inner-steps", g.inner_steps, "GRPO updates per batch of rollouts (2)");
  cmd->add_option("--max-tokens", g.max_new_tokens, "Longest answer (72)");
  cmd->add_option("--temperature", g.temperature, "Rollout temperature (1.0)");
  cmd->add_option("--top-p", g.top_p, "Rollout nucleus mass (1.0)");
  cmd->add_option("--top-k", g.top_k, "Rollout top-k (0: all)");
  cmd->add_option("--lr", g.lr, "Learning rate (2e-4)");
  cmd->add_option("--warmup", g.warmup, "RL steps of linear learning-rate warm-up (10)");
  cmd->add_option("--clip", g.grpo.clip_eps, "ε of the clipped ratio (0.2)");
  cmd->add_option("--kl", g.grpo.kl_beta, "β of the KL penalty to the reference (0.04)");
  cmd->add_flag("--unbiased-kl", g.grpo.unbiased_kl, "V3.2: importance-weighted KL estimate");
  cmd->add_option("--offpolicy-mask", offpolicy,
                  "V3.2: drop negative-advantage sequences whose mean log(π_old/π) exceeds this");
  cmd->add_flag("--keep-routing", g.grpo.keep_routing, "V3.2: replay the sampled experts in training");
  cmd->add_flag("--keep-sampling-mask", g.grpo.keep_sampling_mask,
                "V3.2: train on the sampler's top-k/top-p support");
  cmd->add_option("--reward-accuracy", g.rewards.accuracy, "Weight of the accuracy reward (1)");
  cmd->add_option("--reward-format", g.rewards.format, "Weight of the format reward (0.1)");
  cmd->add_option("--reward-language", g.rewards.language, "Weight of language consistency (0)");
  cmd->add_option("--heldout", g.heldout_per_task, "Held-out problems per task (50)");
  cmd->add_option("--eval-every", g.eval_every, "Held-out evaluation every N steps (10)");
  cmd->add_option("--seed", g.seed, "Seed");
  cmd->callback([] {
    g.tasks = parse_task_list(tasks);
    if (offpolicy >= 0) g.grpo.offpolicy_delta = offpolicy;
    GrpoTrainSummary s = grpo_train(g);
    double first = s.curve.empty() ? 0 : s.curve.front().reward;
    double last = s.curve.empty() ? 0 : s.curve.back().reward;
    std::printf("%d GRPO steps in %.0f s: reward %.3f → %.3f; rollouts %.0f tokens/s, %.2f s per "
                "step (rollout %.0f s, updates %.0f s); model in %s/model\n",
                s.steps, s.seconds, first, last, s.rollout_tokens_per_second, s.step_seconds,
                s.rollout_seconds, s.update_seconds, g.out_dir.c_str());
  });
}

}  // namespace whale

namespace whale {

void add_eval_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Held-out accuracy of a model on the built-in tasks (greedy)");
  static std::string model_dir, tasks = "arithmetic,word,countdown";
  static int per_task = 60, max_tokens = 72;
  static uint64_t seed = 99;
  static bool show = false;
  cmd->add_option("--model", model_dir, "Model folder (with tokenizer.json)")->required();
  cmd->add_option("--tasks", tasks, "Tasks, comma-separated");
  cmd->add_option("--per-task", per_task, "Problems per task (60)");
  cmd->add_option("--max-tokens", max_tokens, "Longest answer (72)");
  cmd->add_option("--seed", seed, "Seed of the held-out set (99: the demo's)");
  cmd->add_flag("--show", show, "Print every problem and answer");
  cmd->callback([] {
    std::vector<std::string> names = parse_task_list(tasks);
    auto model = Model::load(model_dir);
    auto tokenizer = text::Tokenizer::load(model_dir);
    std::vector<Problem> problems = heldout_set(names, per_task, seed);
    EvalResult r = evaluate(*model, *tokenizer, problems, max_tokens);
    if (show)
      for (size_t i = 0; i < problems.size(); ++i)
        std::printf("%s %s%s\n", r.correct[i] ? "+" : "-", prompt_text(problems[i]).c_str(),
                    r.responses[i].c_str());
    std::printf("held-out accuracy %.1f%% (format %.1f%%, mean response %.1f tokens)", 100 * r.accuracy,
                100 * r.format_rate, r.mean_response_tokens);
    for (auto& [task, acc] : r.task_accuracy) std::printf(", %s %.1f%%", task.c_str(), 100 * acc);
    std::printf("\n");
  });
}

}  // namespace whale
