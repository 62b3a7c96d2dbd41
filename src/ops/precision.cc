#include "ops/precision.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace whale {

namespace {
bool env_is_one(const char* name) {
  const char* value = std::getenv(name);
  return value && std::strcmp(value, "1") == 0;
}
std::atomic<bool>& exact_flag() {
  static std::atomic<bool> exact = env_is_one("WHALE_EXACT") || env_is_one("WHALE_EXACT_BF16");
  return exact;
}
}  // namespace

bool exact_activations() {
  return exact_flag().load();
}
void set_exact_activations(bool exact) {
  exact_flag().store(exact);
}

}  // namespace whale
