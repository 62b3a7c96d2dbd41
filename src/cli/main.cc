// whale: DeepSeek models in C++. `whale --help` lists the subcommands.
#include <malloc.h>
#include <omp.h>

#include <cstdio>

#include "base/error.h"
#include "cli/commands.h"
#include "ops/precision.h"

int main(int argc, char** argv) {
  // A forward pass allocates and frees its activation buffers every step; keep freed memory in
  // the process instead of returning it (trimming, unmapping) only to fault the pages in again
  // at the next step. (32 MiB is the largest mmap threshold glibc accepts.)
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  CLI::App app{
      "whale: run, train and serve DeepSeek-architecture models (V2, V3, R1, V3.2) and the\n"
      "R1-distilled Qwen2/Llama students, from Hugging Face checkpoints, on the CPU."};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "Worker threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  bool exact = false;
  app.add_flag(
      "--exact,--exact-bf16", exact,
      "Multiply bf16, q8 and q4 weights by f32 activations (slower; also WHALE_EXACT=1). By "
      "default the activations are rounded first where the CPU has the instructions for "
      "it, as llama.cpp and PyTorch's reduced-precision inference do: to bf16 for bf16 "
      "weights (AVX512-BF16), to int8 per 32 values for q8 and q4 weights (AVX512-VNNI)");
  whale::add_init_command(app);
  whale::add_info_command(app);
  whale::add_logits_command(app);
  whale::add_generate_command(app);
  whale::add_demo_command(app);
  whale::add_grad_command(app);
  whale::add_data_command(app);
  whale::add_train_command(app);
  whale::add_grpo_command(app);
  whale::add_eval_command(app);
  whale::add_tokenize_command(app);
  whale::add_convert_command(app);
  whale::add_bench_command(app);
  whale::add_tokenizer_command(app);
  whale::add_chat_command(app);
  whale::add_sft_command(app);
  whale::add_sample_command(app);
  whale::add_dpo_command(app);
  whale::add_serve_command(app);
  app.parse_complete_callback([&] {
    if (threads > 0) omp_set_num_threads(threads);
    if (exact) whale::set_exact_activations(true);
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 1;
  } catch (const whale::Error& e) {
    std::fprintf(stderr, "whale: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "whale: error: out of memory\n");
    return 1;
  }
  return 0;
}
