#include "tests/support/fake_xen_internal.hpp"

#include <sys/mman.h>
#include <unistd.h>

namespace vmitap::testing {

namespace {

const xen::xen_api fake_api = {
  fake_xen::impl::createlogger,
  fake_xen::impl::logger_destroy,
  fake_xen::impl::interface_open,
  fake_xen::impl::interface_close,
  fake_xen::impl::version,
  fake_xen::impl::getinfolist,
  fake_xen::impl::get_version,
  fake_xen::impl::monitor_caps,
  fake_xen::impl::maximum_gpfn,
  fake_xen::impl::pause,
  fake_xen::impl::unpause,
  fake_xen::impl::monitor_enable,
  fake_xen::impl::monitor_disable,
  fake_xen::impl::monitor_singlestep,
  fake_xen::impl::param_get,
  fake_xen::impl::param_set,
  fake_xen::impl::altp2m_get_state,
  fake_xen::impl::altp2m_set_state,
  fake_xen::impl::create_view,
  fake_xen::impl::destroy_view,
  fake_xen::impl::switch_view,
  fake_xen::impl::set_access_multi,
  fake_xen::impl::altp2m_get_access,
  fake_xen::impl::get_access,
  fake_xen::impl::debug_control,
  fake_xen::impl::hvm_getcontext_partial,
  fake_xen::impl::evtchn_open,
  fake_xen::impl::evtchn_close,
  fake_xen::impl::evtchn_fd,
  fake_xen::impl::evtchn_notify,
  fake_xen::impl::bind,
  fake_xen::impl::unbind,
  fake_xen::impl::pending,
  fake_xen::impl::unmask,
  fake_xen::impl::fmem_open,
  fake_xen::impl::fmem_close,
  fake_xen::impl::fmem_map,
  fake_xen::impl::fmem_unmap,
  fake_xen::impl::xs_open,
  fake_xen::impl::xs_close,
  fake_xen::impl::xs_read,
  fake_xen::impl::xs_watch,
  fake_xen::impl::xs_unwatch,
  fake_xen::impl::xs_fileno,
  fake_xen::impl::xs_check_watch,
  fake_xen::impl::unmap_ring,
};

}  // namespace

// --- the fake ---------------------------------------------------------------------------

fake_xen::fake_xen(std::shared_ptr<sim::hypervisor> hv) : hv_(std::move(hv)) {
  impl::current = this;
  watch_token_ = hv_->add_watch([this](const drv::domain_change& c) { watch_event(c.started); });
}

fake_xen::~fake_xen() {
  hv_->remove_watch(watch_token_);
  for (auto& [id, d] : domains_) {
    if (d->session)
      d->dom->detach(d->session);  // no request reaches this fake any more
    if (d->page)
      munmap(d->page, XC_PAGE_SIZE);
  }
  for (auto* e : evtchns_) {
    close(e->fd);
    delete e;
  }
  for (auto* x : xs_handles_) {
    close(x->rd);
    close(x->wr);
    delete x;
  }
  impl::current = nullptr;
}

const xen::xen_api& fake_xen::api() const {
  return fake_api;
}

fake_xen::domain_state* fake_xen::state_of(uint32_t domid) {
  auto dom = hv_->find(domid);
  if (!dom)
    return nullptr;
  auto& d = domains_[domid];
  if (!d) {  // the sim never reuses an id
    d = std::make_unique<domain_state>();
    d->id = domid;
    d->dom = dom;
    d->altp2m_param = altp2m_param;
  }
  return d.get();
}

int fake_xen::failing(const char* call) {
  auto i = failures_.find(call);
  if (i == failures_.end())
    return 0;
  int err = i->second.first;
  if (--i->second.second == 0)
    failures_.erase(i);
  return err;
}

void fake_xen::fail_next(const std::string& call, int err, int count) {
  std::lock_guard g{mutex_};
  failures_[call] = {err, count};
}

void fake_xen::violation(std::string what) {
  std::lock_guard g{mutex_};
  violations_.push_back(std::move(what));
}

void fake_xen::release_if_idle(domain_state& d) {
  std::unique_lock c{d.control};
  uint64_t s;
  {
    std::lock_guard g{mutex_};
    if (d.monitor || d.pauses || !d.session)
      return;
    s = std::exchange(d.session, 0);
  }
  d.dom->detach(s);  // the sim's session ends when Xen would hold nothing of vmitap's
}

// --- the seam's shared helpers ----------------------------------------------------------

uint64_t fake_xen::impl::session(domain_state& d) {
  {
    std::lock_guard g{f().mutex_};
    if (d.session)
      return d.session;
  }
  auto s = d.dom->attach();
  if (!s)
    return 0;
  uint32_t pauses;
  {
    std::lock_guard g{f().mutex_};
    d.session = *s;
    pauses = d.pauses;
  }
  for (uint32_t i = 0; i < pauses; ++i)
    d.dom->pause(*s);  // Xen's domain was paused before the sim saw it
  return *s;
}

// --- what happened ----------------------------------------------------------------------

std::vector<std::string> fake_xen::calls() const {
  std::lock_guard g{mutex_};
  return calls_;
}

void fake_xen::clear_calls() {
  std::lock_guard g{mutex_};
  calls_.clear();
}

uint64_t fake_xen::notifies() const {
  std::lock_guard g{mutex_};
  return notifies_;
}

uint64_t fake_xen::responses_dropped() const {
  std::lock_guard g{mutex_};
  return dropped_;
}

uint64_t fake_xen::responses_ignored() const {
  std::lock_guard g{mutex_};
  return ignored_;
}

uint64_t fake_xen::max_in_flight() const {
  std::lock_guard g{mutex_};
  return max_in_flight_;
}

uint64_t fake_xen::waitqueue_peak() const {
  std::lock_guard g{mutex_};
  return waitqueue_peak_;
}

std::vector<std::string> fake_xen::violations() const {
  std::lock_guard g{mutex_};
  return violations_;
}

bool fake_xen::altp2m_on(drv::domain_id id) const {
  std::lock_guard g{mutex_};
  auto i = domains_.find(id);
  return i != domains_.end() && i->second->altp2m_active;
}

bool fake_xen::singlestep_monitor_on(drv::domain_id id) const {
  std::lock_guard g{mutex_};
  auto i = domains_.find(id);
  return i != domains_.end() && i->second->singlestep_monitor;
}

bool fake_xen::monitor_enabled(drv::domain_id id) const {
  std::lock_guard g{mutex_};
  auto i = domains_.find(id);
  return i != domains_.end() && i->second->monitor;
}

uint32_t fake_xen::controller_pauses(drv::domain_id id) const {
  std::lock_guard g{mutex_};
  auto i = domains_.find(id);
  return i != domains_.end() ? i->second->pauses : 0;
}

}  // namespace vmitap::testing
