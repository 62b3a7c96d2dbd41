// DeepSeekMoE (DeepSeek-V2 §2.2, DeepSeek-V3 §2.1.2, MISSION §1).
#include "model/moe.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numeric>

#include "base/aligned.h"
#include "ops/kernels.h"
#include "ops/linear.h"
#include "ops/nn.h"
#include "ops/team.h"
#include "ops/work_shares.h"

namespace whale {

namespace {

// silu(gate + gate_bias) · (up + up_bias) on elements [i0, i1) of one token's rows (ffn_forward's
// activation; elementwise, so any split of the range gives the same values).
void activate(const FeedForward& f, float* g, const float* u, int i0, int i1) {
  if (!f.gate_bias.empty())
    for (int i = i0; i < i1; ++i) g[i] += f.gate_bias[i];
  if (!f.up_bias.empty()) {
    std::vector<float> ub(u + i0, u + i1);
    for (int i = i0; i < i1; ++i) ub[i - i0] += f.up_bias[i];
    silu_mul(g + i0, ub.data(), i1 - i0);
  } else {
    silu_mul(g + i0, u + i0, i1 - i0);
  }
}

// Several FFNs, each on a few tokens (fewer than kGemmMinTokens): a decode step's shared and
// routed experts. Every output is bit-identical to ffn_forward's (the same row dots that
// linear_forward uses for so few tokens, the same activation and bias), but all the experts run
// in one parallel region with one barrier between gate/up and down, instead of a fork/join per
// matrix (three per expert): fewer synchronizations per layer, each a chance for a descheduled
// thread to stall the step.
struct FfnJob {
  const FeedForward* f;
  const float* x;  // [n, hidden]
  int n;
  float* out;             // [n, hidden]
  float* gate = nullptr;  // [n, inter]: gate, then the activation (in ffn_forward_few's scratch)
  float* up = nullptr;    // [n, inter]
  const Linear::RowsInput* in = nullptr;  // x prepared for gate/up, shared by jobs with the same x
  Linear::RowsInput down_in = {};         // the activation prepared for down
};

void ffn_forward_few(std::vector<FfnJob>& jobs) {
  // Chunks of about 128 KiB of rows, a power of two from 16 (v2-lite-8l: q8 64 rows, q4 128,
  // bf16 packed 32; 32 rows for every format before session 21: q8 and q4 decode 1.00–1.04×
  // faster, alternated in one process; linear_forward's 16-row chunks did not gain so), handed
  // out by WorkShares (ops/work_shares.h) in shares of equal bytes:
  // each thread streams its own run of consecutive rows and takes the back half of the other's
  // when done (q8 decode of v2-lite-8l 5–15% faster than one chunk at a time, as OpenMP's
  // guided schedule gave; 1.003–1.039× faster than guided, which cannot take back the half a
  // slow thread holds: alternated in one process, session 19). A job's gate chunks, then its up
  // chunks, so that a thread's run reads one matrix at a time — one stream — where chunks that
  // each read gate rows then up rows kept two going: decode 1.05× (bf16) and 1.05× (q8) faster
  // on v2-lite-8l (alternated in one process; bench/inference/README.md, session 13).
  const auto rows_per_chunk = [](const Linear& w) {
    const size_t rows = (size_t{128} << 10) / std::max<size_t>(w.row_bytes(), 1);
    return static_cast<int>(std::max<size_t>(16, std::bit_floor(rows)));
  };
  struct Chunk {
    int job, r0, r1;
    bool up;  // gate/up chunks: which of the two
  };
  // The jobs' gate and up rows in one scratch kept from call to call (not allocated and zeroed
  // for every layer), the chunk lists sized up front.
  thread_local std::vector<float> scratch;
  size_t floats = 0, gate_up_chunks = 0, down_chunks = 0;
  const auto chunks = [&](const Linear& w) {
    const int n = rows_per_chunk(w);
    return static_cast<size_t>((w.rows + n - 1) / n);
  };
  for (const FfnJob& job : jobs) {
    floats += 2 * static_cast<size_t>(job.n) * job.f->gate_proj.rows;
    gate_up_chunks += 2 * chunks(job.f->gate_proj);
    down_chunks += chunks(job.f->down_proj);
  }
  std::vector<Chunk> gate_up, down;
  gate_up.reserve(gate_up_chunks);
  down.reserve(down_chunks);
  bool parallel = false;  // threads where linear_forward would use them for any of the matrices
  float* next_rows = grown(scratch, floats);
  for (int j = 0; j < static_cast<int>(jobs.size()); ++j) {
    FfnJob& job = jobs[j];
    const FeedForward& f = *job.f;
    const int inter = f.gate_proj.rows, H = f.down_proj.rows;
    job.gate = next_rows;
    job.up = job.gate + static_cast<size_t>(job.n) * inter;
    next_rows = job.up + static_cast<size_t>(job.n) * inter;
    for (bool up : {false, true})
      for (int r0 = 0, n = rows_per_chunk(f.gate_proj); r0 < inter; r0 += n)
        gate_up.push_back({j, r0, std::min(r0 + n, inter), up});
    for (int r0 = 0, n = rows_per_chunk(f.down_proj); r0 < H; r0 += n)
      down.push_back({j, r0, std::min(r0 + n, H), false});
    for (const Linear* w : {&f.gate_proj, &f.down_proj})
      parallel |= static_cast<size_t>(w->rows) * w->cols * job.n > kLinearParallelWork;
  }
  // Each distinct input prepared once for the gate and up rows of every job that takes it: a
  // decode step's shared and routed experts all take the token (moe_forward passes it
  // uncopied), and preparing it once per expert cost ~40 µs a q8 step.
  std::vector<Linear::RowsInput> inputs;
  inputs.reserve(jobs.size());  // no reallocation: the jobs point into it
  for (size_t j = 0; j < jobs.size(); ++j) {
    FfnJob& job = jobs[j];
    for (size_t k = 0; k < j && !job.in; ++k)
      if (jobs[k].x == job.x && jobs[k].n == job.n &&
          jobs[k].f->gate_proj.same_rows_input(job.f->gate_proj))
        job.in = jobs[k].in;
    if (!job.in) job.in = &inputs.emplace_back(job.f->gate_proj.prepare_rows(job.x, job.n));
  }
  const auto cost = [&](const std::vector<Chunk>& list, bool is_down) {
    std::vector<double> c(list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      const FeedForward& f = *jobs[list[i].job].f;
      const Linear& w = is_down ? f.down_proj : f.gate_proj;
      c[i] = static_cast<double>(list[i].r1 - list[i].r0) * w.row_bytes();
    }
    return c;
  };
  const int team = region_threads(parallel);
  WorkShares gate_up_shares(cost(gate_up, false), team), down_shares(cost(down, true), team);
  const auto gate_up_chunk = [&](int i) {
    const Chunk& ch = gate_up[i];
    FfnJob& job = jobs[ch.job];
    const Linear& w = ch.up ? job.f->up_proj : job.f->gate_proj;
    w.rows_dot_range(ch.r0, ch.r1, *job.in, ch.up ? job.up : job.gate, w.rows);
  };
  const auto down_chunk = [&](int i) {
    const Chunk& ch = down[i];
    FfnJob& job = jobs[ch.job];
    const FeedForward& f = *job.f;
    const int H = f.down_proj.rows;
    f.down_proj.rows_dot_range(ch.r0, ch.r1, job.down_in, job.out, H);
    if (!f.down_bias.empty())
      for (int t = 0; t < job.n; ++t)
        for (int r = ch.r0; r < ch.r1; ++r)
          job.out[static_cast<size_t>(t) * H + r] += f.down_bias[r];
  };
  RegionItems activations(static_cast<int>(jobs.size()));
  parallel_region(parallel, [&](int me, int) {
    for (int i; (i = gate_up_shares.next(me)) >= 0;) gate_up_chunk(i);
    region_barrier();
    // The activations, prepared for the down rows once all of a job's gate/up rows are done.
    for (int j; (j = activations.next()) >= 0;) {
      FfnJob& job = jobs[j];
      const int inter = job.f->gate_proj.rows;
      for (int t = 0; t < job.n; ++t)
        activate(*job.f, job.gate + static_cast<size_t>(t) * inter,
                 job.up + static_cast<size_t>(t) * inter, 0, inter);
      job.down_in = job.f->down_proj.prepare_rows(job.gate, job.n);
    }
    region_barrier();
    for (int i; (i = down_shares.next(me)) >= 0;) down_chunk(i);
  });
}

}  // namespace

void ffn_forward(const FeedForward& f, const float* x, int T, float* out) {
  const int inter = f.gate_proj.rows, H = f.down_proj.rows;
  std::vector<float> gate(static_cast<size_t>(T) * inter), up(static_cast<size_t>(T) * inter);
  linear_forward(f.gate_proj, x, T, gate.data());
  linear_forward(f.up_proj, x, T, up.data());
  for (int t = 0; t < T; ++t) {
    float* g = gate.data() + static_cast<size_t>(t) * inter;
    const float* u = up.data() + static_cast<size_t>(t) * inter;
    if (!f.gate_bias.empty())
      for (int i = 0; i < inter; ++i) g[i] += f.gate_bias[i];
    if (!f.up_bias.empty()) {
      std::vector<float> ub(u, u + inter);
      for (int i = 0; i < inter; ++i) ub[i] += f.up_bias[i];
      silu_mul(g, ub.data(), inter);
    } else {
      silu_mul(g, u, inter);
    }
  }
  linear_forward(f.down_proj, gate.data(), T, out);
  if (!f.down_bias.empty())
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < H; ++i) out[static_cast<size_t>(t) * H + i] += f.down_bias[i];
}

