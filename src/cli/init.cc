#include <filesystem>

#include "base/error.h"
#include "base/file.h"
#include "cli/commands.h"
#include "model/random_init.h"
#include "train/data.h"

namespace whale {

void add_init_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "init",
      "Write a randomly initialized model in the Hugging Face layout (config.json + "
      "model.safetensors)");
  static std::string config_file, preset, out, dtype = "bf16";
  static uint64_t seed = 0;
  static double shard_gb = 4.0;
  static bool byte_tokenizer = false;
  std::string presets;
  for (auto& n : preset_names()) presets += (presets.empty() ? "" : ", ") + n;
  auto* config_opt = cmd->add_option("--config", config_file, "A Hugging Face config.json");
  cmd->add_option("--preset", preset, "A built-in shape: " + presets)->excludes(config_opt);
  cmd->add_option("--out", out, "Output folder")->required();
  cmd->add_option("--seed", seed, "Random seed");
  cmd->add_option("--dtype", dtype, "Weight type: bf16, f32, or fp8 (e4m3 + 128x128 scales)")
      ->check(CLI::IsMember({"bf16", "f32", "fp8"}));
  cmd->add_option("--shard-gb", shard_gb, "Split weights into shards of at most this size");
  cmd->add_flag("--byte-tokenizer", byte_tokenizer,
                "Size the vocabulary to the byte-level tokenizer (256 bytes, BOS 256, EOS 257) "
                "and write its tokenizer files too: a model whale chat and serve can talk to");
  cmd->callback([] {
    check(!config_file.empty() || !preset.empty(), "init: give --config FILE or --preset NAME");
    ModelConfig config;
    if (!config_file.empty()) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(read_file(config_file));
      } catch (const nlohmann::json::exception& e) {
        throw Error(config_file + ": not valid JSON (" + e.what() + ")");
      }
      config = ModelConfig::from_json(j, config_file);
    } else {
      config = preset_config(preset);
    }
    if (byte_tokenizer) {
      config.vocab_size = kByteVocabSize;
      config.bos_token_id = 256;
      config.eos_token_ids = {257};
    }
    InitOptions options;
    options.seed = seed;
    options.dtype = dtype == "f32" ? DType::F32 : dtype == "fp8" ? DType::F8_E4M3 : DType::BF16;
    check(shard_gb > 0, "init: --shard-gb must be positive");
    options.shard_bytes = static_cast<size_t>(shard_gb * (1 << 30));
    options.progress = true;
    write_random_model(config, out, options);
    if (byte_tokenizer) {
      write_file_atomic(out + "/tokenizer.json", byte_level_tokenizer_json());
      write_file_atomic(out + "/tokenizer_config.json", byte_level_tokenizer_config_json());
    }
    std::printf("wrote %s (%s, %s)\n", out.c_str(), config.model_type.c_str(), dtype.c_str());
  });
}

}  // namespace whale
