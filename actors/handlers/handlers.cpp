#include "actors/handlers/handlers.hpp"

namespace vmitap {

handler_decision handler_decision::return_from_call(const handler_hit& hit, uint64_t return_address,
                                                    uint64_t rax) {
  auto regs = hit.regs;
  regs.rip = return_address;
  regs.rsp += 8;  // the return address, popped as `ret` pops it
  regs.rax = rax;
  return with(regs);
}

}  // namespace vmitap
