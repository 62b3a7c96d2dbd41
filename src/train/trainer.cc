#include "train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "base/file.h"
#include "base/plot.h"
#include "base/progress.h"
#include "ops/gemm.h"
#include "text/tokenizer.h"
#include "train/data.h"

namespace whale {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

ModelConfig choose_model_config(const TrainerConfig& t, const TokenData& data) {
  ModelConfig c;
  int sources = !t.model_dir.empty() + !t.preset.empty() + !t.config_file.empty();
  check(sources == 1, "train: give exactly one of --model DIR, --preset NAME, --config FILE");
  if (!t.model_dir.empty()) {
    c = ModelConfig::load(t.model_dir);
  } else if (!t.preset.empty()) {
    c = preset_config(t.preset);
  } else {
    c = ModelConfig::from_json(json::parse(read_file(t.config_file)), t.config_file);
  }
  if (t.vocab_size > 0) c.vocab_size = t.vocab_size;
  if (t.model_dir.empty() && t.vocab_size == 0) c.vocab_size = data.vocab_size;
  if (data.bos_token_id >= 0) c.bos_token_id = data.bos_token_id;
  if (data.eos_token_id >= 0) c.eos_token_ids = {data.eos_token_id};
  check(c.vocab_size >= data.vocab_size,
        "train: the model's vocabulary (" + std::to_string(c.vocab_size) +
            ") is smaller than the data's (" + std::to_string(data.vocab_size) + ")");
  c.fp8 = false;
  c.validate("train");
  return c;
}

// Names of the routing-bias parameters, one per MoE layer (main layers, then the MTP layer).
std::vector<std::string> routing_bias_names(const ModelConfig& c) {
  std::vector<std::string> names;
  if (c.topk_method != "noaux_tc") return names;
  for (int l = 0; l < c.num_hidden_layers + (c.has_mtp() ? 1 : 0); ++l)
    if (c.is_moe_layer(l))
      names.push_back("model.layers." + std::to_string(l) + ".mlp.gate.e_score_correction_bias");
  return names;
}

std::string checkpoint_name(long step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%06ld", step);
  return buf;
}

std::string fmt(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

struct LogRow {
  long step;
  std::string line;
};

// Rows of an existing log up to and including `last_step` (later or broken rows are dropped).
std::vector<LogRow> read_log(const std::string& path, long last_step) {
  std::vector<LogRow> rows;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    char* end = nullptr;
    long step = std::strtol(line.c_str(), &end, 10);
    if (end == line.c_str() || *end != ',' || step > last_step) continue;
    if (std::count(line.begin(), line.end(), ',') < 10) continue;
    rows.push_back({step, line});
  }
  return rows;
}

const char* kLogHeader =
    "step,tokens,loss,ce_main,ce_mtp,bal,val_loss,lr,grad_norm,tokens_per_s,load_imbalance,"
    "mtp_agreement,val_mtp_agreement";

void draw_plots(const std::string& dir, const std::vector<LogRow>& rows) {
  Series train{"train loss", {}, {}, 0x1f77b4}, val{"validation loss", {}, {}, 0xd62728};
  Series imbalance{"max/mean expert load (worst layer)", {}, {}, 0x2ca02c};
  Series agreement{"train batch", {}, {}, 0x1f77b4}, val_agreement{"validation", {}, {}, 0xd62728};
  for (const LogRow& r : rows) {
    std::vector<std::string> f;  // (empty fields kept, the last one too)
    for (size_t start = 0;;) {
      const size_t comma = r.line.find(',', start);
      f.push_back(r.line.substr(start, comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    if (f.size() < 11) continue;
    double step = std::stod(f[0]);
    train.x.push_back(step);
    train.y.push_back(std::stod(f[3]));
    if (!f[6].empty()) {
      val.x.push_back(step);
      val.y.push_back(std::stod(f[6]));
    }
    if (!f[10].empty()) {
      imbalance.x.push_back(step);
      imbalance.y.push_back(std::stod(f[10]));
    }
    for (auto [column, series] : {std::pair{11, &agreement}, std::pair{12, &val_agreement}})
      if (f.size() > static_cast<size_t>(column) && !f[column].empty()) {
        series->x.push_back(step);
        series->y.push_back(100 * std::stod(f[column]));
      }
  }
  write_line_plot(dir + "/loss.png", {train, val},
                  {"Cross-entropy of the next token (nats)", "step", "loss", 900, 520, false});
  if (!imbalance.x.empty())
    write_line_plot(dir + "/experts.png", {imbalance},
                    {"Expert load balance", "step", "max/mean load", 900, 400, false});
  if (!agreement.x.empty())
    write_line_plot(dir + "/mtp.png", {agreement, val_agreement},
                    {"MTP draft agreement with the main model (greedy acceptance)", "step",
                     "% of positions", 900, 400, false});
}

}  // namespace

TrainSummary train(const TrainerConfig& t) {
  using clock = std::chrono::steady_clock;
  check(!t.data_dir.empty(), "train: --data DIR is required (make one with `whale data synth`)");
  check(t.batch > 0 && t.seq_len >= 3 && t.accumulation > 0 && t.steps > 0,
        "train: batch, accumulation and steps must be positive and seq-len at least 3");
  TokenData data = TokenData::load(t.data_dir);
  fs::create_directories(t.out_dir + "/checkpoints");
  const std::string latest_path = t.out_dir + "/checkpoints/latest";

  // The model and optimizer: fresh, or from the newest checkpoint when resuming.
  long start_step = 0;
  std::string resume_dir;
  if (t.resume && fs::exists(latest_path)) {
    std::string name = read_file(latest_path);
    while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
    resume_dir = t.out_dir + "/checkpoints/" + name;
    check(fs::exists(resume_dir + "/trainer_state.json"),
          latest_path + " names a missing checkpoint");
  }
  const std::string train_what = t.objective.mtp_only ? "mtp" : "all";
  const std::string mtp_target = mtp_target_name(t.objective.mtp_target);
  if (!resume_dir.empty() && fs::exists(t.out_dir + "/run.json")) {
    // What learns, and towards what, must not change halfway through a run.
    const json before = json::parse(read_file(t.out_dir + "/run.json"));
    const std::string was_train = before.value("train", "all");
    const std::string was_target = before.value("mtp_target", "data");
    check(was_train == train_what && was_target == mtp_target,
          "train: " + t.out_dir + " was trained with --train " + was_train + " --mtp-target " +
              was_target + "; resume it with the same options");
  }
  ModelConfig config =
      resume_dir.empty() ? choose_model_config(t, data) : ModelConfig::load(resume_dir);
  ParamStore store(config);
  if (!resume_dir.empty()) {
    store.load(Checkpoint(resume_dir));
  } else if (!t.model_dir.empty()) {
    store.load(Checkpoint(t.model_dir));
  } else {
    store.init_random(t.seed, t.init_std);
  }
  // --train mtp: the MTP module alone learns (model.layers.L.*, its own embedding and head).
  const std::string mtp_prefix = "model.layers." + std::to_string(config.num_hidden_layers) + ".";
  if (t.objective.mtp_only) {
    check(config.has_mtp(),
          "train: --train mtp needs a model with an MTP module (num_nextn_predict_layers = 1)");
    check(!t.model_dir.empty() || !resume_dir.empty(),
          "train: --train mtp tunes the MTP module of a trained model: pass --model DIR");
    check(t.objective.mtp_weight > 0, "train: --train mtp needs --mtp-weight > 0");
    store.freeze_all_but(mtp_prefix);
  }
  AdamW optimizer(store, t.adamw);
  if (!resume_dir.empty()) {
    optimizer.load(resume_dir + "/optimizer.safetensors", store);
    json state = json::parse(read_file(resume_dir + "/trainer_state.json"));
    start_step = state.at("step").get<long>();
  }
  TrainModel model(store);
  const std::vector<std::string> bias_names = routing_bias_names(config);

  json settings = {{"data", fs::absolute(t.data_dir).string()},
                   {"batch", t.batch},
                   {"seq_len", t.seq_len},
                   {"accumulation", t.accumulation},
                   {"steps", t.steps},
                   {"lr", t.lr},
                   {"warmup", t.warmup},
                   {"seed", t.seed},
                   {"mtp_weight", t.objective.mtp_weight},
                   {"mtp_target", mtp_target},
                   {"train", train_what},
                   {"balance_alpha", t.objective.balance_alpha},
                   {"bias_gamma", t.bias_gamma},
                   {"weight_decay", t.adamw.weight_decay},
                   {"clip_norm", t.adamw.clip_norm},
                   {"model", config.to_json()}};
  write_file_atomic(t.out_dir + "/run.json", settings.dump(2) + "\n");

  std::vector<LogRow> log_rows = read_log(t.out_dir + "/log.csv", t.resume ? start_step - 1 : -1);
  std::vector<std::string> expert_rows;
  if (t.resume) {
    std::ifstream in(t.out_dir + "/experts.csv");
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line))
      if (std::strtol(line.c_str(), nullptr, 10) < start_step) expert_rows.push_back(line);
  }
  auto write_logs = [&] {
    std::string csv = std::string(kLogHeader) + "\n";
    for (auto& r : log_rows) csv += r.line + "\n";
    write_file_atomic(t.out_dir + "/log.csv", csv);
    std::string experts = "step,layer,max_over_mean,loads\n";
    for (auto& r : expert_rows) experts += r + "\n";
    write_file_atomic(t.out_dir + "/experts.csv", experts);
    draw_plots(t.out_dir, log_rows);
  };

  // The data's tokenizer travels with every saved model, so it can be chatted with directly.
  std::string tokenizer_dir;
  try {
    tokenizer_dir = json::parse(read_file(t.data_dir + "/data.json")).value("tokenizer", "");
  } catch (const std::exception&) {
  }
  auto copy_tokenizer = [&](const std::string& dir) {
    if (!tokenizer_dir.empty()) text::copy_tokenizer_files(tokenizer_dir, dir);
  };

  auto save_checkpoint = [&](long step) {
    const std::string name = checkpoint_name(step);
    const std::string final_dir = t.out_dir + "/checkpoints/" + name;
    const std::string tmp_dir =
        t.out_dir + "/checkpoints/.tmp-" + name + "-" + std::to_string(getpid());
    fs::remove_all(tmp_dir);
    store.save(tmp_dir, DType::F32);
    optimizer.save(tmp_dir + "/optimizer.safetensors", store);
    write_file_atomic(tmp_dir + "/trainer_state.json", json{{"step", step}}.dump() + "\n");
    copy_tokenizer(tmp_dir);
    fs::remove_all(final_dir);
    fs::rename(tmp_dir, final_dir);
    write_file_atomic(latest_path, name + "\n");
    // Keep the two newest checkpoints.
    std::vector<std::string> all;
    for (auto& e : fs::directory_iterator(t.out_dir + "/checkpoints"))
      if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0)
        all.push_back(e.path().filename().string());
    std::sort(all.begin(), all.end());
    for (size_t i = 0; i + 2 < all.size(); ++i)
      fs::remove_all(t.out_dir + "/checkpoints/" + all[i]);
  };

