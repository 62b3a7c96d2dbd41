#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "base/error.h"
#include "cli/commands.h"
#include "rl/tasks.h"

namespace whale {

std::vector<int> parse_token_list(const std::string& text) {
  std::vector<int> ids;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ',' || text[i] == ' ' || text[i] == '\n')) ++i;
    if (i == text.size()) break;
    size_t j = i;
    while (j < text.size() && text[j] != ',' && text[j] != ' ' && text[j] != '\n') ++j;
    std::string item = text.substr(i, j - i);
    char* end = nullptr;
    errno = 0;
    long v = std::strtol(item.c_str(), &end, 10);
    check(!item.empty() && *end == '\0' && errno == 0 && v >= 0 && v <= 0x7fffffff,
          "bad token id '" + item + "' (expected non-negative integers separated by commas)");
    ids.push_back(static_cast<int>(v));
    i = j;
  }
  check(!ids.empty(), "no token ids given");
  return ids;
}

std::vector<std::string> parse_task_list(const std::string& text) {
  std::vector<std::string> names;
  for (size_t i = 0; i <= text.size();) {
    size_t j = text.find(',', i);
    if (j == std::string::npos) j = text.size();
    if (j > i) names.push_back(text.substr(i, j - i));
    i = j + 1;
  }
  check(!names.empty(), "no tasks given");
  const auto& known = builtin_tasks();
  for (auto& t : names)
    check(std::find(known.begin(), known.end(), t) != known.end(),
          "unknown task '" + t + "' (built in: arithmetic, word, countdown, countdown3, chain)");
  return names;
}

}  // namespace whale