std::vector<float> router_scores(const ModelConfig& c, const Router& router, const float* u,
                                 int T) {
  const int E = c.n_routed_experts;
  std::vector<float> scores(static_cast<size_t>(T) * E);
  linear_forward(router.weight, u, T, scores.data());
  // s_i = softmax (V2) or sigmoid (V3) of u·e_i, in f32.
  for (int t = 0; t < T; ++t) {
    float* s = scores.data() + static_cast<size_t>(t) * E;
    if (c.scoring_func == "softmax")
      softmax(s, E);
    else
      for (int e = 0; e < E; ++e) s[e] = 1.0f / (1.0f + std::exp(-s[e]));
  }
  return scores;
}

Routing choose_experts(const ModelConfig& c, const Router& router, const float* all_scores, int T) {
  const int E = c.n_routed_experts, K = c.num_experts_per_tok;
  const int groups = c.topk_method == "greedy" ? 1 : c.n_group;
  const int per_group = E / groups;
  const bool biased = !router.e_score_correction_bias.empty();
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  Routing r;
  r.experts.resize(static_cast<size_t>(T) * K);
  r.gates.resize(static_cast<size_t>(T) * K);
  std::vector<float> choice(E), group_score(groups);
  std::vector<int> order(std::max(E, groups));
  for (int t = 0; t < T; ++t) {
    const float* scores = all_scores + static_cast<size_t>(t) * E;
    // The bias (V3) only chooses: choice = s + b.
    for (int e = 0; e < E; ++e)
      choice[e] = scores[e] + (biased ? router.e_score_correction_bias[e] : 0.0f);
    if (groups > 1) {
      // Group score: its best expert (V2 group_limited_greedy) or the sum of its best two
      // biased scores (V3 noaux_tc); keep the topk_group best groups.
      for (int g = 0; g < groups; ++g) {
        float* first = choice.data() + g * per_group;
        if (c.topk_method == "noaux_tc") {
          float best = kNegInf, second = kNegInf;
          for (int i = 0; i < per_group; ++i) {
            if (first[i] > best) {
              second = best;
              best = first[i];
            } else if (first[i] > second) {
              second = first[i];
            }
          }
          group_score[g] = best + second;
        } else {
          group_score[g] = *std::max_element(first, first + per_group);
        }
      }
      std::iota(order.begin(), order.begin() + groups, 0);
      std::stable_sort(order.begin(), order.begin() + groups,
                       [&](int a, int b) { return group_score[a] > group_score[b]; });
      for (int i = c.topk_group; i < groups; ++i)
        std::fill_n(choice.data() + order[i] * per_group, per_group, kNegInf);
    }
    std::iota(order.begin(), order.begin() + E, 0);
    std::stable_sort(order.begin(), order.begin() + E,
                     [&](int a, int b) { return choice[a] > choice[b]; });
    // Gates are the unbiased scores, normalized when norm_topk_prob, times the scaling factor.
    float sum = 0;
    for (int k = 0; k < K; ++k) sum += scores[order[k]];
    for (int k = 0; k < K; ++k) {
      float g = scores[order[k]];
      if (c.norm_topk_prob) g /= (sum + 1e-20f);
      r.experts[static_cast<size_t>(t) * K + k] = order[k];
      r.gates[static_cast<size_t>(t) * K + k] = g * static_cast<float>(c.routed_scaling_factor);
    }
  }
  return r;
}

