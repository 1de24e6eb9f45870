#include "drivers/driver.hpp"

namespace vmitap::drv {

const char* to_string(page_access a) {
  static constexpr const char* names[] = {"---", "r--", "-w-", "rw-", "--x", "r-x", "-wx", "rwx"};
  return names[uint8_t(a) & 7];
}

const char* to_string(event_reason r) {
  switch (r) {
    case event_reason::mem_access:
      return "mem_access";
    case event_reason::software_breakpoint:
      return "software_breakpoint";
    case event_reason::singlestep:
      return "singlestep";
    case event_reason::unknown:
      break;
  }
  return "unknown";
}

const char* to_string(domain_state s) {
  switch (s) {
    case domain_state::running:
      return "running";
    case domain_state::paused:
      return "paused";
    case domain_state::dying:
      return "dying";
    case domain_state::dead:
      return "dead";
  }
  return "unknown";
}

response make_response(const event& ev) {
  response rsp;
  rsp.version = interface_version;
  rsp.flags = ev.flags & flag::vcpu_paused;
  rsp.reason = ev.reason;
  rsp.vcpu = ev.vcpu;
  rsp.view = ev.view;
  rsp.mem = ev.mem;
  rsp.regs = ev.regs;
  return rsp;
}

}  // namespace vmitap::drv
