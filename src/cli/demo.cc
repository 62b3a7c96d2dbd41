// whale's main job on an embedded default. For now: create a small random DeepSeek-V3 model
// (MLA + MoE + MTP), describe it, and generate from it through the latent KV cache.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "base/progress.h"
#include "cli/commands.h"
#include "infer/generator.h"
#include "model/kv_cache.h"
#include "model/random_init.h"

namespace whale {

void add_demo_command(CLI::App& app) {
  auto* cmd =
      app.add_subcommand("demo", "Run whale's main job on a built-in default (no downloads)");
  static std::string out = "runs/demo", preset = "small";
  static int tokens = 32;
  cmd->add_option("--out", out, "Folder for the demo model (default runs/demo)");
  cmd->add_option("--preset", preset, "Model shape (default small)");
  cmd->add_option("-n", tokens, "Tokens to generate")->check(CLI::PositiveNumber);
  cmd->callback([] {
    std::string dir = out + "/model-" + preset;
    std::printf("1. whale init --preset %s --out %s\n", preset.c_str(), dir.c_str());
    std::fflush(stdout);
    InitOptions init;
    init.seed = 1;
    init.progress = true;
    write_random_model(preset_config(preset), dir, init);
    auto model = Model::load(dir);
    const ModelConfig& c = model->config();
    Model::ParamCounts p = model->parameter_counts();
    std::printf(
        "2. %s: %d layers, %s parameters (%s active per token, MTP %s), KV cache %zu "
        "bytes/token\n",
        c.model_type.c_str(), c.num_hidden_layers, si(p.total).c_str(), si(p.active).c_str(),
        si(p.mtp).c_str(), kv_cache_bytes_per_token(c));
    std::vector<int> prompt = {c.bos_token_id, 11, 12, 13, 14, 15, 16, 17};
    GenerateOptions options;
    options.max_new_tokens = tokens;
    options.stop_at_eos = false;
    options.sampling.temperature = 0.8f;
    options.sampling.seed = 7;
    GenerateStats s;
    std::printf("3. generate %d tokens (random weights, so the ids are noise):\n   ", tokens);
    generate(
        *model, prompt, options,
        [](int t) {
          std::printf("%d ", t);
          std::fflush(stdout);
          return true;
        },
        &s);
    std::printf("\n   prefill %.0f tok/s, decode %.1f tok/s\n", s.prompt_tokens / s.prefill_seconds,
                s.generated_tokens / s.decode_seconds);
  });
}

}  // namespace whale
