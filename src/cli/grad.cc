#include <cstdio>

#include "base/error.h"
#include "cli/commands.h"
#include "model/config.h"
#include "train/objective.h"

namespace whale {

static std::string decimal(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

void add_grad_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "grad", "Loss and gradient of every parameter for one sequence (f32, HF tensor names)");
  static std::string model_dir, tokens_text, out;
  static ObjectiveOptions options;
  options.mtp_weight = 0.0f;
  options.balance_alpha = 0.0f;
  cmd->add_option("--model", model_dir, "Model folder")->required();
  cmd->add_option("--tokens", tokens_text, "Token ids t_0..t_{T-1}, comma-separated")->required();
  cmd->add_option("--out", out, "Output gradients (.safetensors)")->required();
  cmd->add_option("--mtp-weight", options.mtp_weight,
                  "λ: weight of the MTP cross-entropy (default 0)");
  cmd->add_option("--balance-alpha", options.balance_alpha,
                  "α: weight of the sequence-wise balance loss (default 0)");
  cmd->footer(
      "loss = CE_main + λ·CE_mtp + α·BAL. CE_main: mean over i ≤ T−2 of CE(logits_i, t_{i+1});\n"
      "CE_mtp: mean over i ≤ T−3 of CE(mtp_logits_i, t_{i+2}); BAL: Σ over the main MoE layers of\n"
      "Σ_e f_e·P_e. The file's __metadata__ holds loss, ce_main, ce_mtp and bal.");
  cmd->callback([] {
    std::vector<int> tokens = parse_token_list(tokens_text);
    check(tokens.size() >= 2, "grad needs at least two tokens");
    ParamStore store(ModelConfig::load(model_dir));
    {
      Checkpoint checkpoint(model_dir);
      store.load(checkpoint);
    }
    if (!store.config().has_mtp()) options.mtp_weight = 0.0f;
    TrainModel model(store);
    LossParts parts =
        language_model_loss(model, tokens.data(), 1, static_cast<int>(tokens.size()), options);
    store.save_grads(out, {{"format", "pt"},
                           {"loss", decimal(parts.loss)},
                           {"ce_main", decimal(parts.ce_main)},
                           {"ce_mtp", decimal(parts.ce_mtp)},
                           {"bal", decimal(parts.bal)}});
    std::printf("loss %.9g (ce_main %.9g, ce_mtp %.9g, bal %.9g)\n", parts.loss, parts.ce_main,
                parts.ce_mtp, parts.bal);
  });
}

}  // namespace whale
