#include <cstdio>

#include "base/error.h"
#include "cli/commands.h"
#include "io/quantize.h"

namespace whale {

void add_convert_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "convert",
      "Write a group-quantized copy of a model (q8: int8, q4: 4-bit; 32 inputs per f16 scale)");
  static std::string model_dir, out, quant = "q8", head = "q8";
  static double shard_gb = 4.0;
  cmd->add_option("--model", model_dir, "Model folder to read")->required();
  cmd->add_option("--quant", quant, "Scheme of the attention, expert and FFN matrices")
      ->check(CLI::IsMember({"q8", "q4"}))
      ->required();
  cmd->add_option("--out", out, "Output folder")->required();
  cmd->add_option("--head", head, "lm_head: q8, or keep it as stored")
      ->check(CLI::IsMember({"q8", "keep"}));
  cmd->add_option("--shard-gb", shard_gb, "Split weights into shards of at most this size");
  cmd->callback([] {
    check(shard_gb > 0, "convert: --shard-gb must be positive");
    ConvertOptions options;
    options.method = quant == "q4" ? QuantMethod::kQ4 : QuantMethod::kQ8;
    options.quantize_head = head == "q8";
    options.shard_gb = shard_gb;
    options.progress = true;
    convert_model(model_dir, out, options);
    std::printf("wrote %s (%s, lm_head %s)\n", out.c_str(), quant.c_str(), head.c_str());
  });
}

}  // namespace whale
