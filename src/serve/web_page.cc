#include <string>

#include "serve/http_api.h"

namespace whale::serve {

const std::string& web_page() {
  static const std::string page =
#include "serve/web_page.inc"
      ;
  return page;
}

}  // namespace whale::serve
