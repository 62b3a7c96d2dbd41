#include "text/chat_template.h"

#include "base/error.h"

namespace whale::text {

std::unique_ptr<ChatTemplate> ChatTemplate::for_tokenizer(const Tokenizer& tokenizer,
                                                          const std::string& dir) {
  throw Error("chat templates are not implemented yet (" + dir + ")");
}

std::string ChatTemplate::render(const nlohmann::json&, bool) const {
  return "";
}

}  // namespace whale::text
