// In-process A/B of decode on one model folder: the weights as Model::load leaves them (on
// AVX512 CPUs: q8/q4 rows in group-lane order, bf16 rows packed in 12 bits, all on huge pages)
// against Model::from_source on the same checkpoint (the file mapping as stored), or with
// COPY=1 that plain model's bf16/f32 matrices copied onto huge pages first — so that a layout's
// gain and the pages' gain can be told apart. Rounds of BLOCK steps each, who goes first
// alternating; prints ms per step and the ratio (plain / loaded) overall and per round.
//
//   g++ -O2 -std=c++20 -fopenmp -I src bench/inference/layout_ab.cc build/libwhale_core.a \
//     -lhwy -lopenblas -lpcre2-8 -o /tmp/layout_ab
//   OMP_NUM_THREADS=2 [COPY=1] /tmp/layout_ab MODEL_DIR [ROUNDS=8] [BLOCK=8] [T=1]
// T ≥ 8 times a prefill of T tokens per step instead of decode steps.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "base/page_buffer.h"
#include "model/transformer.h"
#include "ops/precision.h"

using namespace whale;

namespace {
double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Every matrix of the weights, for counting and copying.
template <class F>
void each_matrix(Weights& w, const F& f) {
  for (Layer& l : w.layers) {
    for (Linear* m :
         {&l.mla.q_proj, &l.mla.q_a_proj, &l.mla.q_b_proj, &l.mla.kv_a_proj_with_mqa,
          &l.mla.kv_b_proj, &l.mla.o_proj, &l.mlp.gate_proj, &l.mlp.up_proj, &l.mlp.down_proj,
          &l.moe.shared.gate_proj, &l.moe.shared.up_proj, &l.moe.shared.down_proj})
      f(*m);
    for (FeedForward& e : l.moe.experts)
      for (Linear* m : {&e.gate_proj, &e.up_proj, &e.down_proj}) f(*m);
  }
  f(w.lm_head);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [ROUNDS] [BLOCK] [T]\n", argv[0]);
    return 2;
  }
  set_exact_activations(false);
  auto loaded = Model::load(argv[1]);
  Checkpoint checkpoint(argv[1]);
  auto plain = Model::from_source(loaded->config(), checkpoint);
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 8, block = argc > 3 ? std::atoi(argv[3]) : 8,
            T = argc > 4 ? std::atoi(argv[4]) : 1;
  std::vector<PageBuffer> copies;
  if (std::getenv("COPY"))
    each_matrix(const_cast<Weights&>(plain->weights()), [&](Linear& l) {
      if (l.empty() || (l.dtype != DType::BF16 && l.dtype != DType::F32)) return;
      copies.emplace_back(l.bytes());
      std::memcpy(copies.back().data(), l.data, l.bytes());
      l.data = copies.back().data();
    });
  size_t packed = 0, values = 0, exceptions = 0;
  each_matrix(const_cast<Weights&>(loaded->weights()), [&](Linear& l) {
    if (!l.bf16_packed()) return;
    ++packed;
    values += static_cast<size_t>(l.rows) * l.cols;
    exceptions += l.packed.exception_count(l.rows);
  });
  std::printf(
      "packed bf16: %zu matrices, %zu exceptions in %zu values (%.2e); decode's fixed "
      "bytes %.3f GB loaded, %.3f GB plain%s\n",
      packed, exceptions, values, values ? double(exceptions) / values : 0.0,
      decode_fixed_bytes(loaded->weights()) / 1e9, decode_fixed_bytes(plain->weights()) / 1e9,
      copies.empty() ? "" : " (copied)");
  touch_weight_pages(loaded->config(), loaded->weights());
  touch_weight_pages(plain->config(), plain->weights());
  const int V = loaded->config().vocab_size;
  std::vector<float> logits(static_cast<size_t>(std::max(T, 1)) * V);
  std::vector<int> prompt, tokens(T, 7);
  for (int i = 0; i < std::max(T, 64); ++i) prompt.push_back((i * 131 + 3) % V);
  KVCache cache_a = loaded->new_cache(), cache_b = plain->new_cache();
  loaded->forward(prompt.data(), 64, cache_a, nullptr);
  plain->forward(prompt.data(), 64, cache_b, nullptr);
  std::vector<double> ratios;
  double total_a = 0, total_b = 0;
  for (int r = 0; r < rounds; ++r) {
    double a = 0, b = 0;
    for (int k = 0; k < 2; ++k) {
      const bool first = (k == 0) == (r % 2 == 0);
      const Model* m = first ? loaded.get() : plain.get();
      KVCache& cache = first ? cache_a : cache_b;
      const double start = now();
      for (int i = 0; i < block; ++i) {
        if (T >= 8) {
          KVCache fresh = m->new_cache();
          m->forward(prompt.data(), T, fresh, nullptr);
        } else {
          m->forward(tokens.data(), T, cache, logits.data());
        }
      }
      (first ? a : b) += now() - start;
    }
    ratios.push_back(b / a);
    total_a += a;
    total_b += b;
  }
  std::sort(ratios.begin(), ratios.end());
  std::printf(
      "T=%d loaded %.2f ms/step, plain %.2f ms/step: %.3f× (rounds: median %.3f, "
      "%.3f–%.3f)\n",
      T, total_a * 1e3 / (rounds * block), total_b * 1e3 / (rounds * block), total_b / total_a,
      ratios[ratios.size() / 2], ratios.front(), ratios.back());
}
