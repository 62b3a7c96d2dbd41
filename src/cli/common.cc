#include <cerrno>
#include <cstdlib>

#include "base/error.h"
#include "cli/commands.h"

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

}  // namespace whale
