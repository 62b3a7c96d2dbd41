// Logits of a token sequence in llama.cpp, compared with whale's (`whale logits --out F.npy`).
// Built by run.sh against the llama.cpp it builds (never in whale's CMake: CI cannot build
// llama.cpp in time). Usage: llama_logits MODEL.gguf IDS(comma-separated) WHALE.npy [threads]
// Prints the max |Δ| over all positions and the top-1 agreement.
#include <llama.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

// A float32 C-order .npy [T, V] (the form whale writes).
static std::vector<float> read_npy(const char* path, size_t* rows, size_t* cols) {
  std::ifstream in(path, std::ios::binary);
  char magic[8];
  in.read(magic, 8);
  if (!in || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    std::fprintf(stderr, "%s: not a .npy file\n", path);
    std::exit(1);
  }
  uint16_t header_len = 0;
  if (magic[6] == 1) {
    in.read(reinterpret_cast<char*>(&header_len), 2);
  } else {
    uint32_t n;
    in.read(reinterpret_cast<char*>(&n), 4);
    header_len = static_cast<uint16_t>(n);
  }
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  if (header.find("'<f4'") == std::string::npos || header.find("True") != std::string::npos) {
    std::fprintf(stderr, "%s: expected little-endian float32 in C order\n", path);
    std::exit(1);
  }
  size_t open = header.find('(');
  std::sscanf(header.c_str() + open, "(%zu, %zu)", rows, cols);
  std::vector<float> data(*rows * *cols);
  in.read(reinterpret_cast<char*>(data.data()), data.size() * 4);
  if (!in) {
    std::fprintf(stderr, "%s: truncated\n", path);
    std::exit(1);
  }
  return data;
}

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s MODEL.gguf IDS WHALE.npy [threads]\n", argv[0]);
    return 2;
  }
  std::vector<llama_token> tokens;
  std::stringstream ids(argv[2]);
  for (std::string id; std::getline(ids, id, ',');) tokens.push_back(std::stoi(id));
  const int threads = argc > 4 ? std::atoi(argv[4]) : 2;
  size_t T = 0, V = 0;
  std::vector<float> ref = read_npy(argv[3], &T, &V);
  if (T != tokens.size()) {
    std::fprintf(stderr, "whale logits have %zu rows for %zu tokens\n", T, tokens.size());
    return 1;
  }

  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  // Load the nextn (MTP) block too: llama.cpp then checks every exported tensor's name and shape.
  mp.load_mtp = std::getenv("NO_MTP") == nullptr;
  llama_model* model = llama_model_load_from_file(argv[1], mp);
  if (!model) return 1;
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = static_cast<uint32_t>(tokens.size() + 16);
  cp.n_batch = cp.n_ubatch = static_cast<uint32_t>(tokens.size());
  cp.n_threads = cp.n_threads_batch = threads;
  // f32 cache (llama.cpp's default is f16), so the comparison sees the weights' format only.
  cp.type_k = GGML_TYPE_F32;
  cp.type_v = GGML_TYPE_F32;
  // Flash attention on the CPU rounds queries to f16; off, attention stays in f32.
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  llama_context* ctx = llama_init_from_model(model, cp);
  if (!ctx) return 1;
  const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  if (static_cast<size_t>(n_vocab) != V) {
    std::fprintf(stderr, "vocabulary: llama.cpp %d, whale %zu\n", n_vocab, V);
    return 1;
  }
  llama_batch batch = llama_batch_init(static_cast<int32_t>(tokens.size()), 0, 1);
  for (size_t i = 0; i < tokens.size(); ++i) {
    batch.token[i] = tokens[i];
    batch.pos[i] = static_cast<llama_pos>(i);
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = 0;
    batch.logits[i] = 1;  // every position's logits
  }
  batch.n_tokens = static_cast<int32_t>(tokens.size());
  if (llama_decode(ctx, batch) != 0) {
    std::fprintf(stderr, "llama_decode failed\n");
    return 1;
  }
  double max_diff = 0, max_ref = 0;
  int agree = 0;
  for (size_t t = 0; t < T; ++t) {
    const float* got = llama_get_logits_ith(ctx, static_cast<int32_t>(t));
    const float* want = ref.data() + t * V;
    size_t best_got = 0, best_want = 0;
    for (size_t v = 0; v < V; ++v) {
      max_diff = std::fmax(max_diff, std::fabs(got[v] - want[v]));
      max_ref = std::fmax(max_ref, std::fabs(want[v]));
      if (got[v] > got[best_got]) best_got = v;
      if (want[v] > want[best_want]) best_want = v;
    }
    agree += best_got == best_want;
    if (std::getenv("VERBOSE")) {
      double d = 0;
      for (size_t v = 0; v < V; ++v) d = std::fmax(d, std::fabs(got[v] - want[v]));
      std::printf("  position %zu: max |diff| %.4g\n", t, d);
    }
  }
  std::printf("positions %zu, vocab %zu: max |logit diff| %.6g (max |logit| %.4g, relative %.3g), "
              "top-1 agreement %d/%zu\n",
              T, V, max_diff, max_ref, max_diff / max_ref, agree, T);
  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
