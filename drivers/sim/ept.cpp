// Views and page access: what xc_altp2m_* calls do to the simulated EPT.

#include "drivers/error.hpp"
#include "drivers/sim/domain.hpp"

#include <cerrno>
#include <shared_mutex>
#include <thread>

namespace vmitap::sim {

using drv::page_access;

exec_lock::exec_lock() {
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&lock_, &attr);
  pthread_rwlockattr_destroy(&attr);
}

exec_lock::~exec_lock() {
  pthread_rwlock_destroy(&lock_);
}

page_access domain::host_access(drv::gfn_t gfn) const {
  auto i = views_[0].entries.find(gfn);
  return i == views_[0].entries.end() ? page_access::rwx : i->second;
}

page_access domain::access_in(drv::view_id view, drv::gfn_t gfn) const {
  if (view != 0) {
    // Xen 4.17 copies host-p2m entries into a view lazily, with the host's access.
    auto i = views_[view].entries.find(gfn);
    if (i != views_[view].entries.end())
      return i->second;
  }
  return host_access(gfn);
}

uint64_t domain::pages_changed_locked() const {
  auto differs = [&](drv::gfn_t gfn) {
    auto before = host_at_attach_.find(gfn);
    return host_access(gfn) !=
           (before == host_at_attach_.end() ? page_access::rwx : before->second);
  };
  uint64_t n = leftover_view_changes_;
  for (auto& [gfn, acc] : views_[0].entries)
    n += differs(gfn);
  for (auto& [gfn, acc] : host_at_attach_)
    n += !views_[0].entries.contains(gfn) && differs(gfn);
  return n;
}

caf::expected<drv::view_id> domain::create_view(uint64_t session, page_access) {
  std::unique_lock xl{exec_};
  if (auto err = check_session(session, "create_view"))
    return err;
  ++view_calls_;
  // Xen 4.17 does not apply a view's default access to lazily copied entries: every entry
  // starts with the host's access, whatever the default says.
  for (drv::view_id id = 1; id < drv::max_views; ++id) {
    if (!views_[id].active) {
      views_[id] = view_table{true, true, {}};
      return id;
    }
  }
  return make_error(ec::no_such_view,
                    "create_view: all " + std::to_string(drv::max_views - 1) + " views are in use");
}

caf::error domain::destroy_view(uint64_t session, drv::view_id id) {
  std::unique_lock xl{exec_};
  if (auto err = check_session(session, "destroy_view"))
    return err;
  settle_locked();
  ++view_calls_;
  if (id == 0)
    return make_error(ec::invalid_argument, "destroy_view: view 0 cannot be destroyed");
  if (!valid_view(id))
    return make_error(ec::no_such_view, "destroy_view: no view " + std::to_string(id));
  for (auto& v : vcpus_)
    if (v->view == id)  // as Xen counts it: a pending fast-singlestep return does not
      return make_error(ec::view_in_use, "destroy_view: view " + std::to_string(id) +
                                           " is in use by vcpu " + std::to_string(v->handle.id));
  for (auto& [gfn, acc] : views_[id].entries)
    leftover_view_changes_ += acc != host_access(gfn);
  views_[id] = view_table{};
  return {};
}

caf::error domain::switch_all(uint64_t session, drv::view_id id) {
  std::unique_lock xl{exec_};
  if (auto err = check_session(session, "switch_all"))
    return err;
  settle_locked();
  ++view_calls_;
  if (!valid_view(id))
    return make_error(ec::no_such_view, "switch_all: no view " + std::to_string(id));
  for (auto& v : vcpus_)
    v->view = id;
  return {};
}

caf::error domain::get_access(uint64_t session, drv::view_id id, std::span<const drv::gfn_t> gfns,
                              std::span<page_access> out) {
  std::shared_lock xl{exec_};
  if (auto err = check_session(session, "get_access"))
    return err;
  if (gfns.size() != out.size())
    return make_error(ec::invalid_argument, "get_access: one output per gfn");
  ++get_calls_;
  if (!valid_view(id))
    return make_error(ec::no_such_view, "get_access: no view " + std::to_string(id));
  {
    std::lock_guard g{fault_mutex_};
    if (reads_before_failing_ > 0) {
      --reads_before_failing_;
    } else if (failing_reads_ > 0) {
      --failing_reads_;
      return make_error(ec::driver_call_failed, "get_access (injected fault)", failing_read_errno_);
    }
  }
  for (size_t i = 0; i < gfns.size(); ++i) {
    if (!ram(gfns[i]))
      return make_error(ec::gfn_out_of_range,
                        "get_access: gfn " + std::to_string(gfns[i]) + " is not guest RAM");
    out[i] = access_in(id, gfns[i]);
  }
  return {};
}

caf::error domain::set_access(uint64_t session, drv::view_id id,
                              std::span<const drv::access_change> changes) {
  std::chrono::nanoseconds stall{0};
  {
    std::lock_guard g{fault_mutex_};
    if (stalled_changes_ > 0) {
      --stalled_changes_;
      stall = change_stall_;
    }
  }
  std::this_thread::sleep_for(stall);  // before any lock: the guest is not held up
  std::unique_lock xl{exec_};
  if (auto err = check_session(session, "set_access"))
    return err;
  ++set_calls_;
  if (!valid_view(id))
    return make_error(ec::no_such_view, "set_access: no view " + std::to_string(id));
  size_t count = changes.size();
  int failure = 0;
  {
    std::lock_guard g{fault_mutex_};
    if (failing_calls_ > 0) {
      --failing_calls_;
      count = std::min(count, failing_applied_);
      failure = failing_errno_;
    }
  }
  for (size_t i = 0; i < count; ++i) {
    auto [gfn, value] = changes[i];
    if (!ram(gfn))
      continue;  // Xen: succeeds and does nothing on a non-RAM gfn
    views_[id].entries[gfn] = value;
    if (id == 0)  // host-p2m writes propagate into every view holding a copy
      for (drv::view_id other = 1; other < drv::max_views; ++other)
        if (auto e = views_[other].entries.find(gfn); e != views_[other].entries.end())
          e->second = value;
  }
  if (failure != 0)
    return make_error(ec::driver_call_failed, "set_access (injected fault)", failure);
  return {};
}

}  // namespace vmitap::sim
