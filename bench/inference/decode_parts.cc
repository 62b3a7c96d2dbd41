// Where a decode step's time goes, against the bandwidth probe measured in the same round: the
// whole step, then each part run on its own with the step's weights as Model::load leaves them
// (packed bf16 / group-lane q8 on huge pages) — the head, every layer's attention (MLA at the
// current position), the dense FFNs, the MoE layers (router, shared and the routed experts
// chosen) — each as GB/s of the weights it reads and as a fraction of the probe — and the step's
// matrices (its last routing's experts) read by a plain load loop, each thread a contiguous half
// of each: what the memory gives the step's access pattern without the kernels' arithmetic (in
// session 13 that read at the probe while the step did not, which led to the page prefetch).
// Rounds alternate the order of the parts, so that a slow minute does not fall on one of them.
//
//   g++ -O2 -std=c++20 -fopenmp -I src bench/inference/decode_parts.cc build/libwhale_core.a \
//     -lhwy -lopenblas -lpcre2-8 -o /tmp/decode_parts
//   OMP_NUM_THREADS=2 /tmp/decode_parts MODEL_DIR [ROUNDS=6]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "model/attention.h"
#include "model/moe.h"
#include "model/transformer.h"
#include "ops/bandwidth.h"
#include "ops/kernels.h"
#include "ops/linear.h"
#include "ops/nn.h"
#include "ops/precision.h"
#include "ops/team.h"

using namespace whale;

namespace {
double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Reads n bytes with next to no arithmetic per byte: 16-byte loads into four accumulators, with
// the kernels' page prefetch.
uint64_t read_bytes(const uint8_t* p, size_t n) {
  size_t i = 0;
  uint64_t sum = 0;
#if defined(__SSE2__)
  __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
  for (; i + 64 <= n; i += 64) {
    prefetch_weights_ahead(p + i, 64);  // as the kernels and the probe read (since session 21)
    a0 = _mm_xor_si128(a0, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i)));
    a1 = _mm_xor_si128(a1, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i + 16)));
    a2 = _mm_xor_si128(a2, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i + 32)));
    a3 = _mm_xor_si128(a3, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i + 48)));
  }
  sum = static_cast<uint64_t>(
      _mm_cvtsi128_si64(_mm_xor_si128(_mm_xor_si128(a0, a1), _mm_xor_si128(a2, a3))));
#endif
  for (; i < n; ++i) sum += p[i];
  return sum;
}

