// whale and llama.cpp decoding in ONE process, a block of tokens each in turn, so that both see
// the same seconds of this machine's memory bandwidth (which drifts 31–62 GB/s from one minute
// to the next here: two benchmarks run a minute apart can disagree by 1.5× on the same binary).
// Both engines load the same model (whale's folder and its `whale convert --to gguf` export),
// prefill the same prompt (whale bench's tokens: i·7919 + 17 mod vocab) and decode greedily,
// one token per forward pass, BLOCK tokens at a time, alternating who goes first each round; the
// bandwidth probe runs between rounds. Prints one JSON object: each engine's decode tok/s over
// all its blocks, the ratio of the two, the ratio per round (median, quartiles), the probe's
// median, the bytes each engine reads per token and each one's fraction of the probe.
//
// llama.cpp runs as speed.cpp runs it (its defaults: mmap, f16 KV cache, flash attention auto,
// repacking where it has one); both use the same OpenMP runtime and the same thread count.
// Built by interleaved.sh against whale's core library and llama.cpp's libllama (never in
// whale's CMake).
//
// usage: interleaved WHALE_MODEL_DIR MODEL.gguf [--threads N] [--decode-prompt 128]
//                    [--block 8] [--rounds 16] [--gguf-bytes-per-token B]
#include <llama.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "llama_batch.h"
#include "model/moe.h"
#include "model/transformer.h"
#include "ops/bandwidth.h"
#include "ops/linear.h"

namespace {

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

void quiet_log(ggml_log_level level, const char* text, void*) {
  if (level >= GGML_LOG_LEVEL_WARN || std::getenv("VERBOSE")) std::fputs(text, stderr);
}

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * (v.size() - 1) + 0.5)];
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "interleaved: %s\n", what);
  std::exit(1);
}

// whale: greedy single-token decode after a prompt, counting the routed experts it reads.
struct WhaleEngine {
  std::unique_ptr<whale::Model> model;
  whale::KVCache cache;
  std::vector<float> logits;
  whale::ForwardOptions options;
  size_t routed_bytes = 0;
  int next = 0;

  explicit WhaleEngine(const std::string& dir) : model(whale::Model::load(dir)) {
    const whale::Weights& w = model->weights();
    logits.resize(model->config().vocab_size);
    options.on_routing = [this, &w](int layer, const whale::Routing& r) {
      for (int e : std::set<int>(r.experts.begin(), r.experts.end()))
        routed_bytes += whale::ffn_bytes(w.layers[layer].moe.experts[e]);
    };
    // Every page of the weights in, as whale bench does before timing: the pages the weights
    // read (a reordered or packed matrix's copy, not its dropped file pages).
    if (whale::touch_weight_pages(model->config(), w) == -1) std::printf(" ");
  }
  int argmax() const {
    return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  void prefill(const std::vector<int>& prompt) {
    cache = model->new_cache();
    const int H = model->config().hidden_size;
    std::vector<float> hidden(prompt.size() * H);
    model->forward(prompt.data(), static_cast<int>(prompt.size()), cache, nullptr, hidden.data());
    whale::linear_forward(model->weights().lm_head, hidden.data() + (prompt.size() - 1) * H, 1,
                          logits.data());
    next = argmax();
  }
  void step() {
    model->forward(&next, 1, cache, logits.data(), nullptr, options);
    next = argmax();
  }
};

// llama.cpp: the same, through llama.h.
struct LlamaEngine {
  llama_model* model = nullptr;
  llama_context* ctx = nullptr;
  llama_batch batch{};
  int vocab = 0, position = 0;
  llama_token next = 0;

