#include "rl/r1_zero.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "base/error.h"
#include "base/file.h"
#include "rl/evaluate.h"
#include "rl/grpo_trainer.h"
#include "rl/sft.h"
#include "rl/tasks.h"
#include "text/tokenizer.h"
#include "train/data.h"
#include "train/trainer.h"

namespace whale {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::vector<std::string>& r1_zero_tasks() {
  static const std::vector<std::string> tasks = {"chain"};
  return tasks;
}

std::string r1_zero_corpus(const CorpusMix& mix, size_t bytes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::ostringstream out;
  if (mix.story_share > 0)
    out << synthetic_corpus(static_cast<size_t>(bytes * mix.story_share), seed + 1);
  // Drills: one-digit sums and products, kept to their last digit, a line each, in the chain's
  // layout ("7 *8 =6") — the facts the chain steps are made of.
  const size_t drill_end =
      static_cast<size_t>(out.tellp()) + static_cast<size_t>(bytes * mix.drill_share);
  while (static_cast<size_t>(out.tellp()) < drill_end) {
    for (int i = 0; i < 8; ++i) {
      const int x = static_cast<int>(rng() % 10), y = 2 + static_cast<int>(rng() % 8);
      const bool add = rng() % 2;
      out << x << (add ? " +" : " *") << y << " =" << (add ? x + y : x * y) % 10;
      out << (i == 7 ? "\n\n" : "\n");
    }
  }
  const std::vector<std::string>& tasks = mix.tasks.empty() ? r1_zero_tasks() : mix.tasks;
  // Worked examples, textbook style: the same steps as the reasoning documents, outside the Q/A
  // template. "\nSolution: " is as long as "\nA: <think>", so the steps sit where they do there.
  const size_t worked_end =
      static_cast<size_t>(out.tellp()) + static_cast<size_t>(bytes * mix.worked_share);
  while (static_cast<size_t>(out.tellp()) < worked_end) {
    Problem p = draw_problem(tasks[rng() % tasks.size()], Split::kTrain, rng);
    const std::string solution = solution_text(p, true);
    out << "Exercise: " << p.question
        << "\nSolution: " << solution.substr(0, solution.find("</think>"))
        << "\nAnswer: " << p.answer << "\n\n";
  }
  while (static_cast<size_t>(out.tellp()) < bytes) {
    Problem p = draw_problem(tasks[rng() % tasks.size()], Split::kTrain, rng);
    out << prompt_text(p) << solution_text(p, u(rng) < mix.reason_share) << "\n\n";
  }
  return out.str();
}

std::vector<SftExample> corpus_examples(const text::Tokenizer& tokenizer, const CorpusMix& mix,
                                        int count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  const std::vector<std::string>& tasks = mix.tasks.empty() ? r1_zero_tasks() : mix.tasks;
  std::vector<SftExample> examples;
  for (int i = 0; i < count; ++i) {
    Problem p = draw_problem(tasks[rng() % tasks.size()], Split::kTrain, rng);
    SftExample e;
    e.prompt = tokenizer.encode(prompt_text(p), true);
    e.response = tokenizer.encode(solution_text(p, u(rng) < mix.reason_share), false);
    e.response.push_back(tokenizer.eos_id());
    examples.push_back(std::move(e));
  }
  return examples;
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

long demo_steps(long steps, double budget) {
  return std::max(2L, std::lround(steps * budget));
}

DemoData write_demo_corpus(const std::string& dir, double bytes, uint64_t seed) {
  const std::string tok = dir + "/tokenizer";
  fs::create_directories(tok);
  write_file_atomic(tok + "/tokenizer.json", byte_level_tokenizer_json());
  write_file_atomic(tok + "/tokenizer_config.json", byte_level_tokenizer_config_json());
  auto tokenizer = text::Tokenizer::load(tok);
  PrepareOptions quiet;
  quiet.progress = false;
  DemoData data{dir + "/worked", dir + "/qa", tok};
  CorpusMix worked;
  worked.reason_share = 1.0;
  for (auto [part, mix, share] :
       {std::tuple{data.worked, worked, 0.75}, std::tuple{data.qa, CorpusMix{}, 0.25}}) {
    fs::create_directories(part);
    write_file_atomic(part + "/corpus.txt",
                      r1_zero_corpus(mix, static_cast<size_t>(bytes * share), seed));
    prepare_data(*tokenizer, tok, {part + "/corpus.txt"}, part, quiet);
    seed += 1000;
  }
  return data;
}

TrainerConfig demo_pretrain_config(const std::string& data, const std::string& out,
                                   const std::string& preset, long steps, uint64_t seed) {
  TrainerConfig pre;
  pre.data_dir = data;
  pre.out_dir = out;
  pre.preset = preset;
  // Small batches, many steps: the copy the worked steps need is learned in fewer tokens.
  pre.batch = 16;
  pre.seq_len = 96;
  pre.steps = steps;
  pre.lr = 2e-3f;
  pre.objective.mtp_weight = 0.1f;
  pre.warmup = 30;
  pre.eval_every = 100;
  pre.save_every = 1000000;
  pre.bias_gamma = 0.01f;
  pre.seed = seed;
  return pre;
}

DemoPretrain demo_pretrain(const DemoData& data, const std::string& out, const std::string& preset,
                           long steps, uint64_t seed, float mtp_weight) {
  DemoPretrain result;
  const long worked_steps = std::max(1L, steps * 5 / 6);
  TrainerConfig first =
      demo_pretrain_config(data.worked, out + "/worked", preset, worked_steps, seed);
  first.objective.mtp_weight = mtp_weight;
  result.worked = train(first);
  TrainerConfig second =
      demo_pretrain_config(data.qa, out + "/qa", "", std::max(1L, steps - worked_steps), seed + 1);
  second.model_dir = first.out_dir + "/model";
  second.objective.mtp_weight = mtp_weight;
  result.qa = train(second);
  result.model_dir = second.out_dir + "/model";
  result.qa_out_dir = second.out_dir;
  return result;
}

GrpoTrainConfig demo_grpo_config(const std::string& model_dir, const std::string& out, int steps,
                                 uint64_t seed) {
  GrpoTrainConfig rl;
  rl.model_dir = model_dir;
  rl.out_dir = out;
  rl.tasks = r1_zero_tasks();
  rl.steps = steps;
  rl.prompts_per_step = 8;
  rl.grpo.group_size = 8;
  rl.inner_steps = 2;
  rl.max_new_tokens = kDemoMaxTokens;
  rl.lr = 1e-4f;
  rl.warmup = 10;
  rl.grpo.kl_beta = 0.02f;
  rl.heldout_per_task = 100;
  rl.eval_every = 10;
  rl.seed = seed;
  return rl;
}

void run_r1_zero(const R1ZeroConfig& cfg) {
  check(cfg.budget > 0, "demo: --budget must be positive");
  const std::string out = cfg.out_dir;
  fs::create_directories(out);
  json summary;
  json stages;
  auto t0 = std::chrono::steady_clock::now();

  // 1. Data.
  std::printf("[1/5] corpus: stories + task documents (byte-level tokens)\n");
  std::fflush(stdout);
  auto t = std::chrono::steady_clock::now();
  const DemoData data =
      write_demo_corpus(out + "/data", 12'000'000 * std::min(4.0, cfg.budget), cfg.seed);
  auto tokenizer = text::Tokenizer::load(data.tokenizer);
  stages["data_seconds"] = seconds_since(t);

  // 2. Pre-training: worked solutions first, then the Q/A documents that mostly answer at once.
  std::printf("[2/5] pre-train a V3-architecture model (MLA + MoE + MTP)\n");
  std::fflush(stdout);
  t = std::chrono::steady_clock::now();
  const DemoPretrain pre = demo_pretrain(data, out + "/pretrain", "r1-zero-demo",
                                         demo_steps(2400, cfg.budget), cfg.seed, 0.1f);
  stages["pretrain_seconds"] = seconds_since(t);
  const long pretrain_steps = pre.worked.steps + pre.qa.steps;
  summary["pretrain"] = {{"steps", pretrain_steps},
                         {"worked_steps", pre.worked.steps},
                         {"qa_steps", pre.qa.steps},
                         {"val_loss", pre.qa.final_val_loss},
                         {"unigram_entropy", pre.qa.unigram_entropy},
                         {"tokens_per_second", pre.qa.tokens_per_second}};
  const std::string base_dir = pre.model_dir;

  // 3. The pre-trained model on the held-out problems.
  std::printf("[3/5] evaluate the pre-trained model on held-out problems\n");
  std::fflush(stdout);
  t = std::chrono::steady_clock::now();
  std::vector<Problem> heldout = heldout_set(r1_zero_tasks(), kDemoHeldoutPerTask, cfg.seed + 99);
  auto base = Model::load(base_dir);
  EvalResult before = evaluate(*base, *tokenizer, heldout, kDemoMaxTokens);
  stages["eval_seconds"] = seconds_since(t);
  std::printf("      held-out accuracy %.1f%%, mean response %.1f tokens\n", 100 * before.accuracy,
              before.mean_response_tokens);

  // 4. R1-Zero: GRPO straight from the pre-trained model.
  std::printf("[4/5] GRPO (R1-Zero: no SFT), rewards: correct answer + format\n");
  std::fflush(stdout);
  t = std::chrono::steady_clock::now();
  GrpoTrainConfig rl = demo_grpo_config(base_dir, out + "/grpo",
                                        static_cast<int>(demo_steps(60, cfg.budget)), cfg.seed);
  GrpoTrainSummary rl_summary = grpo_train(rl);
  const double rl_seconds = seconds_since(t);
  stages["grpo_seconds"] = rl_seconds;
  auto policy = Model::load(rl.out_dir + "/model");
  EvalResult after = evaluate(*policy, *tokenizer, heldout, kDemoMaxTokens);
  std::printf("      held-out accuracy %.1f%%, mean response %.1f tokens\n", 100 * after.accuracy,
              after.mean_response_tokens);

  // 5. The SFT-only baseline, same wall-clock as GRPO: fine-tuning on the corpus's own
  //    question/answer documents (the same mix the pre-training saw), loss on the answers.
  std::printf("[5/5] SFT-only baseline with the same compute (%.0f s)\n", rl_seconds);
  std::fflush(stdout);
  t = std::chrono::steady_clock::now();
  SftTrainConfig sft;
  sft.model_dir = base_dir;
  sft.out_dir = out + "/sft";
  sft.examples = corpus_examples(*tokenizer, CorpusMix{}, 20000, cfg.seed + 17);
  sft.batch = 32;
  sft.steps = 1000000;
  sft.time_budget_seconds = rl_seconds;
  sft.lr = 3e-4f;
  sft.seed = cfg.seed;
  sft_train(sft);
  stages["sft_seconds"] = seconds_since(t);
  auto sft_model = Model::load(sft.out_dir + "/model");
  EvalResult sft_eval = evaluate(*sft_model, *tokenizer, heldout, kDemoMaxTokens);
  std::printf("      held-out accuracy %.1f%%\n", 100 * sft_eval.accuracy);

  // Report.
  fs::remove_all(out + "/model");
  fs::copy(rl.out_dir + "/model", out + "/model", fs::copy_options::recursive);
  stages["total_seconds"] = seconds_since(t0);
  summary["accuracy_before"] = before.accuracy;
  summary["accuracy_after"] = after.accuracy;
  summary["sft_baseline_accuracy"] = sft_eval.accuracy;
  summary["response_length_before"] = before.mean_response_tokens;
  summary["response_length_after"] = after.mean_response_tokens;
  summary["heldout_size"] = heldout.size();
  summary["before"] = eval_json(before);
  summary["after"] = eval_json(after);
  summary["sft_baseline"] = eval_json(sft_eval);
  json task_table;
  for (auto& [task, acc] : before.task_accuracy)
    task_table[task] = {{"before", acc},
                        {"after", after.task_accuracy[task]},
                        {"sft_baseline", sft_eval.task_accuracy[task]}};
  summary["per_task"] = task_table;
  summary["grpo"] = {{"steps", rl_summary.steps},
                     {"rollout_tokens_per_second", rl_summary.rollout_tokens_per_second},
                     {"step_seconds", rl_summary.step_seconds},
                     {"rollout_seconds", rl_summary.rollout_seconds},
                     {"update_seconds", rl_summary.update_seconds}};
  summary["stage_seconds"] = stages;
  write_file_atomic(out + "/summary.json", summary.dump(2) + "\n");
  fs::copy_file(rl.out_dir + "/rl_reward.png", out + "/rl_reward.png",
                fs::copy_options::overwrite_existing);
  fs::copy_file(rl.out_dir + "/rl_length.png", out + "/rl_length.png",
                fs::copy_options::overwrite_existing);
  fs::copy_file(pre.qa_out_dir + "/loss.png", out + "/pretrain_loss.png",
                fs::copy_options::overwrite_existing);

  std::ostringstream html;
  html << "<!doctype html><meta charset=utf-8><title>whale: R1-Zero in miniature</title>"
       << "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}td,th{padding:4px "
          "10px;"
       << "border-bottom:1px solid #ddd}pre{background:#f6f6f6;padding:8px;white-space:pre-wrap}"
       << ".ok{color:#080}.bad{color:#b00}</style>"
       << "<h1>R1-Zero in miniature</h1><p>A " << pretrain_steps
       << "-step pre-trained DeepSeek-V3-architecture model (MLA, MoE, MTP), then GRPO with rule "
          "rewards only. Held-out problems: "
       << heldout.size() << " (never in the corpus or the RL prompts).</p>"
       << eval_table_html(
              {{"pre-trained", &before}, {"after GRPO", &after}, {"SFT-only baseline", &sft_eval}})
       << "<h2>Curves</h2><img src=rl_reward.png width=900><img src=rl_length.png width=900>"
       << "<img src=pretrain_loss.png width=900><h2>Held-out answers, before and after</h2>";
  for (size_t i = 0; i < heldout.size(); i += heldout.size() / 9) {
    html << "<pre>" << html_escape(prompt_text(heldout[i]))
         << "\n<b>before</b> <span class=" << (before.correct[i] ? "ok" : "bad") << ">"
         << html_escape(before.responses[i])
         << "</span>\n<b>after</b>  <span class=" << (after.correct[i] ? "ok" : "bad") << ">"
         << html_escape(after.responses[i]) << "</span></pre>";
  }
  html << "<h2>Rollouts during RL</h2>";
  for (auto& s : rl_summary.sample_traces) html << "<pre>" << html_escape(s) << "</pre>";
  write_file_atomic(out + "/report.html", html.str());
  std::printf(
      "\nheld-out accuracy: %.1f%% before, %.1f%% after GRPO (SFT-only baseline %.1f%%); "
      "response length %.1f → %.1f tokens\nreport: %s/report.html (summary.json, model/)\n",
      100 * before.accuracy, 100 * after.accuracy, 100 * sft_eval.accuracy,
      before.mean_response_tokens, after.mean_response_tokens, out.c_str());
}

}  // namespace whale
