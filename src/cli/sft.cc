// `whale sft` (fine-tuning on prompt/response pairs, optionally distilling a teacher) and
// `whale sample` (rejection sampling into SFT or preference data).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/file.h"
#include "cli/commands.h"
#include "rl/dpo.h"
#include "rl/rejection.h"
#include "rl/sft.h"
#include "text/tokenizer.h"

namespace whale {

void add_sft_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "sft", "Supervised fine-tuning on {\"prompt\", \"response\"} JSONL, loss on the response "
             "only (R1's cold start; SFT on rejection samples); with --teacher, distillation (logit "
             "KD and CCKD's correlation congruence as options)");
  static SftTrainConfig c;
  cmd->add_option("--model", c.model_dir, "Model to fine-tune (the student)")->required();
  cmd->add_option("--data", c.data_file, "JSONL, one {\"prompt\": ..., \"response\": ...} per line")->required();
  cmd->add_option("--out", c.out_dir, "Run folder (default runs/sft): sft_log.csv, sft_loss.png, model/");
  cmd->add_option("--steps", c.steps, "Optimizer steps (100)");
  cmd->add_option("--batch", c.batch, "Examples per step (16)");
  cmd->add_option("--lr", c.lr, "Learning rate after warm-up (1e-4)");
  cmd->add_option("--warmup", c.warmup, "Warm-up steps (10)");
  cmd->add_option("--time-budget", c.time_budget_seconds, "Stop after this many seconds");
  cmd->add_option("--teacher", c.teacher_dir, "Teacher model (same vocabulary) for KD / CCKD");
  cmd->add_option("--kd-weight", c.distill.kd_weight, "w_kd: weight of KL(teacher ‖ student) (0)");
  cmd->add_option("--temperature", c.distill.temperature, "τ of the KD softmax (1)");
  cmd->add_option("--cckd-weight", c.distill.cckd_weight, "w_cc: weight of the correlation-congruence term (0)");
  cmd->add_option("--cckd-gamma", c.distill.cckd_gamma, "γ of CCKD's RBF kernel (0.4)");
  cmd->add_option("--seed", c.seed, "Seed of the data order");
  cmd->callback([] {
    SftTrainSummary s = sft_train(c);
    std::printf("%ld SFT steps in %.0f s, final loss %.4f; model in %s/model\n", s.steps, s.seconds,
                s.final_loss, c.out_dir.c_str());
  });
}

void add_sample_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "sample", "Rejection sampling: sample answers to training problems from a model, score them "
                "with the rule rewards, write JSONL for `whale sft` (--keep correct) or preference "
                "pairs for DPO (--keep pairs)");
  static SampleConfig c;
  static std::string model_dir, out, keep = "correct", tasks = "arithmetic,word,countdown", task_file;
  static int per_prompt = 1;
  cmd->add_option("--model", model_dir, "Model folder (with tokenizer.json)")->required();
  cmd->add_option("--out", out, "Output JSONL")->required();
  cmd->add_option("--keep", keep, "correct (SFT data), all (every answer, with its score) or pairs (chosen/rejected)")
      ->check(CLI::IsMember({"correct", "all", "pairs"}));
  cmd->add_option("--tasks", tasks, "Built-in tasks, comma-separated");
  cmd->add_option("--task-file", task_file, "Your own tasks (JSONL, as whale grpo)");
  cmd->add_option("--prompts", c.prompts, "Problems to sample (256)");
  cmd->add_option("--samples", c.samples, "Answers per problem (8)");
  cmd->add_option("--per-prompt", per_prompt, "correct: at most this many distinct answers per problem (1)");
  cmd->add_option("--max-tokens", c.max_new_tokens, "Longest answer (72)");
  cmd->add_option("--temperature", c.temperature, "Sampling temperature (1.0)");
  cmd->add_option("--top-p", c.top_p, "Nucleus mass (1.0)");
  cmd->add_option("--seed", c.seed, "Seed");
  cmd->callback([] {
    c.tasks = parse_task_list(tasks);
    if (!task_file.empty()) {
      c.problems = load_task_file(task_file);
      if (static_cast<int>(c.problems.size()) > c.prompts) c.problems.resize(c.prompts);
    }
    auto model = Model::load(model_dir);
    auto tokenizer = text::Tokenizer::load(model_dir);
    SampleResult r = sample_answers(*model, *tokenizer, c);
    std::string jsonl;
    size_t lines = 0, answers = 0, correct = 0;
    for (auto& g : r.groups)
      for (auto& s : g) {
        ++answers;
        correct += s.correct;
      }
    if (keep == "pairs") {
      for (auto& [good, bad] : preference_pairs(r)) {
        jsonl += nlohmann::json{{"prompt", good.prompt}, {"chosen", good.response}, {"rejected", bad.response}, {"task", good.task}}.dump() + "\n";
        ++lines;
      }
    } else if (keep == "all") {
      for (auto& g : r.groups)
        for (auto& s : g) {
          jsonl += nlohmann::json{{"prompt", s.prompt}, {"response", s.response}, {"task", s.task}, {"correct", s.correct}}.dump() + "\n";
          ++lines;
        }
    } else {
      for (auto& s : keep_correct(r, per_prompt)) {
        jsonl += nlohmann::json{{"prompt", s.prompt}, {"response", s.response}, {"task", s.task}}.dump() + "\n";
        ++lines;
      }
    }
    write_file_atomic(out, jsonl);
    std::printf("%zu answers to %zu problems in %.1f s (%.0f tokens/s), %.1f%% correct; wrote %zu lines to %s\n",
                answers, r.groups.size(), r.seconds, r.tokens_per_second, 100.0 * correct / std::max<size_t>(1, answers),
                lines, out.c_str());
  });
}

void add_dpo_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "dpo", "Direct Preference Optimization on {\"prompt\", \"chosen\", \"rejected\"} JSONL "
             "(DeepSeek LLM's chat recipe; `whale sample --keep pairs` writes such pairs)");
  static DpoTrainConfig c;
  cmd->add_option("--model", c.model_dir, "Model to tune (also the frozen reference)")->required();
  cmd->add_option("--data", c.data_file, "Preference pairs, JSONL")->required();
  cmd->add_option("--out", c.out_dir, "Run folder (default runs/dpo): dpo_log.csv, dpo_loss.png, model/");
  cmd->add_option("--beta", c.beta, "β, strength of the implicit KL to the reference (0.1)");
  cmd->add_option("--steps", c.steps, "Optimizer steps (100)");
  cmd->add_option("--batch", c.batch, "Pairs per step (8)");
  cmd->add_option("--lr", c.lr, "Learning rate after warm-up (5e-6)");
  cmd->add_option("--warmup", c.warmup, "Warm-up steps (10)");
  cmd->add_option("--time-budget", c.time_budget_seconds, "Stop after this many seconds");
  cmd->add_option("--seed", c.seed, "Seed of the pair order");
  cmd->callback([] {
    DpoTrainSummary s = dpo_train(c);
    std::printf("%ld DPO steps in %.0f s, final loss %.4f; model in %s/model\n", s.steps, s.seconds,
                s.final_loss, c.out_dir.c_str());
  });
}

}  // namespace whale
