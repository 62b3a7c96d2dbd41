// One function per subcommand: each adds its options to the app and sets its callback.
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace whale {

void add_init_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_grad_command(CLI::App& app);
void add_data_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_grpo_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_tokenizer_command(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_sft_command(CLI::App& app);
void add_sample_command(CLI::App& app);
void add_dpo_command(CLI::App& app);
void add_serve_command(CLI::App& app);

// "1,2,3" or "1 2 3" → ids; anything else is an Error naming the bad entry.
std::vector<int> parse_token_list(const std::string& text);

// "arithmetic,word" → task names, each checked against the built-in tasks.
std::vector<std::string> parse_task_list(const std::string& text);

}  // namespace whale