Routing route(const ModelConfig& c, const Router& router, const float* u, int T) {
  std::vector<float> scores = router_scores(c, router, u, T);
  return choose_experts(c, router, scores.data(), T);
}

void moe_forward(const ModelConfig& c, const Moe& moe, const float* u, int T, float* out,
                 Routing* routing_out) {
  const int H = c.hidden_size, K = c.num_experts_per_tok, E = c.n_routed_experts;
  Routing r = route(c, moe.router, u, T);
  // Group the tokens by expert so each expert's weights are read once per forward.
  std::vector<std::vector<int>> slots(E);  // slot = t·K + k
  for (int i = 0; i < T * K; ++i) slots[r.experts[i]].push_back(i);
  const auto gather = [&](int e, std::vector<float>& x) {
    x.resize(slots[e].size() * H);
    for (size_t i = 0; i < slots[e].size(); ++i)
      std::copy_n(u + static_cast<size_t>(slots[e][i] / K) * H, H, x.data() + i * H);
  };
  // out += Σ over expert e's tokens of gate · y (y: [tokens of e, H]).
  const auto combine = [&](int e, const float* y) {
    for (size_t i = 0; i < slots[e].size(); ++i)
      axpy(r.gates[slots[e][i]], y + i * H, out + static_cast<size_t>(slots[e][i] / K) * H, H);
  };
  if (!moe.has_shared) std::fill(out, out + static_cast<size_t>(T) * H, 0.0f);

  if (T < kGemmMinTokens) {
    // A decode step (or a few tokens): every expert in one parallel region. The experts' outputs
    // (and inputs gathered for experts with several tokens) in one scratch kept between layers:
    // fresh zeroed vectors per expert and layer met memory at every first write (their lines
    // evicted by the weights' stream).
    thread_local std::vector<float> scratch;
    const size_t rows_floats = static_cast<size_t>(T) * K * H;  // every (token, expert) row
    float* next_y = grown(scratch, 2 * rows_floats);
    float* next_x = next_y + rows_floats;
    std::vector<float*> y(E);
    std::vector<FfnJob> jobs;
    if (moe.has_shared) jobs.push_back({.f = &moe.shared, .x = u, .n = T, .out = out});
    for (int e = 0; e < E; ++e) {
      if (slots[e].empty()) continue;
      const size_t n = slots[e].size();
      // An expert with one token reads it in place (and shares its preparation with the rest).
      const float* xe = u + static_cast<size_t>(slots[e][0] / K) * H;
      if (n > 1) {
        for (size_t i = 0; i < n; ++i)
          std::copy_n(u + static_cast<size_t>(slots[e][i] / K) * H, H, next_x + i * H);
        xe = next_x;
        next_x += n * H;
      }
      y[e] = next_y;
      next_y += n * H;
      jobs.push_back({.f = &moe.experts[e], .x = xe, .n = static_cast<int>(n), .out = y[e]});
    }
    ffn_forward_few(jobs);
    for (int e = 0; e < E; ++e)
      if (!slots[e].empty()) combine(e, y[e]);
    if (routing_out) *routing_out = std::move(r);
    return;
  }

  if (moe.has_shared) ffn_forward(moe.shared, u, T, out);
  // Prefill: the routed experts spread over the threads, each expert's three products on one
  // thread (largest first, handed out dynamically): a prompt of 512 tokens gives each of 64
  // experts about 48, and splitting every one of their matrices over the threads instead costs
  // a fork/join per matrix with the gathers, activations and sums between them serial.
  // The experts go in waves of consecutive experts whose outputs fit in 64 MiB (all of them for
  // v2-lite-8l's 512 tokens; a long prompt of a V3-sized model would otherwise hold T·K·H floats
  // at once), each wave's sums added in expert order: they do not depend on the threads.
  constexpr size_t kWaveFloats = (size_t{64} << 20) / sizeof(float);
  std::vector<int> active;
  for (int e = 0; e < E; ++e)
    if (!slots[e].empty()) active.push_back(e);
  std::vector<std::vector<float>> y(E);
  for (size_t w0 = 0, w1 = 0; w0 < active.size(); w0 = w1) {
    size_t floats = 0;
    for (w1 = w0; w1 < active.size(); ++w1) {
      const size_t more = slots[active[w1]].size() * H;
      if (w1 > w0 && floats + more > kWaveFloats) break;
      floats += more;
    }
    std::vector<int> order(active.begin() + w0, active.begin() + w1);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return slots[a].size() > slots[b].size(); });
#pragma omp parallel
    {
      std::vector<float> x;
#pragma omp for schedule(dynamic)
      for (size_t i = 0; i < order.size(); ++i) {
        const int e = order[i];
        gather(e, x);
        y[e].resize(x.size());
        ffn_forward(moe.experts[e], x.data(), static_cast<int>(slots[e].size()), y[e].data());
      }
    }
    for (size_t i = w0; i < w1; ++i) {
      combine(active[i], y[active[i]].data());
      std::vector<float>().swap(y[active[i]]);
    }
  }
  if (routing_out) *routing_out = std::move(r);
}

}  // namespace whale
