#include "sandbox/capabilities.h"

#include <sys/capability.h>

namespace stoke {

int last_capability() {
  // cap_max_bits() asks the kernel (it probes the bounding set), so it is right
  // for the running kernel, not just for the headers we were built with.
  unsigned bits = cap_max_bits();
  return bits == 0 ? CAP_LAST_CAP : static_cast<int>(bits) - 1;
}

}  // namespace stoke
