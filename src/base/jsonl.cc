#include "base/jsonl.h"

#include <fstream>

#include "base/error.h"

namespace whale {

void read_jsonl(const std::string& path,
                const std::function<void(const nlohmann::json&, const std::string& where)>& visit) {
  std::ifstream in(path);
  check(in.good(), "cannot open " + path);
  std::string line;
  int objects = 0;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      throw Error(where + ": not valid JSON");
    }
    check(j.is_object(), where + ": expected a JSON object");
    visit(j, where);
    ++objects;
  }
  check(objects > 0, path + ": no lines");
}

}  // namespace whale
