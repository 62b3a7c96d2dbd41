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
// routed experts, or a dense FFN. Every output is bit-identical to ffn_forward's on many tokens'
// path for those rows (the same row dots that linear_forward uses for so few tokens, the same
// activation and bias), but all the jobs run in one parallel region instead of a fork/join per
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

// After the jobs, out[token] += weight · (job's output row), in this order for each token: the
// routed experts' weighted sum, done by the region's threads on their own columns.
struct WeightedRow {
  int job, row, token;
  float weight;
};

// Chunks of about 128 KiB of rows, a power of two from 16 (v2-lite-8l: q8 64 rows, q4 128, bf16
// packed 32; 32 rows for every format before session 21: q8 and q4 decode 1.00–1.04× faster,
// alternated in one process; linear_forward's 16-row chunks did not gain so), handed out by
// WorkShares (ops/work_shares.h) in shares of equal bytes: each thread streams its own run of
// consecutive rows and takes the back half of the other's when done (q8 decode of v2-lite-8l
// 5–15% faster than one chunk at a time, as OpenMP's guided schedule gave; 1.003–1.039× faster
// than guided, which cannot take back the half a slow thread holds: alternated in one process,
// session 19). A job's gate chunks, then its up chunks, so that a thread's run reads one matrix
// at a time — one stream — where chunks that each read gate rows then up rows kept two going:
// decode 1.05× (bf16) and 1.05× (q8) faster on v2-lite-8l (alternated in one process;
// bench/inference/README.md, session 13).
//
// No barrier between the gate/up rows and the down rows: the thread that finishes a job's last
// gate/up chunk computes its activation and prepares it for the down rows, and a thread that
// reaches a job's down chunks first waits only for that job. A thread whose gate/up share is done
// goes on to down rows while the other still streams gate/up rows. (The barrier there held the
// first thread 10–23 µs a layer and the activations after it took 11 µs on each; in the step,
// alternated in one process, the two forms decode level — 1.003 and 0.999×, medians of 12 and 8
// rounds — but this one spends less of the step's serial time: session 24.)
void ffn_forward_few(std::vector<FfnJob>& jobs, const std::vector<WeightedRow>& weighted_rows,
                     float* out, int H) {
  const auto rows_per_chunk = [](const Linear& w) {
    const size_t rows = (size_t{128} << 10) / std::max<size_t>(w.row_bytes(), 1);
    return static_cast<int>(std::max<size_t>(16, std::bit_floor(rows)));
  };
  // Job j's gate rows are run 2j of gate_up, its up rows run 2j + 1, its down rows run j of down.
  const int J = static_cast<int>(jobs.size());
  RowChunks gate_up, down;
  // The jobs' gate and up rows in one scratch kept from call to call (not allocated and zeroed
  // for every layer).
  thread_local std::vector<float> scratch;
  size_t floats = 0;
  for (const FfnJob& job : jobs) floats += 2 * static_cast<size_t>(job.n) * job.f->gate_proj.rows;
  float* next_rows = grown(scratch, floats);
  bool parallel = false;  // threads where linear_forward would use them for any of the matrices
  for (int j = 0; j < J; ++j) {
    FfnJob& job = jobs[j];
    const FeedForward& f = *job.f;
    const int inter = f.gate_proj.rows;
    job.gate = next_rows;
    job.up = job.gate + static_cast<size_t>(job.n) * inter;
    next_rows = job.up + static_cast<size_t>(job.n) * inter;
    gate_up.add(f.gate_proj, rows_per_chunk(f.gate_proj));
    gate_up.add(f.up_proj, rows_per_chunk(f.up_proj));
    down.add(f.down_proj, rows_per_chunk(f.down_proj));
    for (const Linear* w : {&f.gate_proj, &f.down_proj})
      parallel |= static_cast<size_t>(w->rows) * w->cols * job.n > kLinearParallelWork;
  }
  // Each distinct input prepared once for the gate and up rows of every job that takes it: a
  // decode step's shared and routed experts all take the token (moe_forward passes it
  // uncopied), and preparing it once per expert cost ~40 µs a q8 step.
  std::vector<Linear::RowsInput> inputs;
  inputs.reserve(jobs.size());  // no reallocation: the jobs point into it
  for (int j = 0; j < J; ++j) {
    FfnJob& job = jobs[j];
    for (int k = 0; k < j && !job.in; ++k)
      if (jobs[k].x == job.x && jobs[k].n == job.n &&
          jobs[k].f->gate_proj.same_rows_input(job.f->gate_proj))
        job.in = jobs[k].in;
    if (!job.in) job.in = &inputs.emplace_back(job.f->gate_proj.prepare_rows(job.x, job.n));
  }
  const int team = region_threads(parallel);
  WorkShares gate_up_shares = gate_up.shares(team), down_shares = down.shares(team);
  // Per job: gate/up chunks not yet done, and whether its down rows may start. A cache line a
  // job: the threads mostly finish chunks of different jobs, and counters sharing a line would
  // move it between the cores at every chunk.
  struct alignas(64) JobState {
    std::atomic<int> gate_up_left{0};
    std::atomic<bool> ready{false};
  };
  std::vector<JobState> state(J);
  for (int j = 0; j < J; ++j)
    state[j].gate_up_left.store(gate_up.chunks(2 * j) + gate_up.chunks(2 * j + 1),
                                std::memory_order_relaxed);
  // The activation, prepared for the down rows (once all of a job's gate/up rows are done).
  const auto activate_job = [&](FfnJob& job) {
    const int inter = job.f->gate_proj.rows;
    for (int t = 0; t < job.n; ++t)
      activate(*job.f, job.gate + static_cast<size_t>(t) * inter,
               job.up + static_cast<size_t>(t) * inter, 0, inter);
    job.down_in = job.f->down_proj.prepare_rows(job.gate, job.n);
  };
  const auto gate_up_chunk = [&](int item) {
    const RowChunks::Chunk c = gate_up.chunk(item);
    FfnJob& job = jobs[c.run / 2];
    const bool up = c.run % 2 == 1;
    gate_up.matrix(c.run).rows_dot_range(c.r0, c.r1, *job.in, up ? job.up : job.gate,
                                         job.f->gate_proj.rows);
    if (state[c.run / 2].gate_up_left.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      activate_job(job);
      state[c.run / 2].ready.store(true, std::memory_order_release);
    }
  };
  const auto down_chunk = [&](int item) {
    const RowChunks::Chunk c = down.chunk(item);
    FfnJob& job = jobs[c.run];
    spin_until([&] { return state[c.run].ready.load(std::memory_order_acquire); });
    const FeedForward& f = *job.f;
    const int rows_out = f.down_proj.rows;
    f.down_proj.rows_dot_range(c.r0, c.r1, job.down_in, job.out, rows_out);
    if (!f.down_bias.empty())
      for (int t = 0; t < job.n; ++t)
        for (int r = c.r0; r < c.r1; ++r)
          job.out[static_cast<size_t>(t) * rows_out + r] += f.down_bias[r];
  };
  parallel_region(parallel, [&](int me, int threads) {
    // Every gate/up chunk is handed out before any thread takes a down chunk, so a job a down
    // chunk waits for is being finished by a running thread.
    for (int i; (i = gate_up_shares.next(me)) >= 0;) gate_up_chunk(i);
    for (int i; (i = down_shares.next(me)) >= 0;) down_chunk(i);
    if (weighted_rows.empty()) return;
    region_barrier();
    // Each thread its own columns, in whole vectors (64 floats), so that every element is summed
    // as one axpy over the whole row would sum it, in the rows' order.
    const int blocks = (H + 63) / 64;
    const int h0 = std::min(H, blocks * me / threads * 64),
              h1 = std::min(H, blocks * (me + 1) / threads * 64);
    if (h1 <= h0) return;
    for (const WeightedRow& w : weighted_rows)
      axpy(w.weight, jobs[w.job].out + static_cast<size_t>(w.row) * H + h0,
           out + static_cast<size_t>(w.token) * H + h0, h1 - h0);
  });
}

}  // namespace

