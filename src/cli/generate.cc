#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "base/error.h"
#include "cli/commands.h"
#include "infer/generator.h"
#include "infer/speculative.h"
#include "text/tokenizer.h"

namespace whale {

namespace {
std::string format_percent(int part, int whole) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", whole > 0 ? 100.0 * part / whole : 0.0);
  return buf;
}
}  // namespace

void add_generate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "generate", "Continue a prompt: --tokens prints the new ids, --prompt streams the new text");
  static std::string model_dir, tokens_text, prompt, speculative = "none";
  static GenerateOptions options;
  static bool ignore_eos = false, stats = false;
  cmd->add_option("--model", model_dir, "Model folder")->required();
  auto* tokens_opt = cmd->add_option("--tokens", tokens_text, "Prompt token ids, comma-separated");
  cmd->add_option("--prompt", prompt, "Prompt text (needs tokenizer.json in the model folder)")
      ->excludes(tokens_opt);
  cmd->add_option("-n,--max-tokens", options.max_new_tokens, "Tokens to generate (default 32)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--temperature", options.sampling.temperature,
                  "Sampling temperature; 0 (the default) is greedy");
  cmd->add_option("--top-k", options.sampling.top_k, "Keep the k most likely tokens (0: all)");
  cmd->add_option("--top-p", options.sampling.top_p, "Nucleus sampling mass (1: all)");
  cmd->add_option("--seed", options.sampling.seed, "Sampling seed");
  cmd->add_flag("--ignore-eos", ignore_eos, "Keep going past the end-of-sequence token");
  cmd->add_option("--speculative", speculative,
                  "none, or mtp: draft with the MTP module, verify in one batched pass "
                  "(same greedy output, same sampling distribution)")
      ->check(CLI::IsMember({"none", "mtp"}));
  cmd->add_option("--draft-tokens", options.draft_tokens,
                  "With --speculative mtp: drafts per verification pass (default 1; more chain "
                  "the MTP module on its own outputs, up to " +
                      std::to_string(kMaxDraftTokens) + ")")
      ->check(CLI::Range(1, kMaxDraftTokens));
  cmd->add_flag("--stats", stats, "Print prefill and decode speed on stderr");
  cmd->callback([] {
    check(!tokens_text.empty() || !prompt.empty(), "generate: give --tokens IDS or --prompt TEXT");
    check(options.draft_tokens == 1 || speculative == "mtp",
          "generate: --draft-tokens needs --speculative mtp");
    auto model = Model::load(model_dir);
    options.stop_at_eos = !ignore_eos;
    GenerateStats s;
    const auto run = [&](const std::vector<int>& ids, const std::function<bool(int)>& on_token) {
      if (speculative == "mtp")
        generate_speculative(*model, ids, options, on_token, &s);
      else
        generate(*model, ids, options, on_token, &s);
    };
    if (!prompt.empty()) {
      check(std::filesystem::exists(model_dir + "/tokenizer.json"),
            model_dir + ": no tokenizer.json, so --prompt cannot be encoded (use --tokens)");
      auto tokenizer = text::Tokenizer::load(model_dir);
      std::vector<int> ids = tokenizer->encode(prompt, true);
      text::StreamDecoder decoder(*tokenizer, true);
      std::fputs(prompt.c_str(), stdout);
      run(ids, [&](int token) {
        std::fputs(decoder.push(token).c_str(), stdout);
        std::fflush(stdout);
        return true;
      });
      std::fputs(decoder.finish().c_str(), stdout);
    } else {
      std::vector<int> ids = parse_token_list(tokens_text);
      bool first = true;
      run(ids, [&](int token) {
        std::printf(first ? "%d" : " %d", token);
        std::fflush(stdout);
        first = false;
        return true;
      });
    }
    std::printf("\n");
    std::fflush(stdout);
    if (stats)
      std::fprintf(
          stderr,
          "prefill %d tokens in %.3f s (%.1f tok/s); decode %d tokens in %.3f s (%.2f tok/s)\n",
          s.prompt_tokens, s.prefill_seconds, s.prompt_tokens / s.prefill_seconds,
          s.generated_tokens, s.decode_seconds,
          s.generated_tokens > 1 ? (s.generated_tokens - 1) / s.decode_seconds : 0.0);
    if (stats && speculative == "mtp" && s.verify_passes > 0) {
      std::string by_depth;
      for (size_t j = 0; j < s.checked_at.size(); ++j)
        by_depth += (j ? ", " : "") + format_percent(s.accepted_at[j], s.checked_at[j]);
      std::fprintf(stderr,
                   "speculative: %d drafts, %d accepted (%.1f%%; by depth, of those checked: %s), "
                   "%.2f tokens per verification pass; %.2f ms per verification pass, %.2f ms "
                   "drafting per pass (MTP)\n",
                   s.drafted, s.accepted, 100.0 * s.accepted / s.drafted, by_depth.c_str(),
                   static_cast<double>(s.generated_tokens - 1) / s.verify_passes,
                   1e3 * s.verify_seconds / s.verify_passes,
                   1e3 * s.draft_seconds / std::max(1, s.verify_passes));
    }
  });
}

}  // namespace whale
