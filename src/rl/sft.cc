#include "rl/sft.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "base/error.h"
#include "base/jsonl.h"
#include "io/safetensors.h"
#include "rl/finetune.h"
#include "rl/responses.h"
#include "text/tokenizer.h"

namespace whale {

namespace {

// Centred, L2-normalized copy of a logits row (softmax ignores a shift, so centre first).
std::vector<double> unit_centred(const float* z, int V, double* norm) {
  double mean = 0;
  for (int v = 0; v < V; ++v) mean += z[v];
  mean /= V;
  std::vector<double> e(V);
  double sq = 0;
  for (int v = 0; v < V; ++v) sq += (e[v] = z[v] - mean) * e[v];
  *norm = std::sqrt(sq) + 1e-12;
  for (double& x : e) x /= *norm;
  return e;
}

// The Taylor-expanded RBF kernel of two unit vectors with inner product s, and d/ds.
void rbf_taylor(double s, double gamma, int order, double* k, double* dk) {
  double term = 1, sum = 1, dsum = 0;  // term = (2γs)^p / p!
  for (int p = 1; p <= order; ++p) {
    dsum += term * 2 * gamma;  // d/ds (2γs)^p/p! = 2γ·(2γs)^{p−1}/(p−1)!
    term *= 2 * gamma * s / p;
    sum += term;
  }
  *k = std::exp(-2 * gamma) * sum;
  *dk = std::exp(-2 * gamma) * dsum;
}

}  // namespace

SftStats sft_step(TrainModel& student, const std::vector<SftExample>& batch,
                  const DistillOptions& o, TrainModel* teacher, bool backward) {
  const bool distill = o.kd_weight > 0 || o.cckd_weight > 0;
  check(!distill || teacher, "distillation needs a teacher");
  check(!teacher || teacher->config().vocab_size == student.config().vocab_size,
        "teacher and student must share the vocabulary");
  std::vector<std::vector<int>> sequences;
  for (const SftExample& e : batch) {
    sequences.push_back(e.prompt);
    sequences.back().insert(sequences.back().end(), e.response.begin(), e.response.end());
  }
  PaddedBatch p = pad_sequences(sequences);
  forward_padded(student, p);
  if (distill) forward_padded(*teacher, p);
  const int V = student.config().vocab_size;

  // The response positions, in batch order.
  struct At {
    int b, pos;
  };
  std::vector<At> at;
  for (int b = 0; b < p.B; ++b)
    for (int pos = static_cast<int>(batch[b].prompt.size());
         pos < static_cast<int>(sequences[b].size()); ++pos)
      at.push_back({b, pos});
  SftStats stats;
  stats.tokens = static_cast<long>(at.size());
  check(stats.tokens > 0, "SFT: the batch has no response tokens");
  const double N = static_cast<double>(at.size());
  std::vector<float> dlogits(backward ? static_cast<size_t>(p.B) * p.T * V : 0, 0.0f);
  auto drow = [&](const At& a) {
    return dlogits.data() + (static_cast<size_t>(a.b) * p.T + a.pos - 1) * V;
  };

  const double w_ce = 1.0 - o.kd_weight, tau = o.temperature;
  std::vector<double> probs;
  for (const At& a : at) {
    const float* zs = prediction_row(student, p, a.b, a.pos);
    const double logp =
        token_log_prob(zs, V, sequences[a.b][a.pos], nullptr, backward ? &probs : nullptr);
    stats.ce -= logp / N;
    if (backward && w_ce > 0) {
      float* d = drow(a);
      for (int v = 0; v < V; ++v) d[v] += static_cast<float>(w_ce * probs[v] / N);
      d[sequences[a.b][a.pos]] -= static_cast<float>(w_ce / N);
    }
    if (o.kd_weight > 0) {
      // τ²·KL(p_T ‖ p_S) at temperature τ; its gradient in z_S is τ·(p_S − p_T).
      const float* zt = prediction_row(*teacher, p, a.b, a.pos);
      const double kl =
          kl_divergence_row(zt, zs, V, tau, o.kd_weight * tau / N, backward ? drow(a) : nullptr);
      stats.kd += tau * tau * kl / N;
    }
  }

  if (o.cckd_weight > 0) {
    // Up to M response tokens spread evenly over the batch.
    const int M = std::min<int>(o.cckd_tokens, static_cast<int>(at.size()));
    std::vector<At> chosen;
    for (int i = 0; i < M; ++i) chosen.push_back(at[static_cast<size_t>(i) * at.size() / M]);
    std::vector<std::vector<double>> es(M), et(M);
    std::vector<double> norms(M);
    double unused;
    for (int i = 0; i < M; ++i) {
      es[i] = unit_centred(prediction_row(student, p, chosen[i].b, chosen[i].pos), V, &norms[i]);
      et[i] = unit_centred(prediction_row(*teacher, p, chosen[i].b, chosen[i].pos), V, &unused);
    }
    std::vector<std::vector<double>> de(M, std::vector<double>(V, 0.0));
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < M; ++j) {
        double s_s = 0, s_t = 0;
        for (int v = 0; v < V; ++v) {
          s_s += es[i][v] * es[j][v];
          s_t += et[i][v] * et[j][v];
        }
        double ks, dks, kt, dkt;
        rbf_taylor(s_s, o.cckd_gamma, o.cckd_order, &ks, &dks);
        rbf_taylor(s_t, o.cckd_gamma, o.cckd_order, &kt, &dkt);
        const double diff = ks - kt;
        stats.cckd += diff * diff / (static_cast<double>(M) * M);
        if (!backward) continue;
        // s_ij depends on e_i and e_j: each gets g·(the other vector).
        const double g = o.cckd_weight * 2 * diff * dks / (static_cast<double>(M) * M);
        for (int v = 0; v < V; ++v) {
          de[i][v] += g * es[j][v];
          de[j][v] += g * es[i][v];
        }
      }
    if (backward)
      for (int i = 0; i < M; ++i) {
        // Through e = c/‖c‖ (c = z − mean z): dc = (de − e(e·de))/‖c‖, dz = dc − mean(dc).
        double dot = 0;
        for (int v = 0; v < V; ++v) dot += es[i][v] * de[i][v];
        std::vector<double> dc(V);
        double mean = 0;
        for (int v = 0; v < V; ++v) mean += (dc[v] = (de[i][v] - es[i][v] * dot) / norms[i]);
        mean /= V;
        float* d = drow(chosen[i]);
        for (int v = 0; v < V; ++v) d[v] += static_cast<float>(dc[v] - mean);
      }
  }
  stats.loss = w_ce * stats.ce + o.kd_weight * stats.kd + o.cckd_weight * stats.cckd;
  if (backward) student.backward(dlogits.data(), nullptr);
  return stats;
}

