#include "rl/dpo.h"

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

// Chosen and rejected sequences interleaved: row 2i is pair i's chosen, 2i+1 its rejected.
PaddedBatch pad_pairs(const std::vector<PreferencePair>& batch) {
  std::vector<std::vector<int>> sequences;
  for (const PreferencePair& p : batch)
    for (const auto* response : {&p.chosen, &p.rejected}) {
      sequences.push_back(p.prompt);
      sequences.back().insert(sequences.back().end(), response->begin(), response->end());
    }
  return pad_sequences(sequences);
}

const std::vector<int>& response_of(const PreferencePair& p, int row) {
  return row % 2 == 0 ? p.chosen : p.rejected;
}

// Σ log π over the response of row `row`; with grad_scale, adds grad_scale·∂/∂logits into d.
double response_logprob(const TrainModel& model, const PaddedBatch& p, const PreferencePair& pair, int row,
                        float* dlogits, double grad_scale) {
  const int V = model.config().vocab_size;
  const int start = static_cast<int>(pair.prompt.size());
  const std::vector<int>& response = response_of(pair, row);
  std::vector<double> probs;
  double sum = 0;
  for (size_t t = 0; t < response.size(); ++t) {
    const int pos = start + static_cast<int>(t);
    sum += token_log_prob(prediction_row(model, p, row, pos), V, response[t], nullptr, dlogits ? &probs : nullptr);
    if (!dlogits) continue;
    // ∂log π(token)/∂z = onehot − p.
    float* d = dlogits + (static_cast<size_t>(row) * p.T + pos - 1) * V;
    for (int v = 0; v < V; ++v) d[v] -= static_cast<float>(grad_scale * probs[v]);
    d[response[t]] += static_cast<float>(grad_scale);
  }
  return sum;
}

}  // namespace

std::vector<double> pair_logprobs(TrainModel& model, const std::vector<PreferencePair>& batch) {
  PaddedBatch p = pad_pairs(batch);
  forward_padded(model, p);
  std::vector<double> out;
  for (int row = 0; row < p.B; ++row)
    out.push_back(response_logprob(model, p, batch[row / 2], row, nullptr, 0));
  return out;
}

DpoStats dpo_step(TrainModel& policy, const std::vector<PreferencePair>& batch,
                  const std::vector<double>& reference, float beta, bool backward) {
  check(reference.size() == 2 * batch.size(), "DPO: one reference log-prob per response");
  PaddedBatch p = pad_pairs(batch);
  forward_padded(policy, p);
  const int V = policy.config().vocab_size;
  std::vector<float> dlogits(backward ? static_cast<size_t>(p.B) * p.T * V : 0, 0.0f);
  DpoStats stats;
  const double N = static_cast<double>(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    const int w = static_cast<int>(2 * i), l = w + 1;
    const double lw = response_logprob(policy, p, batch[i], w, nullptr, 0);
    const double ll = response_logprob(policy, p, batch[i], l, nullptr, 0);
    const double margin = (lw - reference[w]) - (ll - reference[l]);
    const double z = beta * margin;
    // −log σ(z) = log(1 + e^{−z}), computed stably; d/dz = −σ(−z).
    stats.loss += (z > 0 ? std::log1p(std::exp(-z)) : -z + std::log1p(std::exp(z))) / N;
    stats.margin += margin / N;
    stats.accuracy += (z > 0) / N;
    if (!backward) continue;
    const double g = -beta / (1.0 + std::exp(z)) / N;  // ∂loss/∂log π(y_w); −g for y_l
    response_logprob(policy, p, batch[i], w, dlogits.data(), g);
    response_logprob(policy, p, batch[i], l, dlogits.data(), -g);
  }
  if (backward) policy.backward(dlogits.data(), nullptr);
  return stats;
}

std::vector<PreferencePair> load_preference_file(const std::string& path, const text::Tokenizer& tokenizer) {
  check(tokenizer.eos_id() >= 0, path + ": the tokenizer has no EOS token");
  std::vector<PreferencePair> pairs;
  read_jsonl(path, [&](const nlohmann::json& j, const std::string& where) {
    for (const char* key : {"prompt", "chosen", "rejected"})
      check(j.contains(key) && j[key].is_string(), where + ": \"" + key + "\" must be a string");
    PreferencePair p;
    p.prompt = tokenizer.encode(j["prompt"].get<std::string>(), true);
    p.chosen = tokenizer.encode(j["chosen"].get<std::string>(), false);
    p.rejected = tokenizer.encode(j["rejected"].get<std::string>(), false);
    p.chosen.push_back(tokenizer.eos_id());
    p.rejected.push_back(tokenizer.eos_id());
    pairs.push_back(std::move(p));
  });
  return pairs;
}

DpoTrainSummary dpo_train(const DpoTrainConfig& cfg) {
  check(!cfg.model_dir.empty(), "dpo: --model DIR is required");
  check(cfg.batch > 0 && cfg.beta > 0, "dpo: batch and beta must be positive");
  auto tokenizer = text::Tokenizer::load(cfg.model_dir);
  std::vector<PreferencePair> pairs = load_preference_file(cfg.data_file, *tokenizer);
  const ModelConfig config = ModelConfig::load(cfg.model_dir);
  ParamStore store(config), reference_store(config);
  {
    Checkpoint checkpoint(cfg.model_dir);
    store.load(checkpoint);
    reference_store.load(checkpoint);
  }
  TrainModel policy(store), reference(reference_store);
  std::mt19937_64 rng(cfg.seed);
  FinetuneLoop loop;
  loop.name = "dpo";
  loop.out_dir = cfg.out_dir;
  loop.tokenizer_dir = cfg.model_dir;
  loop.columns = {"loss", "margin", "pair_accuracy"};
  loop.steps = cfg.steps;
  loop.time_budget_seconds = cfg.time_budget_seconds;
  loop.lr = cfg.lr;
  loop.warmup = cfg.warmup;
  loop.progress = cfg.progress;
  FinetuneSummary f = run_finetune(store, loop, [&](long) {
    std::vector<PreferencePair> batch;
    for (int i = 0; i < cfg.batch; ++i) batch.push_back(pairs[rng() % pairs.size()]);
    const std::vector<double> ref = pair_logprobs(reference, batch);
    DpoStats s = dpo_step(policy, batch, ref, cfg.beta, true);
    return std::vector<double>{s.loss, s.margin, s.accuracy};
  });
  return {f.steps, f.final_loss, f.seconds};
}

}  // namespace whale
