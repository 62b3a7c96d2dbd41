#include "base/error.h"
#include "base/npy.h"
#include "cli/commands.h"
#include "model/transformer.h"

namespace whale {

void add_logits_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("logits",
                                 "Write the logits of a token sequence as float32 .npy [T, vocab]");
  static std::string model_dir, tokens_text, out, attention = "auto";
  static bool mtp = false, step = false;
  cmd->add_option("--model", model_dir, "Model folder")->required();
  cmd->add_option("--tokens", tokens_text, "Token ids, comma-separated")->required();
  cmd->add_option("--out", out, "Output .npy file")->required();
  cmd->add_flag("--mtp", mtp,
                "MTP logits instead: [T-1, vocab], row i predicting token i+2 from position i");
  cmd->add_flag("--step", step, "Feed tokens one at a time through the KV cache (decode path)");
  cmd->add_option("--attention", attention,
                  "MLA form: auto (naive prefill, absorbed decode), naive, absorbed")
      ->check(CLI::IsMember({"auto", "naive", "absorbed"}));
  cmd->callback([] {
    std::vector<int> tokens = parse_token_list(tokens_text);
    auto model = Model::load(model_dir);
    const ModelConfig& c = model->config();
    const int T = static_cast<int>(tokens.size()), V = c.vocab_size, H = c.hidden_size;
    ForwardOptions options;
    options.attention = attention == "naive"      ? AttentionPath::kNaive
                        : attention == "absorbed" ? AttentionPath::kAbsorbed
                                                  : AttentionPath::kAuto;
    std::vector<float> logits(static_cast<size_t>(T) * V), hidden(static_cast<size_t>(T) * H);
    KVCache cache = model->new_cache();
    if (step) {
      for (int t = 0; t < T; ++t)
        model->forward(&tokens[t], 1, cache, logits.data() + static_cast<size_t>(t) * V,
                       hidden.data() + static_cast<size_t>(t) * H, options);
    } else {
      model->forward(tokens.data(), T, cache, logits.data(), hidden.data(), options);
    }
    if (!mtp) {
      write_npy(out, logits.data(), {static_cast<size_t>(T), static_cast<size_t>(V)});
      return;
    }
    check(c.has_mtp(), model_dir + ": --mtp asked, but the model has no MTP module");
    check(T >= 2, "--mtp needs at least two tokens");
    std::vector<float> mtp_logits(static_cast<size_t>(T - 1) * V);
    KVCache mtp_cache = model->new_mtp_cache();
    if (step) {
      for (int t = 0; t + 1 < T; ++t)
        model->mtp_forward(&tokens[t + 1], hidden.data() + static_cast<size_t>(t) * H, 1, mtp_cache,
                           mtp_logits.data() + static_cast<size_t>(t) * V, options);
    } else {
      model->mtp_forward(tokens.data() + 1, hidden.data(), T - 1, mtp_cache, mtp_logits.data(),
                         options);
    }
    write_npy(out, mtp_logits.data(), {static_cast<size_t>(T - 1), static_cast<size_t>(V)});
  });
}

}  // namespace whale
