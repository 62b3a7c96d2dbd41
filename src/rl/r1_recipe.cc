#include "rl/r1_recipe.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "base/file.h"
#include "rl/evaluate.h"
#include "rl/grpo_trainer.h"
#include "rl/r1_zero.h"
#include "rl/rejection.h"
#include "rl/sft.h"
#include "text/tokenizer.h"
#include "train/trainer.h"

namespace whale {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Correct samples of `model_dir` on fresh training problems, as SFT examples. When none is
// correct (a tiny budget), the worked solutions stand in, and the summary says so.
std::vector<SftExample> rejection_samples(const std::string& model_dir,
                                          const text::Tokenizer& tokenizer, int prompts,
                                          uint64_t seed, json* stats) {
  auto model = Model::load(model_dir);
  SampleConfig sc;
  sc.tasks = r1_zero_tasks();
  sc.prompts = prompts;
  sc.samples = 4;
  sc.max_new_tokens = kDemoMaxTokens;
  sc.seed = seed;
  SampleResult r = sample_answers(*model, tokenizer, sc);
  std::vector<SftExample> examples;
  for (const Sampled& s : keep_correct(r, 1)) {
    SftExample e;
    e.prompt = tokenizer.encode(s.prompt, true);
    e.response = tokenizer.encode(s.response, false);
    e.response.push_back(tokenizer.eos_id());
    examples.push_back(std::move(e));
  }
  const bool none = examples.empty();
  if (none) {
    std::printf("      no sampled answer was correct; using worked solutions instead\n");
    CorpusMix worked;
    worked.reason_share = 1.0;
    examples = corpus_examples(tokenizer, worked, prompts, seed);
  }
  *stats = {{"fallback_to_worked_solutions", none},
            {"prompts", prompts},
            {"samples_per_prompt", sc.samples},
            {"kept", none ? 0 : examples.size()},
            {"seconds", r.seconds},
            {"tokens_per_second", r.tokens_per_second}};
  return examples;
}

}  // namespace

