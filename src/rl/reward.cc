#include "rl/reward.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <numeric>

namespace whale {

namespace {

struct Fraction {
  long n = 0, d = 1;
};

Fraction normalize(long n, long d) {
  if (d < 0) {
    n = -n;
    d = -d;
  }
  long g = std::gcd(n < 0 ? -n : n, d);
  return g ? Fraction{n / g, d / g} : Fraction{0, 1};
}

// A small recursive-descent parser over + − × ÷ and parentheses with exact fractions.
struct Parser {
  const std::string& s;
  size_t i = 0;
  std::vector<int> used;
  bool ok = true;

  void skip() {
    while (i < s.size() && s[i] == ' ') ++i;
  }
  Fraction primary() {
    skip();
    if (i < s.size() && s[i] == '(') {
      ++i;
      Fraction v = sum();
      skip();
      if (i < s.size() && s[i] == ')')
        ++i;
      else
        ok = false;
      return v;
    }
    size_t start = i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
    if (start == i || i - start > 6) {
      ok = false;
      return {};
    }
    long v = std::stol(s.substr(start, i - start));
    used.push_back(static_cast<int>(v));
    return {v, 1};
  }
  Fraction product() {
    Fraction v = primary();
    for (skip(); ok && i < s.size() && (s[i] == '*' || s[i] == '/' || s[i] == 'x'); skip()) {
      char op = s[i++];
      Fraction r = primary();
      if (op == '/') {
        if (r.n == 0) {
          ok = false;
          return {};
        }
        v = normalize(v.n * r.d, v.d * r.n);
      } else {
        v = normalize(v.n * r.n, v.d * r.d);
      }
    }
    return v;
  }
  Fraction sum() {
    Fraction v = product();
    for (skip(); ok && i < s.size() && (s[i] == '+' || s[i] == '-'); skip()) {
      char op = s[i++];
      Fraction r = product();
      v = normalize(op == '+' ? v.n * r.d + r.n * v.d : v.n * r.d - r.n * v.d, v.d * r.d);
    }
    return v;
  }
};

bool parse_number(const std::string& text, long* out) {
  std::string t = text;
  t.erase(std::remove(t.begin(), t.end(), ' '), t.end());
  if (t.empty() || t.size() > 12) return false;
  char* end = nullptr;
  long v = std::strtol(t.c_str(), &end, 10);
  if (*end != '\0') return false;
  *out = v;
  return true;
}

}  // namespace

bool check_countdown(const std::string& expression, const std::vector<int>& numbers, long target) {
  if (expression.size() > 64) return false;
  Parser parser{expression, 0, {}, true};
  Fraction v = parser.sum();
  parser.skip();
  if (!parser.ok || parser.i != expression.size()) return false;
  std::vector<int> used = parser.used, given = numbers;
  std::sort(used.begin(), used.end());
  std::sort(given.begin(), given.end());
  return used == given && v.d == 1 && v.n == target;
}

Reward score_response(const Problem& p, const std::string& response, const RewardWeights& w) {
  Reward r;
  // Format: "…</think><answer>…</answer>" and nothing after it.
  size_t think_end = response.find("</think>");
  size_t open = response.find("<answer>", think_end == std::string::npos ? 0 : think_end);
  size_t close = open == std::string::npos ? open : response.find("</answer>", open);
  r.well_formed = think_end != std::string::npos && open == think_end + 8 &&
                  close != std::string::npos && close + 9 == response.size() &&
                  response.find("<think>") == std::string::npos;
  if (open != std::string::npos && close != std::string::npos)
    r.answer = response.substr(open + 8, close - open - 8);
  if (r.well_formed) {
    if (p.checker == "exact") {
      r.correct = r.answer == p.answer;
    } else if (p.checker == "number") {
      long a, b;
      r.correct = parse_number(r.answer, &a) && parse_number(p.answer, &b) && a == b;
    } else if (p.checker == "countdown") {
      long target;
      r.correct = parse_number(p.answer, &target) && check_countdown(r.answer, p.numbers, target);
    }
  }
  size_t letters = 0, ascii = 0;
  for (unsigned char c : response) {
    if (c >= 0x80 || std::isalpha(c)) ++letters;
    if (std::isalpha(c)) ++ascii;
  }
  r.language = letters ? static_cast<float>(ascii) / letters : 1.0f;
  r.total = w.accuracy * (r.correct ? 1.0f : 0.0f) + w.format * (r.well_formed ? 1.0f : 0.0f) +
            w.language * r.language;
  return r;
}

}  // namespace whale
