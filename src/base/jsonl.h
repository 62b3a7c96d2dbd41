// JSON Lines input (users' tasks, SFT data, preference pairs): one object per non-blank line.
// Every error names the file and line, so a bad line in a large file is found at once.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace whale {

// Calls visit(object, "path:line") for each non-blank line; throws on a line that is not a
// JSON object, and when the file cannot be opened or holds no object.
void read_jsonl(const std::string& path,
                const std::function<void(const nlohmann::json&, const std::string& where)>& visit);

}  // namespace whale