  const int B = t.batch, T = t.seq_len;
  std::vector<int> tokens(static_cast<size_t>(B) * T);
  // Validation: the main cross-entropy and, when the MTP module is trained, its agreement.
  double val_agreement = NAN;
  auto validation_loss = [&]() -> double {
    if (data.val.size() < static_cast<size_t>(T)) return NAN;
    double total = 0, agreement = 0;
    const ObjectiveOptions& eval = t.objective;
    for (int i = 0; i < t.eval_batches; ++i) {
      sample_batch(data.val, B, T, t.seed ^ 0x5eed5eedull, i, tokens.data());
      LossParts p = language_model_loss(model, tokens.data(), B, T, eval, false);
      total += p.ce_main;
      agreement += p.mtp_agreement;
    }
    val_agreement = agreement / t.eval_batches;
    return total / t.eval_batches;
  };

  TrainSummary summary;
  summary.unigram_entropy = unigram_entropy(data.train);
  Progress progress(t.progress ? "train" : "", static_cast<size_t>(t.steps), " steps");
  progress.advance(static_cast<size_t>(start_step));
  auto started = clock::now();
  long tokens_done = 0;
  reset_gemm_stats();
  long total_steps = t.steps;
  for (long step = start_step; step < total_steps; ++step) {
    auto step_start = clock::now();
    // A time budget fixes the run's length from the speed so far (re-estimated every step, so
    // a slow start or a busy machine does not distort it); the schedule follows that length.
    if (t.time_budget_seconds > 0 && step >= start_step + 3) {
      const double elapsed = std::chrono::duration<double>(step_start - started).count();
      const double per_step = elapsed / static_cast<double>(step - start_step);
      total_steps = std::clamp<long>(
          step + static_cast<long>((t.time_budget_seconds - elapsed) / per_step), step, t.steps);
      progress.set_total(static_cast<size_t>(total_steps));
      if (total_steps <= step) break;
    }
    const float lr = learning_rate(t.schedule, step, total_steps, t.warmup, t.lr);
    store.zero_grads();
    LossParts mean;
    std::vector<std::vector<int>> loads;
    for (int micro = 0; micro < t.accumulation; ++micro) {
      sample_batch(data.train, B, T, t.seed, static_cast<uint64_t>(step) * t.accumulation + micro,
                   tokens.data());
      LossParts p = language_model_loss(model, tokens.data(), B, T, t.objective, true);
      mean.loss += p.loss / t.accumulation;
      mean.ce_main += p.ce_main / t.accumulation;
      mean.ce_mtp += p.ce_mtp / t.accumulation;
      mean.bal += p.bal / t.accumulation;
      mean.mtp_agreement = (micro ? mean.mtp_agreement : 0) + p.mtp_agreement / t.accumulation;
      auto l = model.expert_loads();
      if (model.has_mtp_output()) l.push_back(model.mtp_expert_load());
      if (loads.empty())
        loads = l;
      else
        for (size_t i = 0; i < l.size(); ++i)
          for (size_t e = 0; e < l[i].size(); ++e) loads[i][e] += l[i][e];
    }
    if (t.accumulation > 1) {
      float* g = store.grads();
      for (size_t i = 0; i < store.size(); ++i) g[i] /= t.accumulation;
    }
    const float grad_norm = optimizer.step(store, lr);
    // Auxiliary-loss-free balancing (V3): b_i += γ·sign(mean load − load_i), after the step.
    const size_t main_moe_layers = model.expert_loads().size();
    for (size_t i = 0; i < bias_names.size() && i < loads.size() && t.bias_gamma > 0; ++i) {
      if (t.objective.mtp_only && bias_names[i].rfind(mtp_prefix, 0) != 0) continue;  // frozen
      const Param* p = store.param(bias_names[i]);
      double mean_load = 0;
      for (int v : loads[i]) mean_load += v;
      mean_load /= loads[i].size();
      float* b = store.values() + p->offset;
      for (size_t e = 0; e < loads[i].size(); ++e)
        b[e] += t.bias_gamma * (loads[i][e] < mean_load   ? 1.0f
                                : loads[i][e] > mean_load ? -1.0f
                                                          : 0.0f);
    }
    double worst = 0;
    for (size_t i = 0; i < loads.size() && i < main_moe_layers; ++i) {
      double total = 0, max = 0;
      std::string list;
      for (int v : loads[i]) {
        total += v;
        max = std::max(max, static_cast<double>(v));
        list += (list.empty() ? "" : " ") + std::to_string(v);
      }
      double ratio = total > 0 ? max / (total / loads[i].size()) : 0;
      worst = std::max(worst, ratio);
      expert_rows.push_back(std::to_string(step) + "," + std::to_string(i) + "," + fmt(ratio) +
                            "," + list);
    }
    tokens_done += static_cast<long>(B) * T * t.accumulation;
    const double seconds = std::chrono::duration<double>(clock::now() - step_start).count();
    const bool eval_now = (step + 1) % t.eval_every == 0 || step + 1 == total_steps;
    const double val = eval_now ? validation_loss() : NAN;
    log_rows.push_back(
        {step, std::to_string(step) + "," +
                   std::to_string((step + 1) * static_cast<long>(B) * T * t.accumulation) + "," +
                   fmt(mean.loss) + "," + fmt(mean.ce_main) + "," + fmt(mean.ce_mtp) + "," +
                   fmt(mean.bal) + "," + (eval_now ? fmt(val) : "") + "," + fmt(lr) + "," +
                   fmt(grad_norm) + "," + fmt(std::round(B * T * t.accumulation / seconds)) + "," +
                   (main_moe_layers ? fmt(worst) : "") + "," +
                   (std::isnan(mean.mtp_agreement) ? "" : fmt(mean.mtp_agreement)) + "," +
                   (eval_now && !std::isnan(val_agreement) ? fmt(val_agreement) : "")});
    summary.final_loss = mean.ce_main;
    summary.final_imbalance = worst;
    if (eval_now) summary.final_val_loss = val;
    if (eval_now) summary.final_val_mtp_agreement = val_agreement;
    char status[200];
    std::string mtp_status;
    if (!std::isnan(mean.mtp_agreement))
      mtp_status = ", MTP agrees " + fmt(std::round(mean.mtp_agreement * 1000) / 10) + "%";
    std::snprintf(status, sizeof status, "%s tok/s, loss %.3f%s%s",
                  si(B * T * t.accumulation / seconds).c_str(), mean.ce_main, mtp_status.c_str(),
                  eval_now ? (" val " + fmt(std::round(val * 1000) / 1000)).c_str() : "");
    progress.set_status(status);
    progress.advance(1);
    if ((step + 1) % t.save_every == 0 || step + 1 == total_steps) {
      save_checkpoint(step + 1);
      write_logs();
    }
  }
  progress.finish();
  if (total_steps < t.steps && t.time_budget_seconds > 0)
    summary.final_val_loss = validation_loss();
  write_logs();
  store.save(t.out_dir + "/model", DType::F32);
  copy_tokenizer(t.out_dir + "/model");
  double elapsed = std::chrono::duration<double>(clock::now() - started).count();
  summary.steps = total_steps;
  summary.tokens_per_second = elapsed > 0 ? tokens_done / elapsed : 0;
  GemmStats g = gemm_stats();
  summary.seconds = elapsed;
  summary.gemm_seconds = g.seconds;
  summary.gemm_flops = g.flops;
  return summary;
}

}  // namespace whale