std::vector<SftExample> load_sft_file(const std::string& path, const text::Tokenizer& tokenizer) {
  check(tokenizer.eos_id() >= 0, path + ": the tokenizer has no EOS token");
  std::vector<SftExample> examples;
  read_jsonl(path, [&](const nlohmann::json& j, const std::string& where) {
    check(j.contains("prompt") && j["prompt"].is_string() && j.contains("response") &&
              j["response"].is_string(),
          where + ": expected {\"prompt\": \"...\", \"response\": \"...\"}");
    SftExample e;
    e.prompt = tokenizer.encode(j["prompt"].get<std::string>(), true);
    e.response = tokenizer.encode(j["response"].get<std::string>(), false);
    e.response.push_back(tokenizer.eos_id());
    examples.push_back(std::move(e));
  });
  return examples;
}

SftTrainSummary sft_train(const SftTrainConfig& cfg) {
  check(!cfg.model_dir.empty(), "sft: --model DIR is required");
  check(cfg.batch > 0, "sft: batch must be positive");
  std::vector<SftExample> examples = cfg.examples;
  if (!cfg.data_file.empty()) {
    auto tokenizer = text::Tokenizer::load(cfg.model_dir);
    examples = load_sft_file(cfg.data_file, *tokenizer);
  }
  check(!examples.empty(), "sft: no examples");
  const ModelConfig config = ModelConfig::load(cfg.model_dir);
  ParamStore store(config);
  store.load(Checkpoint(cfg.model_dir));
  TrainModel student(store);
  std::unique_ptr<ParamStore> teacher_store;
  std::unique_ptr<TrainModel> teacher;
  if (cfg.distill.kd_weight > 0 || cfg.distill.cckd_weight > 0) {
    check(!cfg.teacher_dir.empty(), "sft: KD and CCKD need --teacher DIR");
    teacher_store = std::make_unique<ParamStore>(ModelConfig::load(cfg.teacher_dir));
    teacher_store->load(Checkpoint(cfg.teacher_dir));
    teacher = std::make_unique<TrainModel>(*teacher_store);
  }
  // Shuffled epochs, as many as the steps need.
  std::mt19937_64 rng(cfg.seed);
  std::vector<size_t> order(examples.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  size_t next = 0;
  FinetuneLoop loop;
  loop.name = "sft";
  loop.out_dir = cfg.out_dir;
  loop.tokenizer_dir = cfg.model_dir;
  loop.columns = {"loss", "ce", "kd", "cckd"};
  loop.steps = cfg.steps;
  loop.time_budget_seconds = cfg.time_budget_seconds;
  loop.lr = cfg.lr;
  loop.warmup = cfg.warmup;
  loop.adamw = cfg.adamw;
  loop.progress = cfg.progress;
  FinetuneSummary f = run_finetune(store, loop, [&](long) {
    std::vector<SftExample> batch;
    for (int i = 0; i < cfg.batch; ++i) {
      if (next == order.size()) {
        std::shuffle(order.begin(), order.end(), rng);
        next = 0;
      }
      batch.push_back(examples[order[next++]]);
    }
    SftStats s = sft_step(student, batch, cfg.distill, teacher.get(), true);
    return std::vector<double>{s.loss, s.ce, s.kd, s.cckd};
  });
  return {f.steps, f.final_loss, f.seconds};
}

}  // namespace whale
