#include "rl/tasks.h"

#include <cstdlib>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/jsonl.h"

namespace whale {

namespace {

const char* kNames[] = {"Ada", "Ben", "Cleo", "Dev",  "Ema",  "Finn", "Gus",  "Hana",
                        "Ivo", "Jun", "Kai",  "Lena", "Milo", "Nia",  "Omar", "Pia"};
const char* kItems[] = {"apples", "books",   "coins",   "shells",
                        "stamps", "marbles", "pencils", "cards"};

int uniform(std::mt19937_64& rng, int lo, int hi) {
  return lo + static_cast<int>(rng() % static_cast<uint64_t>(hi - lo + 1));
}

Problem arithmetic(std::mt19937_64& rng) {
  Problem p;
  p.task = "arithmetic";
  p.checker = "number";
  int a = uniform(rng, 10, 99), b = uniform(rng, 10, 99);
  if (rng() % 2) {
    p.question = std::to_string(a) + "+" + std::to_string(b);
    p.answer = std::to_string(a + b);
  } else {
    if (a < b) std::swap(a, b);
    p.question = std::to_string(a) + "-" + std::to_string(b);
    p.answer = std::to_string(a - b);
  }
  p.numbers = {a, b};
  return p;
}

// Two-digit operands, so the story's numbers go through the same column arithmetic.
Problem word(std::mt19937_64& rng) {
  Problem p;
  p.task = "word";
  p.checker = "number";
  std::string who = kNames[rng() % 16], other = kNames[rng() % 16];
  while (other == who) other = kNames[rng() % 16];
  std::string item = kItems[rng() % 8];
  int a = uniform(rng, 10, 99), b = uniform(rng, 10, 99);
  if (rng() % 2) {
    p.question = who + " has " + std::to_string(a) + " " + item + " and gets " + std::to_string(b) +
                 " more from " + other + ". How many now?";
    p.answer = std::to_string(a + b);
    p.numbers = {a, b, 1};
  } else {
    if (a < b) std::swap(a, b);
    p.question = who + " has " + std::to_string(a) + " " + item + " and gives " +
                 std::to_string(b) + " to " + other + ". How many now?";
    p.answer = std::to_string(a - b);
    p.numbers = {a, b, 0};
  }
  return p;
}

int apply(int x, char op, int y) {
  switch (op) {
    case '+':
      return x + y;
    case '-':
      return x - y;
    default:
      return x * y;
  }
}

// The last digit of ((a·b)+c)·d, one digit at a time from 0: "last digit: 0 +7 =? *8 =? +6 =? *3
// =?" (0+7 → 7, 7·8 → 6, 6+6 → 2, 2·3 → 6; answer 6). In one go it is a serial composition of
// lookups, which a shallow model does not learn from a few minutes of data; step by step each is
// one fact — the gap reasoning closes. The worked steps have the question's own layout
// (" *8 =6" under " *8 =?"), so every operand a step needs sits one fixed distance behind it: a
// copy a small model learns early, unlike finding "the k-th operand" by counting. The operators
// alternate (+ × + ×): with random ones, the demo's model learned to copy the digits (99%) but not
// the operators (50%); starting from 0 makes the first number an operand like the others.
Problem chain(std::mt19937_64& rng) {
  Problem p;
  p.task = "chain";
  p.checker = "number";
  p.question = "last digit: 0";
  int digit = 0;
  for (int i = 0; i < 4; ++i) {
    const int x = uniform(rng, 2, 9);
    const char op = i % 2 ? '*' : '+';
    digit = apply(digit, op, x) % 10;
    p.numbers.push_back(x);
    p.ops.push_back(op);
    p.question += std::string(" ") + op + std::to_string(x) + " =?";
  }
  p.answer = std::to_string(digit);
  return p;
}

// Countdown with two numbers: one operation reaches the target. Three numbers ("countdown3")
// need two operations.
Problem countdown(std::mt19937_64& rng) {
  Problem p;
  p.task = "countdown";
  p.checker = "countdown";
  const char ops[] = {'+', '-', '*'};
  for (;;) {
    int a = uniform(rng, 2, 30), b = uniform(rng, 2, 9);
    if (a < b) std::swap(a, b);
    char op = ops[rng() % 3];
    int target = apply(a, op, b);
    if (target < 1) continue;
    p.numbers = {a, b};
    // Larger first: the order of the search below, and no hint of the operation.
    p.question =
        "Use " + std::to_string(a) + " " + std::to_string(b) + " to make " + std::to_string(target);
    p.answer = std::to_string(target);
    return p;
  }
}

Problem countdown3(std::mt19937_64& rng) {
  Problem p;
  p.task = "countdown3";
  p.checker = "countdown";
  const char ops[] = {'+', '-', '*'};
  for (;;) {
    int a = uniform(rng, 1, 12), b = uniform(rng, 1, 12), c = uniform(rng, 1, 12);
    char o1 = ops[rng() % 3], o2 = ops[rng() % 3];
    int ab = apply(a, o1, b);
    int target = apply(ab, o2, c);
    if (ab < 0 || target < 1 || target > 150) continue;
    p.numbers = {a, b, c};
    // The numbers are shown sorted, so the order does not give the solution away.
    std::vector<int> shown = p.numbers;
    std::sort(shown.begin(), shown.end());
    p.question = "Use " + std::to_string(shown[0]) + " " + std::to_string(shown[1]) + " " +
                 std::to_string(shown[2]) + " to make " + std::to_string(target);
    p.answer = std::to_string(target);
    p.ops = {o1, o2};  // with numbers (a, b, c) in order: the reference solution
    return p;
  }
}

}  // namespace

const std::vector<std::string>& builtin_tasks() {
  static const std::vector<std::string> tasks = {"arithmetic", "word", "countdown", "countdown3",
                                                 "chain"};
  return tasks;
}

Split split_of(const Problem& p) {
  return std::hash<std::string>{}(p.task + "|" + p.question) % 8 == 0 ? Split::kHeldOut
                                                                      : Split::kTrain;
}

Problem draw_problem(const std::string& task, Split split, std::mt19937_64& rng) {
  for (;;) {
    Problem p;
    if (task == "arithmetic")
      p = arithmetic(rng);
    else if (task == "word")
      p = word(rng);
    else if (task == "countdown")
      p = countdown(rng);
    else if (task == "countdown3")
      p = countdown3(rng);
    else if (task == "chain")
      p = chain(rng);
    else
      throw Error("unknown task '" + task +
                  "' (built in: arithmetic, word, countdown, countdown3, chain)");
    if (split_of(p) == split) return p;
  }
}

std::vector<Problem> heldout_set(const std::vector<std::string>& tasks, int per_task,
                                 uint64_t seed) {
  std::vector<Problem> set;
  std::mt19937_64 rng(seed);
  for (const std::string& task : tasks) {
    std::vector<std::string> seen;
    for (long tries = 0; static_cast<int>(seen.size()) < per_task; ++tries) {
      check(tries < 200000, "task '" + task + "' has fewer than " + std::to_string(per_task) +
                                " distinct held-out problems");
      Problem p = draw_problem(task, Split::kHeldOut, rng);
      if (std::find(seen.begin(), seen.end(), p.question) != seen.end()) continue;
      seen.push_back(p.question);
      set.push_back(p);
    }
  }
  return set;
}

std::vector<Problem> load_task_file(const std::string& path) {
  std::vector<Problem> problems;
  read_jsonl(path, [&](const nlohmann::json& j, const std::string& where) {
    check(j.contains("prompt") && j["prompt"].is_string() && j.contains("answer") &&
              (j["answer"].is_string() || j["answer"].is_number()),
          where + ": expected {\"prompt\": \"...\", \"answer\": \"...\", \"checker\": \"exact\"}");
    for (const char* key : {"checker", "task"})
      check(!j.contains(key) || j[key].is_string(), where + ": \"" + key + "\" must be a string");
    Problem p;
    p.question = j["prompt"].get<std::string>();
    p.answer = j["answer"].is_string() ? j["answer"].get<std::string>() : j["answer"].dump();
    p.checker = j.value("checker", "exact");
    p.task = j.value("task", "custom");
    check(p.checker == "exact" || p.checker == "number" || p.checker == "countdown",
          where + ": checker must be exact, number or countdown");
    if (p.checker == "countdown") {
      check(j.contains("numbers") && j["numbers"].is_array(),
            where + ": countdown needs \"numbers\"");
      for (auto& v : j["numbers"]) {
        check(v.is_number_integer() && std::abs(v.get<long>()) < 1000000,
              where + ": \"numbers\" must be integers");
        p.numbers.push_back(v.get<int>());
      }
    }
    problems.push_back(p);
  });
  return problems;
}

std::string prompt_text(const Problem& p) {
  return "Q: " + p.question + "\nA: <think>";
}

namespace {

// Column addition and subtraction, one digit at a time (units first, then tens).
std::string column_reasoning(int a, int b, bool add) {
  std::string s;
  int a0 = a % 10, a1 = a / 10, b0 = b % 10, b1 = b / 10;
  if (add) {
    int units = a0 + b0, carry = units / 10;
    s = std::to_string(a0) + "+" + std::to_string(b0) + "=" + std::to_string(units) + " ";
    s += std::to_string(a1) + "+" + std::to_string(b1) + (carry ? "+1" : "") + "=" +
         std::to_string(a1 + b1 + carry);
  } else {
    bool borrow = a0 < b0;
    s = (borrow ? "1" : "") + std::to_string(a0) + "-" + std::to_string(b0) + "=" +
        std::to_string(a0 + (borrow ? 10 : 0) - b0) + " ";
    s += std::to_string(a1) + "-" + std::to_string(b1) + (borrow ? "-1" : "") + "=" +
         std::to_string(a1 - b1 - (borrow ? 1 : 0));
  }
  return s;
}

}  // namespace

std::string solution_text(const Problem& p, bool reason) {
  std::string think, answer = p.answer;
  if (p.task == "arithmetic" || p.task == "word") {
    // Restate the sum first: the columns then read their digits at fixed distances behind.
    bool add =
        p.task == "arithmetic" ? p.question.find('+') != std::string::npos : p.numbers[2] == 1;
    think = std::to_string(p.numbers[0]) + (add ? "+" : "-") + std::to_string(p.numbers[1]) + " " +
            column_reasoning(p.numbers[0], p.numbers[1], add);
  } else if (p.task == "chain") {
    // The question with each "?" filled in: one fact per step, on the previous step's digit.
    int digit = 0;
    think = "0";
    for (size_t i = 0; i < p.ops.size(); ++i) {
      digit = apply(digit, p.ops[i], p.numbers[i]) % 10;
      think +=
          std::string(" ") + p.ops[i] + std::to_string(p.numbers[i]) + " =" + std::to_string(digit);
    }
  } else if (p.task == "countdown") {
    // A search in a fixed order (+, *, -), each try checked against the target.
    int a = p.numbers[0], b = p.numbers[1];
    for (char op : {'+', '*', '-'}) {
      std::string expr = std::to_string(a) + op + std::to_string(b);
      bool hit = std::to_string(apply(a, op, b)) == p.answer;
      think += expr + "=" + std::to_string(apply(a, op, b)) + (hit ? " yes" : " no ");
      if (hit) {
        answer = expr;
        break;
      }
    }
  } else if (p.task == "countdown3") {
    int a = p.numbers[0], b = p.numbers[1], c = p.numbers[2];
    char o1 = p.ops[0], o2 = p.ops[1];
    int ab = apply(a, o1, b);
    think = std::to_string(a) + o1 + std::to_string(b) + "=" + std::to_string(ab) + " " +
            std::to_string(ab) + o2 + std::to_string(c) + "=" + p.answer;
    bool paren = (o2 == '*') && o1 != '*';
    answer = std::string(paren ? "(" : "") + std::to_string(a) + o1 + std::to_string(b) +
             (paren ? ")" : "") + o2 + std::to_string(c);
  }
  if (!reason) {
    think.clear();
  }
  return think + "</think><answer>" + answer + "</answer>";
}

}  // namespace whale