void run_r1(const R1Config& cfg) {
  check(cfg.budget > 0, "demo: --budget must be positive");
  const std::string out = cfg.out_dir;
  fs::create_directories(out);
  const double b = cfg.budget;
  const int sample_prompts = std::max(32, static_cast<int>(1024 * std::min(1.0, b)));
  json summary, stages;
  const auto t0 = std::chrono::steady_clock::now();
  auto stage = [&](int n, const char* what) {
    std::printf("[%d/8] %s\n", n, what);
    std::fflush(stdout);
    return std::chrono::steady_clock::now();
  };

  auto t = stage(1, "corpus: task documents (byte-level tokens)");
  const DemoData data = write_demo_corpus(out + "/data", 12'000'000 * std::min(4.0, b), cfg.seed);
  auto tokenizer = text::Tokenizer::load(data.tokenizer);
  std::vector<Problem> heldout = heldout_set(r1_zero_tasks(), kDemoHeldoutPerTask, cfg.seed + 99);
  auto eval_dir = [&](const std::string& dir) {
    auto model = Model::load(dir);
    return evaluate(*model, *tokenizer, heldout, kDemoMaxTokens);
  };
  stages["data_seconds"] = seconds_since(t);

  t = stage(2, "pre-train the teacher (V3 architecture: MLA + MoE + MTP)");
  const std::string base_dir =
      demo_pretrain(data, out + "/pretrain", "r1-zero-demo", demo_steps(2400, b), cfg.seed, 0.1f)
          .model_dir;
  EvalResult base = eval_dir(base_dir);
  stages["pretrain_seconds"] = seconds_since(t);

  t = stage(3, "cold start: SFT on worked solutions");
  SftTrainConfig cold;
  cold.model_dir = base_dir;
  cold.out_dir = out + "/cold_start";
  CorpusMix worked;
  worked.reason_share = 1.0;
  cold.examples = corpus_examples(*tokenizer, worked, 3000, cfg.seed + 5);
  cold.batch = 32;
  cold.steps = demo_steps(100, b);
  cold.lr = 3e-4f;
  cold.seed = cfg.seed;
  sft_train(cold);
  EvalResult cold_eval = eval_dir(cold.out_dir + "/model");
  stages["cold_start_seconds"] = seconds_since(t);

  t = stage(4, "reasoning RL: GRPO from the cold start");
  GrpoTrainConfig rl = demo_grpo_config(cold.out_dir + "/model", out + "/grpo",
                                        static_cast<int>(demo_steps(40, b)), cfg.seed);
  GrpoTrainSummary rl_summary = grpo_train(rl);
  EvalResult rl_eval = eval_dir(rl.out_dir + "/model");
  stages["grpo_seconds"] = seconds_since(t);

  t = stage(5, "rejection sampling: keep the RL model's correct answers");
  json rs_stats;
  std::vector<SftExample> samples =
      rejection_samples(rl.out_dir + "/model", *tokenizer, sample_prompts, cfg.seed + 7, &rs_stats);
  stages["rejection_sampling_seconds"] = seconds_since(t);

  t = stage(6, "SFT of the pre-trained model on the rejection samples: the teacher");
  SftTrainConfig second = cold;
  second.out_dir = out + "/teacher";
  second.examples = samples;
  second.steps = demo_steps(100, b);
  sft_train(second);
  const std::string teacher_dir = second.out_dir + "/model";
  EvalResult teacher_eval = eval_dir(teacher_dir);
  stages["second_sft_seconds"] = seconds_since(t);

  t = stage(7, "pre-train the student (dense Qwen2 architecture)");
  const std::string student_base = demo_pretrain(data, out + "/student_pretrain", "r1-student",
                                                 demo_steps(1200, b), cfg.seed + 1, 0.0f)
                                       .model_dir;
  EvalResult student_base_eval = eval_dir(student_base);
  stages["student_pretrain_seconds"] = seconds_since(t);

  t = stage(8, "distill the teacher into the student, and the student alone");
  json td_stats;
  std::vector<SftExample> teacher_samples =
      rejection_samples(teacher_dir, *tokenizer, sample_prompts, cfg.seed + 11, &td_stats);
  SftTrainConfig distill;
  distill.model_dir = student_base;
  distill.out_dir = out + "/student_distilled";
  distill.examples = teacher_samples;
  distill.teacher_dir = teacher_dir;
  distill.distill.kd_weight = 0.5f;
  distill.distill.temperature = 1.0f;
  distill.distill.cckd_weight = 1.0f;
  distill.batch = 32;
  distill.steps = demo_steps(100, b);
  distill.lr = 5e-4f;
  distill.seed = cfg.seed;
  sft_train(distill);
  EvalResult distilled = eval_dir(distill.out_dir + "/model");
  SftTrainConfig alone = distill;
  alone.out_dir = out + "/student_alone";
  alone.examples = corpus_examples(*tokenizer, CorpusMix{}, 20000, cfg.seed + 13);
  alone.teacher_dir.clear();
  alone.distill = DistillOptions{};
  sft_train(alone);
  EvalResult alone_eval = eval_dir(alone.out_dir + "/model");
  stages["distillation_seconds"] = seconds_since(t);

  // Report.
  for (const char* name : {"teacher", "student"}) fs::remove_all(out + "/" + name + "_model");
  fs::copy(teacher_dir, out + "/teacher_model", fs::copy_options::recursive);
  fs::copy(distill.out_dir + "/model", out + "/student_model", fs::copy_options::recursive);
  stages["total_seconds"] = seconds_since(t0);
  summary["heldout_size"] = heldout.size();
  summary["pretrained"] = eval_json(base);
  summary["cold_start"] = eval_json(cold_eval);
  summary["grpo"] = eval_json(rl_eval);
  summary["teacher"] = eval_json(teacher_eval);
  summary["student_pretrained"] = eval_json(student_base_eval);
  summary["student_distilled"] = eval_json(distilled);
  summary["student_without_teacher"] = eval_json(alone_eval);
  summary["rejection_sampling"] = rs_stats;
  summary["teacher_samples"] = td_stats;
  summary["grpo_run"] = {{"steps", rl_summary.steps},
                         {"rollout_tokens_per_second", rl_summary.rollout_tokens_per_second},
                         {"step_seconds", rl_summary.step_seconds}};
  summary["stage_seconds"] = stages;
  write_file_atomic(out + "/summary.json", summary.dump(2) + "\n");
  fs::copy_file(rl.out_dir + "/rl_reward.png", out + "/rl_reward.png",
                fs::copy_options::overwrite_existing);
  fs::copy_file(rl.out_dir + "/rl_length.png", out + "/rl_length.png",
                fs::copy_options::overwrite_existing);

  std::ostringstream html;
  html << "<!doctype html><meta charset=utf-8><title>whale: the R1 recipe in miniature</title>"
       << "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:4px "
          "10px;"
       << "border-bottom:1px solid "
          "#ddd}pre{background:#f6f6f6;padding:8px;white-space:pre-wrap}</style>"
       << "<h1>The R1 recipe in miniature</h1><p>Held-out problems: " << heldout.size()
       << ". Teacher: DeepSeek-V3 architecture (MLA, MoE, MTP); student: dense Qwen2 "
          "architecture.</p>"
       << "<h2>Teacher stages</h2>"
       << eval_table_html({{"pre-trained", &base},
                           {"cold-start SFT", &cold_eval},
                           {"GRPO", &rl_eval},
                           {"SFT on rejection samples", &teacher_eval}})
       << "<h2>Student</h2>"
       << eval_table_html({{"pre-trained", &student_base_eval},
                           {"distilled (SFT + KD + CCKD)", &distilled},
                           {"without the teacher", &alone_eval}})
       << "<h2>GRPO curves</h2><img src=rl_reward.png width=900><img src=rl_length.png width=900>"
       << "<h2>Held-out answers</h2>";
  for (size_t i = 0; i < heldout.size(); i += heldout.size() / 6)
    html << "<pre>" << html_escape(prompt_text(heldout[i])) << "\n<b>teacher</b> "
         << html_escape(teacher_eval.responses[i]) << "\n<b>distilled student</b> "
         << html_escape(distilled.responses[i]) << "\n<b>student without teacher</b> "
         << html_escape(alone_eval.responses[i]) << "</pre>";
  write_file_atomic(out + "/report.html", html.str());
  std::printf(
      "\nheld-out accuracy: pre-trained %.1f%% → cold start %.1f%% → GRPO %.1f%% → teacher %.1f%%\n"
      "student: distilled %.1f%% vs without the teacher %.1f%% (pre-trained %.1f%%)\n"
      "report: %s/report.html (summary.json, teacher_model/, student_model/)\n",
      100 * base.accuracy, 100 * cold_eval.accuracy, 100 * rl_eval.accuracy,
      100 * teacher_eval.accuracy, 100 * distilled.accuracy, 100 * alone_eval.accuracy,
      100 * student_base_eval.accuracy, out.c_str());
}

}  // namespace whale
