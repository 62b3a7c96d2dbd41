#include <cstdio>

#include "base/error.h"
#include "cli/commands.h"
#include "train/trainer.h"

namespace whale {

void add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "train",
      "Pre-train (or continue training) a model on token shards; logs, plots and "
      "checkpoints go to the run folder");
  static TrainerConfig t;
  static std::string schedule = "multistep", balance_scope = "sequence";
  static double compute_budget = 0;
  cmd->add_option("--data", t.data_dir, "Data folder (whale data prepare / synth)")->required();
  cmd->add_option("--out", t.out_dir, "Run folder (default runs/train)");
  cmd->add_option("--model", t.model_dir, "Start from this model folder");
  cmd->add_option("--preset", t.preset, "Or: random init of a preset shape");
  cmd->add_option("--config", t.config_file, "Or: random init from a config.json");
  cmd->add_option("--vocab-size", t.vocab_size,
                  "Override the vocabulary size (default: the data's)");
  cmd->add_option("--init-std", t.init_std, "Std of the random init (0.02)");
  cmd->add_option("--batch", t.batch, "Sequences per micro-batch (8)");
  cmd->add_option("--seq-len", t.seq_len, "Tokens per sequence (128)");
  cmd->add_option("--accumulation", t.accumulation, "Micro-batches per step (1)");
  cmd->add_option("--steps", t.steps, "Optimizer steps (200)");
  cmd->add_option("--lr", t.lr, "Peak learning rate (3e-3)");
  cmd->add_option("--warmup", t.warmup, "Warm-up steps (20)");
  cmd->add_option("--schedule", schedule,
                  "multistep (DeepSeek LLM: 31.6% at 80%, 10% at 90%), cosine, constant")
      ->check(CLI::IsMember({"multistep", "cosine", "constant"}));
  cmd->add_option("--compute-budget", compute_budget,
                  "Pick batch tokens and learning rate by DeepSeek LLM's scaling law for C FLOPs");
  cmd->add_option("--weight-decay", t.adamw.weight_decay, "AdamW weight decay on matrices (0.1)");
  cmd->add_option("--clip", t.adamw.clip_norm, "Global gradient-norm clip (1.0; 0 = off)");
  cmd->add_option("--mtp-weight", t.objective.mtp_weight, "λ, weight of the MTP loss (0.3)");
  static std::string train_what = "all", mtp_target = "data";
  cmd->add_option("--train", train_what,
                  "Which parameters learn: all, or mtp — the MTP module alone, the main model "
                  "frozen (with --model: tune a trained model's speculative-decoding draft; a "
                  "step costs about 40% of a full one)")
      ->check(CLI::IsMember({"all", "mtp"}));
  cmd->add_option("--mtp-target", mtp_target,
                  "What the MTP module learns: data — the token after next (DeepSeek-V3), or "
                  "model — the main model's own distribution for it (self-distillation: raises "
                  "greedy speculative decoding's acceptance)")
      ->check(CLI::IsMember({"data", "model"}));
  cmd->add_option("--balance-alpha", t.objective.balance_alpha, "α, balance-loss weight (1e-4)");
  cmd->add_option("--balance-scope", balance_scope,
                  "sequence (V3's sequence-wise loss) or batch (V2's expert-level loss)")
      ->check(CLI::IsMember({"sequence", "batch"}));
  cmd->add_option("--bias-gamma", t.bias_gamma,
                  "γ of the auxiliary-loss-free bias update (0.001; 0 = off)");
  cmd->add_option("--eval-every", t.eval_every, "Validation every N steps (25)");
  cmd->add_option("--save-every", t.save_every, "Checkpoint every N steps (50)");
  cmd->add_option("--seed", t.seed, "Seed of the init and of the data order");
  cmd->add_flag("--resume", t.resume, "Continue from the run folder's newest checkpoint");
  cmd->callback([] {
    parse_schedule(schedule, &t.schedule);
    parse_mtp_target(mtp_target, &t.objective.mtp_target);
    t.objective.mtp_only = train_what == "mtp";
    t.objective.balance_scope =
        balance_scope == "batch" ? BalanceScope::kBatch : BalanceScope::kSequence;
    if (compute_budget > 0) {
      ScalingLawChoice s = scaling_law(compute_budget);
      t.lr = static_cast<float>(s.learning_rate);
      t.accumulation =
          std::max(1, static_cast<int>(std::lround(s.batch_tokens / (t.batch * t.seq_len))));
      std::printf("scaling law for C = %.3g FLOPs: batch %.0f tokens (accumulation %d), lr %.3g\n",
                  compute_budget, s.batch_tokens, t.accumulation, t.lr);
    }
    TrainSummary s = train(t);
    std::printf(
        "trained %ld steps: loss %.4f, validation loss %.4f (unigram entropy %.4f), "
        "%.0f tokens/s; model in %s/model\n",
        s.steps, s.final_loss, s.final_val_loss, s.unigram_entropy, s.tokens_per_second,
        t.out_dir.c_str());
    if (!std::isnan(s.final_val_mtp_agreement))
      std::printf(
          "MTP draft agrees with the main model's next token on %.1f%% of validation "
          "positions (greedy speculative decoding's acceptance on this data)\n",
          100 * s.final_val_mtp_agreement);
    std::printf("time: %.1f s, of which GEMM %.1f s (%.0f%%) at %.1f GFLOP/s\n", s.seconds,
                s.gemm_seconds, 100 * s.gemm_seconds / s.seconds,
                s.gemm_flops / s.gemm_seconds / 1e9);
  });
}

}  // namespace whale
