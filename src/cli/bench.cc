// whale bench: inference speed of one model on this machine — prefill, time to first token,
// decode, peak memory, and decode against the memory-bandwidth ceiling (decode is memory-bound:
// each token reads every weight it touches once).
#include "cli/bench.h"

#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "base/error.h"
#include "cli/commands.h"
#include "model/moe.h"
#include "model/transformer.h"
#include "ops/bandwidth.h"
#include "ops/kernels.h"
#include "ops/linear.h"
#include "ops/precision.h"

namespace whale {

namespace {

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // ru_maxrss is in KiB on Linux
}

// Anonymous memory on huge pages (AnonHugePages of /proc/self/smaps_rollup): where Model::load's
// copies of decode's matrices landed. The kernel falls back to 4 KiB pages when it cannot
// assemble 2 MiB ones (memory full of page cache, fragmented), and decode then slows (on a 2-core
// VM here from 30 to 11 tok/s once). 0 where the file is missing.
double huge_pages_mib() {
  std::ifstream in("/proc/self/smaps_rollup");
  std::string key;
  double kib = 0;
  while (in >> key) {
    if (key == "AnonHugePages:") {
      in >> kib;
      break;
    }
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return kib / 1024;
}

// The kernel table: GB/s of weights per format and token count.
void print_kernels(const nlohmann::json& j, bool as_json) {
  if (as_json) {
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("kernels            %d threads, %s; %s\n", j["threads"].get<int>(),
              j["simd"].get<std::string>().c_str(),
              "rows of 2048 weights dotted with 1, 2 or 4 tokens (GB/s of weights read)");
  std::printf("%-11s %6s %18s %22s %13s\n", "format", "tokens", "in L2, 1 thread",
              "from memory, all", "of the probe");
  for (const auto& k : j["kernels"])
    std::printf("%-11s %6d %13.1f GB/s %17.1f GB/s %11.0f%% (%.1f GB/s)\n",
                k["format"].get<std::string>().c_str(), k["tokens"].get<int>(),
                k["cache_gbps"].get<double>(), k["memory_gbps"].get<double>(),
                100 * k["memory_fraction"].get<double>(), k["bandwidth_gbps"].get<double>());
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "bench",
      "Inference speed: prefill and decode tokens/s, time to first token, peak memory, and "
      "decode's fraction of the measured memory bandwidth");
  static std::string model_dir;
  static int threads = 0, decode_tokens = 64, decode_prompt = 128, repeats = 3;
  static std::vector<int> prompt_lengths = {128, 512};
  static std::vector<int> batch_sizes;
  static double bandwidth_mib = 1024, stream_mib = 512;
  static bool as_json = false, kernels = false;
  auto* model_option = cmd->add_option("--model", model_dir, "Model folder (not with --kernels)");
  auto* kernels_flag = cmd->add_flag(
      "--kernels", kernels,
      "Instead of a model: decode's matrix-vector kernels per weight format (f32, bf16, "
      "bf16 packed in 12 bits as loaded on AVX512-BF16 CPUs, fp8, q8, q4) for 1, 2 and 4 "
      "tokens, in GB/s of the weights' bytes — one thread with the "
      "matrix in L2, and every thread streaming from memory against the bandwidth probe");
  cmd->add_option("--stream-mib", stream_mib,
                  "With --kernels: MiB of weights each streamed pass reads (default 512)")
      ->check(CLI::Range(16.0, 65536.0))
      ->needs(kernels_flag);
  cmd->add_option("--threads", threads, "Worker threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--prompt-lengths", prompt_lengths, "Prefill prompt lengths (default 128 512)")
      ->delimiter(',');
  cmd->add_option("--decode-tokens", decode_tokens, "Tokens decoded (default 64)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--decode-prompt", decode_prompt, "Prompt length before decoding (default 128)")
      ->check(CLI::PositiveNumber);
  cmd->add_option(
         "--bandwidth-mib", bandwidth_mib,
         "Buffer of the bandwidth probe, read before, between and after the decode's blocks "
         "(default 1024)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--repeats", repeats,
                  "Best of this many bandwidth runs (with --kernels: streamed passes; default 3)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--batch", batch_sizes,
                  "Also decode N sequences together (as a server's continuous batch does), e.g. "
                  "--batch 4,16: aggregate tok/s and the ratio to one sequence")
      ->delimiter(',')
      ->check(CLI::Range(1, 256));
  cmd->add_flag("--json", as_json, "Print one JSON object");
  // What only a model's benchmark uses is an error with --kernels, not silently ignored.
  for (const char* name :
       {"--prompt-lengths", "--decode-tokens", "--decode-prompt", "--bandwidth-mib", "--batch"})
    kernels_flag->excludes(cmd->get_option(name));
  kernels_flag->excludes(model_option);
  cmd->callback([] {
    if (threads > 0) omp_set_num_threads(threads);
    if (kernels) {
      print_kernels(bench_kernels(stream_mib, repeats), as_json);
      return;
    }
    check(!model_dir.empty(), "bench: --model DIR is required (or --kernels)");
    const int used_threads = omp_get_max_threads();
    auto t0 = std::chrono::steady_clock::now();
    auto model = Model::load(model_dir);
    const double load_s = seconds_since(t0);
    const ModelConfig& c = model->config();
    const Weights& w = model->weights();
    const int V = c.vocab_size, H = c.hidden_size;
    for (int len : prompt_lengths) check(len > 0, "bench: prompt lengths must be positive");

    // Deterministic prompt tokens spread over the vocabulary.
    auto prompt = [&](int n) {
      std::vector<int> t(n);
      for (int i = 0; i < n; ++i) t[i] = static_cast<int>((i * 7919ull + 17) % V);
      return t;
    };
    // A prefill as a server does it: every row through the blocks, the head on the last row.
    std::vector<float> logits(V);
    auto prefill = [&](const std::vector<int>& tokens, KVCache& cache) {
      std::vector<float> hidden(tokens.size() * H);
      model->forward(tokens.data(), static_cast<int>(tokens.size()), cache, nullptr, hidden.data());
      linear_forward(w.lm_head, hidden.data() + (tokens.size() - 1) * H, 1, logits.data());
    };
    auto greedy = [&] { return static_cast<int>(argmax_f32(logits.data(), logits.size())); };

    // Warm-up: fault every page of the weights in (and a short prefill), so the timings below
    // are neither disk reads nor page faults. The weights the model reads, not the checkpoint's
    // tensors: q8/q4 matrices reordered at load live in memory of their own (model/weights.h),
    // and touching their source pages again would count them twice in the peak RSS.
    if (touch_weight_pages(c, w) == -1) std::printf(" ");
    {
      KVCache cache = model->new_cache();
      prefill(prompt(std::min(8, decode_prompt)), cache);
    }
    nlohmann::json prefill_json = nlohmann::json::object();
    for (int len : prompt_lengths) {
      KVCache cache = model->new_cache();
      auto start = std::chrono::steady_clock::now();
      prefill(prompt(len), cache);
      const double rate = len / seconds_since(start);
      prefill_json[std::to_string(len)] = rate;
    }

    // Time to first token: prefill of the decode prompt and the first token chosen (greedy).
    KVCache cache = model->new_cache();
    auto start = std::chrono::steady_clock::now();
    prefill(prompt(decode_prompt), cache);
    int next = greedy();
    const double ttft = seconds_since(start);

    const double rss = peak_rss_mib();  // before the bandwidth probe's buffer adds to it
    const double huge_mib = huge_pages_mib();

    // Decode, counting the routed experts each step actually reads, in blocks with the bandwidth
    // probe before, between and after them: this machine's bandwidth drifts from minute to
    // minute (a 2-core VM here: 40–75 GB/s), so each block is held against the mean of the probes
    // on either side of it, and the fraction is the bytes decode read over the bytes the probes
    // say the memory could have delivered in the same seconds.
    size_t routed_bytes = 0;
    ForwardOptions options;
    options.on_routing = [&](int layer, const Routing& r) {
      const Moe& moe = w.layers[layer].moe;
      for (int e : std::set<int>(r.experts.begin(), r.experts.end()))
        routed_bytes += ffn_bytes(moe.experts[e]);
    };
    std::vector<double> probes;
    double decode_s = 0, ceiling_bytes = 0;
    {  // the probe's buffer only while decoding (not through the batched runs below)
      const BandwidthProbe probe(static_cast<size_t>(bandwidth_mib * (1 << 20)));
      const int blocks = std::min(4, decode_tokens);
      probes.push_back(probe.measure(repeats));
      for (int b = 0; b < blocks; ++b) {
        const int tokens = decode_tokens * (b + 1) / blocks - decode_tokens * b / blocks;
        start = std::chrono::steady_clock::now();
        for (int i = 0; i < tokens; ++i) {
          model->forward(&next, 1, cache, logits.data(), nullptr, options);
          next = greedy();
        }
        const double seconds = seconds_since(start);
        probes.push_back(probe.measure(repeats));
        decode_s += seconds;
        ceiling_bytes += seconds * 1e9 * (probes[b] + probes[b + 1]) / 2;
      }
    }
    const double decode_rate = decode_tokens / decode_s;

    // Weight bytes per decoded token: what every step reads, and the routed experts chosen
    // (averaged).
    const double bytes_per_token =
        decode_fixed_bytes(w) + static_cast<double>(routed_bytes) / decode_tokens;

    // Batched decode: N sequences, each after its own copy of the decode prompt, one token each
    // per step through forward_batch — the ceiling a server's continuous batching can reach.
    nlohmann::json batch_json = nlohmann::json::object();
    for (int n : batch_sizes) {
      std::vector<KVCache> caches;
      for (int i = 0; i < n; ++i) caches.push_back(model->new_cache());
      std::vector<KVCache*> pointers;
      for (KVCache& c : caches) pointers.push_back(&c);
      const std::vector<int> p = prompt(decode_prompt);
      std::vector<int> tokens, counts(n, decode_prompt), ones(n, 1);
      for (int i = 0; i < n; ++i) tokens.insert(tokens.end(), p.begin(), p.end());
      std::vector<float> batch_logits(static_cast<size_t>(n) * V);
      ForwardOptions last;
      last.last_logits_only = true;
      model->forward_batch(tokens.data(), pointers, counts, batch_logits.data(), nullptr, last);
      const int steps = std::max(4, decode_tokens / 2);
      start = std::chrono::steady_clock::now();
      for (int step = 0; step < steps; ++step) {
        for (int i = 0; i < n; ++i) {
          const float* row = batch_logits.data() + static_cast<size_t>(i) * V;
          tokens[i] = static_cast<int>(argmax_f32(row, V));
        }
        model->forward_batch(tokens.data(), pointers, ones, batch_logits.data(), nullptr, last);
      }
      const double rate = static_cast<double>(n) * steps / seconds_since(start);
      batch_json[std::to_string(n)] = {{"tok_s", rate}, {"ratio", rate / decode_rate}};
    }
    double bandwidth = 0;  // the probes' mean
    for (double p : probes) bandwidth += p / probes.size();
    const double fraction = bytes_per_token * decode_tokens / ceiling_bytes;

    nlohmann::json j = {{"model", model_dir},
                        {"threads", used_threads},
                        {"simd", simd_description()},
                        {"load_s", load_s},
                        {"weight_bytes", model->checkpoint().total_bytes()},
                        {"prefill_tok_s", prefill_json},
                        {"ttft_s", ttft},
                        {"ttft_prompt_tokens", decode_prompt},
                        {"decode_tok_s", decode_rate},
                        {"decode_tokens", decode_tokens},
                        {"peak_rss_mib", rss},
                        {"huge_pages_mib", huge_mib},
                        {"bytes_per_token", bytes_per_token},
                        {"bandwidth_gbps", bandwidth},
                        {"bandwidth_probes_gbps", probes},
                        {"bandwidth_fraction", fraction}};
    if (!batch_sizes.empty()) j["batched_decode"] = batch_json;
    if (as_json) {
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf("model              %s (%d threads, %s)\n", model_dir.c_str(), used_threads,
                simd_description().c_str());
    for (int len : prompt_lengths)
      std::printf("prefill %5d tok   %.2f tok/s\n", len,
                  prefill_json[std::to_string(len)].get<double>());
    std::printf("time to 1st token  %.3f s (%d-token prompt)\n", ttft, decode_prompt);
    std::printf("decode             %.2f tok/s (%d tokens)\n", decode_rate, decode_tokens);
    std::printf("weights per token  %.1f MB\n", bytes_per_token / 1e6);
    std::printf(
        "memory bandwidth   %.2f GB/s (streaming read, %d threads; %zu probes around the "
        "decode: %.1f–%.1f)\n",
        bandwidth, used_threads, probes.size(), *std::min_element(probes.begin(), probes.end()),
        *std::max_element(probes.begin(), probes.end()));
    std::printf("decode/bandwidth   %.1f%% of the ceiling (%.2f tok/s)\n", 100 * fraction,
                decode_rate / fraction);
    std::printf("peak RSS           %.0f MiB (%.0f MiB on huge pages: the weights' copies)\n", rss,
                huge_mib);
    for (int n : batch_sizes)
      std::printf("decode, batch %-4d %.2f tok/s (%.2fx one sequence)\n", n,
                  batch_json[std::to_string(n)]["tok_s"].get<double>(),
                  batch_json[std::to_string(n)]["ratio"].get<double>());
  });
}

}  // namespace whale
