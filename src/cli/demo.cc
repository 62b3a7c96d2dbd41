// whale's main job on an embedded default: `whale demo r1-zero` (the default) pre-trains a
// small DeepSeek-V3-architecture model and teaches it to reason with GRPO (rl/r1_zero.h);
// `whale demo random` creates a random model and generates from it through the latent cache.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "base/progress.h"
#include "cli/commands.h"
#include "infer/generator.h"
#include "model/kv_cache.h"
#include "model/random_init.h"
#include "rl/r1_recipe.h"
#include "rl/r1_zero.h"

namespace whale {

namespace {

void random_model_demo(const std::string& out, const std::string& preset, int tokens) {
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
  std::printf("2. %s: %d layers, %s parameters (%s active per token, MTP %s), KV cache %zu "
              "bytes/token\n",
              c.model_type.c_str(), c.num_hidden_layers, si(p.total).c_str(), si(p.active).c_str(),
              si(p.mtp).c_str(), kv_cache_bytes_per_token(c));
  std::vector<int> prompt = {c.bos_token_id % c.vocab_size, 11, 12, 13, 14, 15, 16, 17};
  GenerateOptions options;
  options.max_new_tokens = tokens;
  options.stop_at_eos = false;
  options.sampling.temperature = 0.8f;
  options.sampling.seed = 7;
  GenerateStats s;
  std::printf("3. generate %d tokens (random weights, so the ids are noise):\n   ", tokens);
  generate(*model, prompt, options, [](int t) {
    std::printf("%d ", t);
    std::fflush(stdout);
    return true;
  }, &s);
  std::printf("\n   prefill %.0f tok/s, decode %.1f tok/s\n", s.prompt_tokens / s.prefill_seconds,
              s.generated_tokens / s.decode_seconds);
}

}  // namespace

void add_demo_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "demo", "Run whale's main job on a built-in default (no downloads): r1-zero (default) "
              "pre-trains a small DeepSeek-V3 model and teaches it to reason with GRPO; random "
              "generates from a random model");
  static std::string job = "r1-zero", out, preset = "small";
  static int tokens = 32;
  static double budget = 1.0;
  static uint64_t seed = 0;
  cmd->add_option("job", job, "r1-zero (default), r1 (cold start → GRPO → rejection sampling → SFT → distillation) or random")
      ->check(CLI::IsMember({"r1-zero", "r1", "random"}));
  cmd->add_option("--out", out, "Run folder (default runs/r1-zero, runs/r1, or runs/demo for random)");
  cmd->add_option("--budget", budget, "r1-zero, r1: scale every stage's time (1 = about 10 / 14 minutes on 2 cores)");
  cmd->add_option("--seed", seed, "r1-zero, r1: random seed");
  cmd->add_option("--preset", preset, "random: model shape (default small)");
  cmd->add_option("-n", tokens, "random: tokens to generate")->check(CLI::PositiveNumber);
  cmd->callback([] {
    if (job == "random") {
      random_model_demo(out.empty() ? "runs/demo" : out, preset, tokens);
      return;
    }
    if (job == "r1") {
      R1Config config;
      if (!out.empty()) config.out_dir = out;
      config.budget = budget;
      config.seed = seed;
      run_r1(config);
      return;
    }
    R1ZeroConfig config;
    if (!out.empty()) config.out_dir = out;
    config.budget = budget;
    config.seed = seed;
    run_r1_zero(config);
  });
}

}  // namespace whale
