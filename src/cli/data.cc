#include "train/data.h"

#include <cstdio>
#include <filesystem>

#include "base/error.h"
#include "base/file.h"
#include "cli/commands.h"
#include "rl/r1_zero.h"
#include "text/tokenizer.h"

namespace whale {

void add_data_command(CLI::App& app) {
  auto* data = app.add_subcommand("data", "Make training data: token shards from text");
  data->require_subcommand(1);

  auto* prepare = data->add_subcommand(
      "prepare",
      "Tokenize text files (.jsonl {\"text\": ...} lines, or plain text with documents "
      "separated by blank lines) into DIR/train.bin, val.bin and data.json");
  static std::string tokenizer_dir, out_dir;
  static std::vector<std::string> inputs;
  static PrepareOptions options;
  prepare->add_option("--tokenizer", tokenizer_dir, "Folder with tokenizer.json")->required();
  prepare->add_option("--input", inputs, "Text files")->required();
  prepare->add_option("--out", out_dir, "Output folder")->required();
  prepare->add_option("--val-fraction", options.val_fraction, "Share of documents held out (0.05)");
  prepare->callback([] {
    auto tokenizer = text::Tokenizer::load(tokenizer_dir);
    prepare_data(*tokenizer, tokenizer_dir, inputs, out_dir, options);
    std::printf("wrote %s\n", out_dir.c_str());
  });

  auto* synth = data->add_subcommand(
      "synth",
      "The built-in synthetic corpus (arithmetic, word problems, small stories) with a "
      "byte-level tokenizer, tokenized into a data folder");
  static size_t bytes = 4'000'000;
  static uint64_t seed = 0;
  static std::string synth_out;
  synth->add_option("--out", synth_out, "Output folder")->required();
  synth->add_option("--bytes", bytes, "Corpus size in bytes (default 4000000)");
  synth->add_option("--seed", seed, "Random seed");
  static std::string kind = "stories";
  synth
      ->add_option("--kind", kind,
                   "stories (arithmetic facts, word problems, small stories) or tasks (the R1-Zero "
                   "demo's task documents with <think> reasoning)")
      ->check(CLI::IsMember({"stories", "tasks"}));
  static CorpusMix mix;
  static std::string tasks;
  synth->add_option("--reason-share", mix.reason_share,
                    "tasks: share of documents that show their reasoning (0.3)");
  synth->add_option("--drill-share", mix.drill_share,
                    "tasks: share of the bytes that are one-digit facts (0.2)");
  synth->add_option(
      "--worked-share", mix.worked_share,
      "tasks: share of the bytes that are worked examples outside the Q/A template (0)");
  synth->add_option("--story-share", mix.story_share,
                    "tasks: share of the bytes that are stories (0.03)");
  synth->add_option("--tasks", tasks, "tasks: comma-separated (default: the demo's, chain)");
  synth->callback([] {
    if (!tasks.empty()) mix.tasks = parse_task_list(tasks);
    namespace fs = std::filesystem;
    fs::create_directories(synth_out + "/tokenizer");
    write_file_atomic(synth_out + "/tokenizer/tokenizer.json", byte_level_tokenizer_json());
    write_file_atomic(synth_out + "/tokenizer/tokenizer_config.json",
                      byte_level_tokenizer_config_json());
    write_file_atomic(synth_out + "/corpus.txt", kind == "stories"
                                                     ? synthetic_corpus(bytes, seed)
                                                     : r1_zero_corpus(mix, bytes, seed));
    auto tokenizer = text::Tokenizer::load(synth_out + "/tokenizer");
    PrepareOptions o;
    prepare_data(*tokenizer, synth_out + "/tokenizer", {synth_out + "/corpus.txt"}, synth_out, o);
    std::printf("wrote %s (corpus.txt, tokenizer/, train.bin, val.bin)\n", synth_out.c_str());
  });
}

}  // namespace whale
