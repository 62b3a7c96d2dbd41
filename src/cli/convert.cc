#include <cstdio>

#include "base/error.h"
#include "cli/commands.h"
#include "io/gguf_export.h"
#include "io/quantize.h"

namespace whale {

void add_convert_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "convert",
      "Write a group-quantized copy of a model (q8: int8, q4: 4-bit; 32 inputs per f16 scale), "
      "a bf16 copy, or with --to gguf a llama.cpp GGUF file (deepseek2)");
  static std::string model_dir, out, quant, head = "q8", mtp, to = "whale";
  static double shard_gb = 4.0;
  static bool no_mtp = false;
  cmd->add_option("--model", model_dir, "Model folder to read")->required();
  cmd->add_option("--to", to, "whale (a model folder, the default) or gguf (one file)")
      ->check(CLI::IsMember({"whale", "gguf"}));
  cmd->add_option("--quant", quant,
                  "whale: q8 or q4 (attention, expert and FFN matrices), or bf16 (every "
                  "f32, f16 or FP8 matrix; e.g. a model whale train wrote in f32); "
                  "gguf: f32, bf16 (default), q8_0 or q4_1 (a head that is not q4 stays q8_0)")
      ->check(CLI::IsMember({"q8", "q4", "f32", "bf16", "q8_0", "q4_1"}));
  cmd->add_option("--out", out, "Output folder (whale) or file (gguf)")->required();
  cmd->add_option("--head", head,
                  "lm_head: q8 (default), q4 (fewer bytes per token, a larger accuracy cost), or "
                  "keep it as stored (whale only)")
      ->check(CLI::IsMember({"q8", "q4", "keep"}));
  cmd->add_option("--mtp", mtp,
                  "The MTP module's matrices as q8, q4 or bf16 (whale only; default: as the "
                  "main model, its head as --head): e.g. --quant bf16 --mtp q8, a draft for "
                  "--speculative mtp that reads half the bytes; greedy output stays plain "
                  "decoding's, as the main model verifies")
      ->check(CLI::IsMember({"q8", "q4", "bf16"}));
  cmd->add_option("--shard-gb", shard_gb,
                  "Split weights into shards of at most this size (whale only)");
  cmd->add_flag("--no-mtp", no_mtp, "gguf: leave the MTP module out");
  cmd->callback([] {
    if (to == "gguf") {
      check(mtp.empty(), "convert --to gguf: --mtp is for whale model folders");
      if (quant.empty()) quant = "bf16";
      check(quant == "f32" || quant == "bf16" || quant == "q8_0" || quant == "q4_1",
            "convert --to gguf: --quant is f32, bf16, q8_0 or q4_1");
      GgufExportOptions options;
      options.quant = quant == "f32"    ? GgufQuant::kF32
                      : quant == "bf16" ? GgufQuant::kBF16
                      : quant == "q8_0" ? GgufQuant::kQ8_0
                                        : GgufQuant::kQ4_1;
      options.mtp = !no_mtp;
      options.progress = true;
      export_gguf(model_dir, out, options);
      std::printf("wrote %s (deepseek2 GGUF, %s)\n", out.c_str(), quant.c_str());
      return;
    }
    check(quant == "q8" || quant == "q4" || quant == "bf16",
          "convert: --quant q8, q4 or bf16 (or --to gguf)");
    check(shard_gb > 0, "convert: --shard-gb must be positive");
    ConvertOptions options;
    options.method = quant == "q4"     ? QuantMethod::kQ4
                     : quant == "bf16" ? QuantMethod::kBF16
                                       : QuantMethod::kQ8;
    options.head = head == "q8"   ? std::optional(QuantMethod::kQ8)
                   : head == "q4" ? std::optional(QuantMethod::kQ4)
                                  : std::nullopt;
    if (!mtp.empty())
      options.mtp = mtp == "q8"   ? QuantMethod::kQ8
                    : mtp == "q4" ? QuantMethod::kQ4
                                  : QuantMethod::kBF16;
    options.shard_gb = shard_gb;
    options.progress = true;
    convert_model(model_dir, out, options);
    const std::string mtp_note = mtp.empty() ? "" : ", MTP " + mtp;
    if (options.method == QuantMethod::kBF16)
      std::printf("wrote %s (bf16%s)\n", out.c_str(), mtp_note.c_str());
    else
      std::printf("wrote %s (%s, lm_head %s%s)\n", out.c_str(), quant.c_str(), head.c_str(),
                  mtp_note.c_str());
  });
}

}  // namespace whale