void ffn_forward(const FeedForward& f, const float* x, int T, float* out) {
  const int inter = f.gate_proj.rows, H = f.down_proj.rows;
  if (T < kGemmMinTokens) {  // the same rows in one parallel region
    std::vector<FfnJob> job{{.f = &f, .x = x, .n = T, .out = out}};
    ffn_forward_few(job, {}, out, H);
    return;
  }
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
  // The first `count` of [0, n) by value, highest first, ties to the lower index: the order a
  // stable sort by value would give, without sorting the rest (a decode step routes 8 layers).
  const auto best = [](const float* value, int n, int count, int* order) {
    std::iota(order, order + n, 0);
    std::partial_sort(order, order + count, order + n, [&](int a, int b) {
      return value[a] > value[b] || (value[a] == value[b] && a < b);
    });
  };
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
          float top = kNegInf, second = kNegInf;
          for (int i = 0; i < per_group; ++i) {
            if (first[i] > top) {
              second = top;
              top = first[i];
            } else if (first[i] > second) {
              second = first[i];
            }
          }
          group_score[g] = top + second;
        } else {
          group_score[g] = *std::max_element(first, first + per_group);
        }
      }
      best(group_score.data(), groups, std::min(c.topk_group, groups), order.data());
      for (int i = c.topk_group; i < groups; ++i)
        std::fill_n(choice.data() + order[i] * per_group, per_group, kNegInf);
    }
    best(choice.data(), E, K, order.data());
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
  if (!moe.has_shared) std::fill(out, out + static_cast<size_t>(T) * H, 0.0f);

  if (T < kGemmMinTokens) {
    // A decode step (or a few tokens): every expert in one parallel region, the experts in
    // ascending order, each with its (token, k) slots in order. The experts' outputs (and inputs
    // gathered for experts with several tokens) in one scratch kept between layers: fresh zeroed
    // vectors per expert and layer met memory at every first write (their lines evicted by the
    // weights' stream).
    std::vector<int> slots(static_cast<size_t>(T) * K);  // slot = t·K + k, by expert
    std::iota(slots.begin(), slots.end(), 0);
    std::sort(slots.begin(), slots.end(), [&](int a, int b) {
      return r.experts[a] != r.experts[b] ? r.experts[a] < r.experts[b] : a < b;
    });
    thread_local std::vector<float> scratch;
    const size_t rows_floats = slots.size() * H;  // every (token, expert) row
    float* next_y = grown(scratch, 2 * rows_floats);
    float* next_x = next_y + rows_floats;
    std::vector<FfnJob> jobs;
    std::vector<WeightedRow> weighted_rows;
    jobs.reserve(slots.size() + 1);
    weighted_rows.reserve(slots.size());
    if (moe.has_shared) jobs.push_back({.f = &moe.shared, .x = u, .n = T, .out = out});
    for (size_t i = 0, end; i < slots.size(); i = end) {
      const int e = r.experts[slots[i]];
      for (end = i + 1; end < slots.size() && r.experts[slots[end]] == e;) ++end;
      const int n = static_cast<int>(end - i), job = static_cast<int>(jobs.size());
      // An expert with one token reads it in place (and shares its preparation with the rest).
      const float* xe = u + static_cast<size_t>(slots[i] / K) * H;
      if (n > 1) {
        for (int k = 0; k < n; ++k)
          std::copy_n(u + static_cast<size_t>(slots[i + k] / K) * H, H, next_x + k * H);
        xe = next_x;
        next_x += static_cast<size_t>(n) * H;
      }
      jobs.push_back({.f = &moe.experts[e], .x = xe, .n = n, .out = next_y});
      next_y += static_cast<size_t>(n) * H;
      for (int k = 0; k < n; ++k)
        weighted_rows.push_back({job, k, slots[i + k] / K, r.gates[slots[i + k]]});
    }
    ffn_forward_few(jobs, weighted_rows, out, H);
    if (routing_out) *routing_out = std::move(r);
    return;
  }

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
