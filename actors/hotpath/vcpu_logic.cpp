#include "actors/hotpath/vcpu_logic.hpp"

namespace vmitap {

using drv::event_reason;
namespace flag = drv::flag;

void vcpu_logic::step_over(drv::response& rsp) {
  switch (mode_) {
    case step_mode::emulate:
      rsp.flags |= flag::emulate;  // emulated in place: no view switch, no second event
      return;
    case step_mode::fast:
      // Only this VCPU leaves the monitored view, for one instruction; Xen brings it back and
      // turns singlestepping off, a homing one included.
      rsp.flags |= flag::alternate_p2m | flag::fast_singlestep;
      rsp.view = 0;
      rsp.fast_return_view = home_view_;
      singlestep_on_ = homing_ = false;
      return;
    case step_mode::classic:
      return step_classic(rsp);
  }
}

void vcpu_logic::step_classic(drv::response& rsp) {
  rsp.flags |= flag::alternate_p2m;
  rsp.view = 0;
  if (!singlestep_on_) {
    rsp.flags |= flag::toggle_singlestep;
    singlestep_on_ = true;
  }
  stepping_ = true;
}

drv::response vcpu_logic::decide(const drv::event& ev, const breakpoint_table* table,
                                 std::vector<breakpoint_ptr>& hits, verdict& out) {
  auto rsp = drv::make_response(ev);  // right version, pause flag, echoes, registers
  if (ev.version != drv::interface_version) {
    out = verdict::bad_version;
    return rsp;
  }
  switch (ev.reason) {
    case event_reason::mem_access: {
      if (table && table->watching(ev.mem.gfn) && allows(ev.mem.attempted, drv::page_access::w)) {
        if (ev.mem.in_page_walk) {
          // The hardware's own write (Xen 4.17 has no r_pw to allow it): a translation does
          // not change by it.
          out = verdict::table_bits;
          step_over(rsp);
          return rsp;
        }
        // Whatever the mode: fast singlestep and EMULATE go on without a word once the
        // write is done, and the walk must see the tables before the guest can use them.
        out = verdict::table_write;
        step_classic(rsp);
        table_step_ = true;
        written_table_ = ev.mem.gfn;
        return rsp;
      }
      auto page = table ? table->find(ev.view, ev.mem.gfn) : page_entries{};
      if (!page.empty() && allows(ev.mem.attempted, drv::page_access::x)) {
        breakpoints_at(page, ev.mem.offset, hits);
        out = hits.empty() ? verdict::neighbour : verdict::hit;
      } else if (!page.empty()) {
        // Read or write on a page vmitap monitors for execution: its access lacked that right
        // before (or a shadow page asks for it on purpose). No breakpoint's business.
        out = verdict::data_access;
      } else {
        // Not (or no longer) a monitored page: removed while the event was in flight, or
        // not ours at all. Either way the VCPU must get past the instruction.
        out = table && table->manages(ev.view) ? verdict::stale : verdict::spurious;
      }
      step_over(rsp);
      return rsp;
    }
    case event_reason::singlestep:
      // A SINGLESTEP request means the VCPU's flag is on: every answer turns it off.
      rsp.flags |= flag::toggle_singlestep;
      singlestep_on_ = false;
      if (stepping_ || homing_) {
        out = table_step_ ? verdict::table_written : verdict::singlestep;
        table_step_ = false;
        rsp.flags |= flag::alternate_p2m;
        rsp.view = home_view_;
        stepping_ = homing_ = false;
      } else {
        out = verdict::spurious;  // singlestepping we did not ask for
      }
      return rsp;
    default:
      out = verdict::unknown_reason;
      return rsp;
  }
}

drv::response vcpu_logic::redirect(const drv::event& ev, const drv::registers& regs) {
  auto rsp = drv::make_response(ev);
  rsp.flags |= flag::set_registers;
  rsp.regs = regs;
  rsp.regs.cr3 = ev.regs.cr3;  // never written by a response
  if (homing_ || ev.view != home_view_) {
    rsp.flags |= flag::alternate_p2m;
    rsp.view = home_view_;
  }
  if (singlestep_on_) {
    rsp.flags |= flag::toggle_singlestep;
    singlestep_on_ = false;
  }
  homing_ = stepping_ = table_step_ = false;
  return rsp;
}

}  // namespace vmitap
