#include "engine/service.hpp"

#include <systemd/sd-daemon.h>

namespace vmitap {

void service_notify(const char* state) {
  sd_notify(0, state);
}

}  // namespace vmitap
