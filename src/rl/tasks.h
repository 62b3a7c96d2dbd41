// Tasks with checkable answers for reasoning RL (MISSION §3): multi-digit arithmetic,
// Countdown (reach a target from given numbers with + − × ÷), and word problems from templates;
// plus users' own tasks from JSONL. Train and held-out splits never overlap: a problem's split
// is a function of its text.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace whale {

struct Problem {
  std::string task;          // "arithmetic", "countdown", "word", or a JSONL file's "task"
  std::string question;      // what the model is asked, e.g. "23+45"
  std::string answer;        // the checkable final answer ("68"); for countdown, the target
  std::string checker;       // "exact" (string match), "number" (numeric equality), "countdown"
  std::vector<int> numbers;  // the operands (countdown: the numbers to use, in solution order)
  std::string ops;           // countdown: the reference solution's two operators
};

enum class Split { kTrain, kHeldOut };
// 1 in 8 problems (by a hash of the question) is held out.
Split split_of(const Problem& p);

// Draws a problem of the named built-in task ("arithmetic", "countdown", "word") from split.
Problem draw_problem(const std::string& task, Split split, std::mt19937_64& rng);
const std::vector<std::string>& builtin_tasks();

// A fixed held-out set: `per_task` problems of each task, the same for the same seed.
std::vector<Problem> heldout_set(const std::vector<std::string>& tasks, int per_task,
                                 uint64_t seed);

// Users' tasks: one {"prompt": ..., "answer": ..., "checker": "exact"|"number"|"countdown",
// "task": optional name} per line. Errors name the file and line.
std::vector<Problem> load_task_file(const std::string& path);

// The R1-Zero-style prompt: the question, then the opening of the reasoning.
std::string prompt_text(const Problem& p);
// A reference solution in the trained format, with its reasoning (for corpora and SFT data).
// `reason` false gives the bare answer (an empty <think></think>).
std::string solution_text(const Problem& p, bool reason);

}  // namespace whale
