// whale tokenizer train: learn a byte-level BPE tokenizer (DeepSeek-V3's pre-tokenizer) from
// text and .jsonl files; writes tokenizer.json + tokenizer_config.json.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "base/error.h"
#include "cli/commands.h"
#include "text/bpe_trainer.h"

namespace whale {

void add_tokenizer_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("tokenizer", "Tokenizer tools: train a byte-level BPE");
  cmd->require_subcommand(1);
  auto* train = cmd->add_subcommand(
      "train",
      "Learn a byte-level BPE with DeepSeek-V3's pre-tokenizer; writes OUT/tokenizer.json and "
      "OUT/tokenizer_config.json (they load in whale and in Hugging Face's tokenizers)");
  static std::vector<std::string> inputs;
  static std::string out;
  static text::BpeTrainOptions options;
  static bool quiet = false;
  train->add_option("--input", inputs, "Text files (.jsonl: one {\"text\": ...} per line)")
      ->required()
      ->check(CLI::ExistingFile);
  train
      ->add_option("--vocab-size", options.vocab_size,
                   "Vocabulary size: 2 special tokens + 256 bytes + merged tokens")
      ->required();
  train->add_option("--out", out, "Output folder")->required();
  train->add_option("--min-frequency", options.min_frequency,
                    "Never merge a pair seen fewer times (default 2)");
  train->add_flag("--quiet", quiet, "No progress bars or summary");
  train->callback([] {
    check(options.vocab_size >= text::kBpeFirstMergedId,
          "--vocab-size must be at least " + std::to_string(text::kBpeFirstMergedId) +
              " (2 special tokens and the 256 bytes)");
    using clock = std::chrono::steady_clock;
    options.progress = !quiet;
    text::BpeTrainer trainer(!quiet);
    auto t0 = clock::now();
    for (const std::string& path : inputs) trainer.add_file(path);
    auto t1 = clock::now();
    text::BpeModel model = trainer.train(options);
    auto t2 = clock::now();
    text::save_bpe_tokenizer(model, out);
    auto t3 = clock::now();
    double count_s = std::chrono::duration<double>(t1 - t0).count();
    double merge_s = std::chrono::duration<double>(t2 - t1).count();
    double total_s = std::chrono::duration<double>(t3 - t0).count();
    double mb = trainer.bytes_seen() / 1e6;
    if (!quiet)
      std::fprintf(stderr,
                   "%.2f MB, %zu distinct pre-tokens: counted in %.2f s (%.1f MB/s), %zu merges "
                   "in %.2f s; vocabulary %d; %.2f s in all (%.2f MB/s)\n",
                   mb, trainer.distinct_words(), count_s, mb / std::max(count_s, 1e-9),
                   model.merges.size(), merge_s, model.vocab_size(), total_s,
                   mb / std::max(total_s, 1e-9));
    if (model.vocab_size() < options.vocab_size && !quiet)
      std::fprintf(stderr,
                   "note: the corpus had no more pairs seen at least %lld times, so the "
                   "vocabulary is %d, not %d\n",
                   static_cast<long long>(options.min_frequency), model.vocab_size(),
                   options.vocab_size);
    std::printf("%s/tokenizer.json\n", out.c_str());
  });
}

}  // namespace whale