  LlamaEngine(const char* path, int threads, int context, bool mmap) {
    llama_model_params mp = llama_model_default_params();
    if (!mmap) mp.load_mode = LLAMA_LOAD_MODE_NONE;  // read into memory
    model = llama_model_load_from_file(path, mp);
    if (!model) fail("llama.cpp could not load the GGUF");
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = static_cast<uint32_t>(context);
    cp.n_batch = cp.n_ubatch = static_cast<uint32_t>(context);
    cp.n_threads = cp.n_threads_batch = threads;
    ctx = llama_init_from_model(model, cp);
    if (!ctx) fail("llama_init_from_model failed");
    vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    batch = llama_batch_init(context, 0, 1);
  }
  ~LlamaEngine() {
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
  }
  void run(const llama_token* tokens, int n) {
    decode_batch(ctx, batch, tokens, n, position);
    position += n;
    const float* logits = llama_get_logits_ith(ctx, -1);
    next = static_cast<llama_token>(std::max_element(logits, logits + vocab) - logits);
  }
  void prefill(const std::vector<int>& prompt) {
    llama_memory_clear(llama_get_memory(ctx), true);
    position = 0;
    std::vector<llama_token> t(prompt.begin(), prompt.end());
    run(t.data(), static_cast<int>(t.size()));
  }
  void step() { run(&next, 1); }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argv[1][0] == '-' || argv[2][0] == '-') {
    std::fprintf(stderr,
                 "usage: %s WHALE_MODEL_DIR MODEL.gguf [--threads N] [--decode-prompt 128] "
                 "[--block 8] [--rounds 16] [--gguf-bytes-per-token B] [--llama-mmap 0|1]\n",
                 argv[0]);
    return 2;
  }
  int threads = 2, decode_prompt = 128, block = 8, rounds = 16;
  double gguf_bytes_per_token = 0;
  bool llama_mmap = true;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--threads") threads = std::atoi(argv[i + 1]);
    else if (k == "--decode-prompt") decode_prompt = std::atoi(argv[i + 1]);
    else if (k == "--block") block = std::atoi(argv[i + 1]);
    else if (k == "--rounds") rounds = std::atoi(argv[i + 1]);
    else if (k == "--gguf-bytes-per-token") gguf_bytes_per_token = std::atof(argv[i + 1]);
    else if (k == "--llama-mmap") llama_mmap = std::atoi(argv[i + 1]) != 0;
    else fail(("unknown option " + k).c_str());
  }
  if (threads <= 0 || decode_prompt <= 0 || block <= 0 || rounds <= 0)
    fail("threads, prompt length, block and rounds must be positive");
  omp_set_num_threads(threads);

  WhaleEngine whale_engine(argv[1]);
  llama_log_set(quiet_log, nullptr);
  llama_backend_init();
  const int context = decode_prompt + std::max(32, 2 * block) + rounds * block + 16;
  LlamaEngine llama_engine(argv[2], threads, context, llama_mmap);
  const int V = std::min(whale_engine.model->config().vocab_size, llama_engine.vocab);
  std::vector<int> prompt(decode_prompt);
  for (int i = 0; i < decode_prompt; ++i) prompt[i] = static_cast<int>((i * 7919ull + 17) % V);

  whale_engine.prefill(prompt);
  llama_engine.prefill(prompt);
  // Warm-up, untimed: graphs and buffers, and the page faults of the experts the first tokens
  // route to (llama.cpp maps its weights lazily; after 32 tokens of top-6 of 64 an expert is
  // left untouched with probability 0.04).
  const int warmup = std::max(32, 2 * block);
  for (int i = 0; i < warmup; ++i) whale_engine.step();
  for (int i = 0; i < warmup; ++i) llama_engine.step();
  whale_engine.routed_bytes = 0;

  double whale_s = 0, llama_s = 0;
  std::vector<double> ratios, probes;
  const whale::BandwidthProbe bandwidth(size_t{512} << 20);  // one buffer for every round
  for (int r = 0; r < rounds; ++r) {
    double round_s[2] = {0, 0};
    for (int turn = 0; turn < 2; ++turn) {
      const bool whale_turn = (turn == 0) == (r % 2 == 0);
      const auto start = clock_type::now();
      for (int i = 0; i < block; ++i) whale_turn ? whale_engine.step() : llama_engine.step();
      round_s[whale_turn ? 0 : 1] = seconds_since(start);
    }
    whale_s += round_s[0];
    llama_s += round_s[1];
    ratios.push_back(round_s[1] / round_s[0]);  // whale tok/s over llama.cpp tok/s
    probes.push_back(bandwidth.measure(2));
    std::fprintf(stderr, "round %d: whale %.2f tok/s, llama.cpp %.2f tok/s, probe %.1f GB/s\n",
                 r + 1, block / round_s[0], block / round_s[1], probes.back());
  }
  const int tokens = rounds * block;
  const double whale_rate = tokens / whale_s, llama_rate = tokens / llama_s;
  const double probe = quantile(probes, 0.5);
  const double whale_bytes = whale::decode_fixed_bytes(whale_engine.model->weights()) +
                             static_cast<double>(whale_engine.routed_bytes) / tokens;
  const double llama_bytes = gguf_bytes_per_token > 0 ? gguf_bytes_per_token : whale_bytes;
  char desc[256];
  llama_model_desc(llama_engine.model, desc, sizeof desc);
  std::printf(
      "{\"whale_model\":\"%s\",\"gguf\":\"%s\",\"gguf_desc\":\"%s\",\"threads\":%d,"
      "\"decode_prompt\":%d,\"block\":%d,\"rounds\":%d,"
      "\"whale_decode_tok_s\":%.3f,\"llama_decode_tok_s\":%.3f,\"ratio\":%.4f,"
      "\"round_ratio_median\":%.4f,\"round_ratio_q25\":%.4f,\"round_ratio_q75\":%.4f,"
      "\"round_ratio_min\":%.4f,\"round_ratio_max\":%.4f,\"bandwidth_gbps\":%.2f,"
      "\"whale_bytes_per_token\":%.0f,\"llama_bytes_per_token\":%.0f,"
      "\"whale_fraction\":%.4f,\"llama_fraction\":%.4f}\n",
      argv[1], argv[2], desc, threads, decode_prompt, block, rounds, whale_rate, llama_rate,
      whale_rate / llama_rate, quantile(ratios, 0.5), quantile(ratios, 0.25),
      quantile(ratios, 0.75), quantile(ratios, 0.0), quantile(ratios, 1.0), probe, whale_bytes,
      llama_bytes, whale_rate * whale_bytes / (probe * 1e9),
      llama_rate * llama_bytes / (probe * 1e9));
  llama_backend_free();
  return 0;
}
