#pragma once

// What vmitap answers to one request, without any actor or thread machinery: the decision
// (hit / page neighbour / data access / page-table write / stale / spurious / malformed) and
// the step-over state machine of one VCPU. The hot path runs it where the request arrives; tests
// run it directly.

#include "actors/model/plan.hpp"
#include "actors/model/snapshot.hpp"

namespace vmitap {

class vcpu_logic {
public:
  enum class verdict : uint8_t {
    hit,
    neighbour,      ///< a monitored page, not a breakpoint's address
    data_access,    ///< a read or write of a monitored page (its own access lacked it)
    stale,          ///< a view vmitap manages, a page no longer monitored
    spurious,       ///< nothing vmitap asked for
    singlestep,     ///< the end of a classic step, or of the trip to the home view
    table_write,    ///< the guest writes a watched page table: a classic step, so the write is
                    ///< done, and only done, at the SINGLESTEP that follows
    table_written,  ///< that SINGLESTEP: the tables are to be walked again before it is answered
    table_bits,     ///< the hardware sets an accessed or dirty bit in a watched page table
    bad_version,
    unknown_reason,
  };

  /// `home_view` is where the VCPU returns after each step. With `homing`, the VCPU does not
  /// run there yet: its singlestep was turned on at attach, and its first event sends it home.
  vcpu_logic(step_mode mode, drv::view_id home_view, bool homing = false) :
    mode_(mode), home_view_(home_view), homing_(homing), singlestep_on_(homing) {}

  /// Decides the response to `ev`. Breakpoints hit are appended to `hits`.
  drv::response decide(const drv::event& ev, const breakpoint_table* table,
                       std::vector<breakpoint_ptr>& hits, verdict& out);

  /// The response to a mem_access `ev` whose trapped instruction is not to run: the VCPU
  /// resumes at `regs.rip` with `regs`, in its home view, not singlestepping. For a lane in
  /// the state it had before `ev` was decided.
  drv::response redirect(const drv::event& ev, const drv::registers& regs);

  bool stepping() const { return stepping_; }
  /// The page table written, from a table_write until its table_written.
  drv::gfn_t written_table() const { return written_table_; }
  bool singlestep_on() const { return singlestep_on_; }
  bool homing() const { return homing_; }

private:
  void step_over(drv::response& rsp);
  /// View 0 and singlestep: the instruction runs there and the VCPU reports back.
  void step_classic(drv::response& rsp);

  step_mode mode_;
  drv::view_id home_view_;
  bool homing_;
  bool stepping_ = false;    // classic: waiting for the SINGLESTEP event
  bool table_step_ = false;  // that step runs a write to a watched page table
  drv::gfn_t written_table_ = 0;
  bool singlestep_on_;  // TOGGLE_SINGLESTEP flips: track the VCPU's state
};

}  // namespace vmitap