struct Part {
  std::string name;
  // Runs the part once; returns the bytes of weights it read.
  std::function<double()> run;
  double seconds = 0, bytes = 0, probe_bytes_per_s = 0;  // Σ over rounds
};
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [ROUNDS]\n", argv[0]);
    return 2;
  }
  set_exact_activations(false);
  auto model = Model::load(argv[1]);
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 6;
  const ModelConfig& c = model->config();
  const Weights& w = model->weights();
  touch_weight_pages(c, w);
  const int H = c.hidden_size, V = c.vocab_size, L = c.num_hidden_layers;
  const Rope rope(c, c.qk_rope_head_dim);

  // A random normed hidden state for the parts; a cache with a 64-token prompt for attention
  // and the steps.
  std::vector<float> x(H), y(std::max(V, H)), logits(V);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (float& v : x) v = normal(rng);
  std::vector<int> prompt;
  for (int i = 0; i < 64; ++i) prompt.push_back((i * 131 + 3) % V);
  KVCache cache = model->new_cache();
  model->forward(prompt.data(), 64, cache, nullptr);

  std::vector<Part> parts;
  // The matrices every step reads, and the routed experts' the last step chose.
  const std::vector<const Linear*> fixed_matrices = decode_fixed_matrices(w);
  std::vector<const Linear*> routed_matrices;
  parts.push_back({"decode step", [&] {
                     double routed = 0;
                     routed_matrices.clear();
                     ForwardOptions options;
                     options.on_routing = [&](int layer, const Routing& r) {
                       for (int e : r.experts) {
                         const FeedForward& f = w.layers[layer].moe.experts[e];
                         routed += ffn_bytes(f);
                         routed_matrices.insert(routed_matrices.end(),
                                                {&f.gate_proj, &f.up_proj, &f.down_proj});
                       }
                     };
                     const int token = 7;
                     model->forward(&token, 1, cache, logits.data(), nullptr, options);
                     if (cache.length > 1024) cache.truncate(64);
                     return decode_fixed_bytes(w) + routed;
                   }});
  parts.push_back(
      {"the step's bytes, plain read", [&] {
         const std::vector<const Linear*>* lists[] = {&fixed_matrices, &routed_matrices};
         double bytes = 0;
         uint64_t sink = 0;
         for (const auto* list : lists)
           for (const Linear* x : *list) bytes += x->rows * x->row_bytes();
         std::vector<uint64_t> sinks(8 * omp_get_max_threads());  // a cache line a thread
         parallel_region(true, [&](int t, int threads) {
           for (const auto* list : lists)
             for (const Linear* x : *list) {
               const size_t n = x->rows * x->row_bytes();
               const size_t half = (n / threads + 63) / 64 * 64;
               const size_t begin = std::min(n, t * half);
               sinks[8 * t] ^= read_bytes(x->data + begin, std::min(n, begin + half) - begin);
             }
         });
         for (uint64_t v : sinks) sink ^= v;
         if (sink == 1) std::printf(" ");  // keep the reads
         return bytes;
       }});
  parts.push_back({"head", [&] {
                     linear_forward(w.lm_head, x.data(), 1, y.data());
                     return double(w.lm_head.bytes());
                   }});
  if (c.is_deepseek())
    parts.push_back({"attention (all layers)", [&] {
                       double bytes = 0;
                       for (int l = 0; l < L; ++l) {
                         // At the cache's next position, which the step fills later.
                         const std::vector<Segment> segment = {{&cache.layers[l], cache.length, 1}};
                         mla_forward(c, w.layers[l].mla, rope, x.data(), segment, {}, y.data());
                         bytes += attention_bytes(w.layers[l]);
                       }
                       return bytes;
                     }});
  if (c.is_deepseek() && c.q_lora_rank == 0) {
    // Attention's three plain projections on their own; the rest of its time is the absorbed
    // core (kv_b_proj's absorption and value rows, the scores over the cache).
    const auto projection = [&](const char* name, auto matrix) {
      parts.push_back({name, [&, matrix] {
                         double bytes = 0;
                         for (int l = 0; l < L; ++l) {
                           const Linear& m = matrix(w.layers[l].mla);
                           linear_forward(m, x.data(), 1, y.data());
                           bytes += m.bytes();
                         }
                         return bytes;
                       }});
    };
    projection("  q_proj", [](const MlaWeights& m) -> const Linear& { return m.q_proj; });
    projection("  kv_a_proj",
               [](const MlaWeights& m) -> const Linear& { return m.kv_a_proj_with_mqa; });
    projection("  o_proj", [](const MlaWeights& m) -> const Linear& { return m.o_proj; });
  }
  parts.push_back({"dense FFNs", [&] {
                     double bytes = 0;
                     for (int l = 0; l < L; ++l)
                       if (!w.layers[l].is_moe) {
                         ffn_forward(w.layers[l].mlp, x.data(), 1, y.data());
                         bytes += ffn_bytes(w.layers[l].mlp);
                       }
                     return bytes;
                   }});
  parts.push_back({"MoE layers", [&] {
                     double bytes = 0;
                     for (int l = 0; l < L; ++l) {
                       const Layer& layer = w.layers[l];
                       if (!layer.is_moe) continue;
                       Routing r;
                       moe_forward(c, layer.moe, x.data(), 1, y.data(), &r);
                       bytes += layer.moe.router.weight.bytes() + ffn_bytes(layer.moe.shared);
                       for (int e : r.experts) bytes += ffn_bytes(layer.moe.experts[e]);
                     }
                     return bytes;
                   }});

  constexpr int kRepeats = 8;  // runs of a part per round
  const BandwidthProbe bandwidth(size_t{1} << 30);
  for (int round = 0; round < rounds; ++round) {
    const double probe = bandwidth.measure(2) * 1e9;
    for (size_t k = 0; k < parts.size(); ++k) {
      Part& part = parts[(k + round) % parts.size()];
      part.run();  // warm: the first run after another part meets its weights cold as well
      const double start = now();
      double bytes = 0;
      // Inside the decode team, as the step runs its parallel pieces (ops/team.h).
      with_decode_team([&] {
        for (int i = 0; i < kRepeats; ++i) bytes += part.run();
      });
      part.seconds += now() - start;
      part.bytes += bytes;
      part.probe_bytes_per_s += probe / rounds;
    }
  }
  const Part& step = parts[0];
  const double step_ms = step.seconds * 1e3 / (rounds * kRepeats);
  std::printf("%s, %d threads, %d rounds; probe %.1f GB/s (mean)\n", argv[1], omp_get_max_threads(),
              rounds, step.probe_bytes_per_s / 1e9);
  std::printf("%-24s %9s %9s %9s %9s %12s\n", "part", "ms/step", "MB/step", "GB/s", "of probe",
              "of the step");
  for (const Part& part : parts) {
    const double ms = part.seconds * 1e3 / (rounds * kRepeats);
    const double rate = part.bytes / part.seconds;
    std::printf("%-24s %9.2f %9.1f %9.1f %8.0f%% %11.0f%%\n", part.name.c_str(), ms,
                part.bytes / (rounds * kRepeats) / 1e6, rate / 1e9,
                100 * rate / part.probe_bytes_per_s, 100 * ms / step_ms);
  }
}
