#include "rl/finetune.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "base/error.h"
#include "base/file.h"
#include "base/plot.h"
#include "base/progress.h"
#include "text/tokenizer.h"

namespace whale {

FinetuneSummary run_finetune(ParamStore& store, const FinetuneLoop& loop,
                             const std::function<std::vector<double>(long)>& step) {
  using clock = std::chrono::steady_clock;
  check(loop.steps > 0, loop.name + ": steps must be positive");
  std::filesystem::create_directories(loop.out_dir);
  AdamW optimizer(store, loop.adamw);
  std::string log = "step";
  for (const std::string& c : loop.columns) log += "," + c;
  log += ",lr,grad_norm\n";
  Series loss{loop.columns.empty() ? "loss" : loop.columns[0], {}, {}, 0x1f77b4};
  Progress progress(loop.progress ? loop.name : "", static_cast<size_t>(loop.steps), " steps");
  if (loop.time_budget_seconds > 0) progress.set_time_budget(loop.time_budget_seconds);
  FinetuneSummary summary;
  const auto start = clock::now();
  for (long i = 0; i < loop.steps; ++i) {
    if (loop.time_budget_seconds > 0 &&
        std::chrono::duration<double>(clock::now() - start).count() > loop.time_budget_seconds)
      break;
    store.zero_grads();
    const std::vector<double> values = step(i);
    const float lr =
        loop.lr * std::min(1.0f, static_cast<float>(i + 1) / std::max<long>(1, loop.warmup));
    const float norm = optimizer.step(store, lr);
    char cell[40];
    log += std::to_string(i);
    for (double v : values) {
      std::snprintf(cell, sizeof cell, ",%.6g", v);
      log += cell;
    }
    std::snprintf(cell, sizeof cell, ",%.6g,%.6g\n", lr, norm);
    log += cell;
    const double l = values.empty() ? 0 : values[0];
    loss.x.push_back(i);
    loss.y.push_back(l);
    std::snprintf(cell, sizeof cell, "loss %.3f", l);
    progress.set_status(cell);
    progress.advance(1);
    summary.steps = i + 1;
    summary.final_loss = l;
  }
  progress.finish();
  summary.seconds = std::chrono::duration<double>(clock::now() - start).count();
  write_file_atomic(loop.out_dir + "/" + loop.name + "_log.csv", log);
  write_line_plot(loop.out_dir + "/" + loop.name + "_loss.png", {loss},
                  {loop.name + ": training loss", "step", "", 900, 400, false});
  store.save(loop.out_dir + "/model", DType::F32);
  text::copy_tokenizer_files(loop.tokenizer_dir, loop.out_dir + "/model");
  return summary;
}

}  // namespace whale
