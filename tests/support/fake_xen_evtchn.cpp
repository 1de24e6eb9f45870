// The fake's libxenevtchn (the Linux evtchn driver's mask/pending semantics on an eventfd;
// a notify runs vm_event_resume) and libxenforeignmemory (the sim's pages mapped live).

#include "tests/support/fake_xen_internal.hpp"

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cerrno>

namespace vmitap::testing {

// xenevtchn
xenevtchn_handle* fake_xen::impl::evtchn_open(xentoollog_logger*, unsigned) {
  if (int err = enter("xenevtchn_open")) {
    errno = err;
    return nullptr;
  }
  auto e = std::make_unique<evtchn>();
  e->fd = eventfd(0, EFD_SEMAPHORE | EFD_CLOEXEC);
  std::lock_guard g{f().mutex_};
  f().evtchns_.insert(e.get());
  return reinterpret_cast<xenevtchn_handle*>(e.release());
}

int fake_xen::impl::evtchn_close(xenevtchn_handle* h) {
  enter("xenevtchn_close");
  std::unique_ptr<evtchn> e{&ev(h)};
  std::lock_guard g{f().mutex_};
  for (auto& [id, d] : f().domains_)
    if (d->bound == e.get())
      d->bound = nullptr;
  f().evtchns_.erase(e.get());
  close(e->fd);
  return 0;
}

int fake_xen::impl::evtchn_fd(xenevtchn_handle* h) {
  return ev(h).fd;
}

int fake_xen::impl::evtchn_notify(xenevtchn_handle* h, evtchn_port_t port) {
  if (int err = hot("xenevtchn_notify"))
    return fail(err);
  uint32_t domid;
  {
    std::lock_guard e{ev(h).mutex};
    auto i = ev(h).ports.find(port);
    if (i == ev(h).ports.end())
      return fail(EINVAL);
    domid = i->second.domid;
  }
  domain_state* d;
  {
    std::lock_guard g{f().mutex_};
    ++f().notifies_;
    auto i = f().domains_.find(domid);
    d = i == f().domains_.end() ? nullptr : i->second.get();
  }
  if (d)
    f().resume(*d);  // evtchn_send → vm_event_resume, synchronously
  return 0;
}

xenevtchn_port_or_error_t fake_xen::impl::bind(xenevtchn_handle* h, uint32_t domid,
                                               evtchn_port_t remote) {
  if (int err = enter("xenevtchn_bind_interdomain", domid))
    return fail(err);
  evtchn_port_t local;
  bool fire_now;
  {
    std::lock_guard g{f().mutex_};
    auto* d = f().state_of(domid);
    if (!d)
      return fail(ESRCH);
    if (!d->monitor || d->remote_port != remote)
      return fail(EINVAL);
    std::lock_guard e{ev(h).mutex};
    local = ev(h).next_port++;
    ev(h).ports[local] = {domid};
    d->bound = &ev(h);
    d->local_port = local;
    fire_now = std::exchange(d->fire_at_bind, false);
  }
  if (fire_now)
    f().fire(ev(h), local);
  return xenevtchn_port_or_error_t(local);
}

int fake_xen::impl::unbind(xenevtchn_handle* h, evtchn_port_t port) {
  if (int err = enter("xenevtchn_unbind"))
    return fail(err);
  std::lock_guard g{f().mutex_};
  for (auto& [id, d] : f().domains_)
    if (d->bound == &ev(h) && d->local_port == port)
      d->bound = nullptr;
  std::lock_guard e{ev(h).mutex};
  return ev(h).ports.erase(port) ? 0 : fail(EINVAL);
}

xenevtchn_port_or_error_t fake_xen::impl::pending(xenevtchn_handle* h) {
  if (int err = hot("xenevtchn_pending"))
    return fail(err);
  uint64_t one;
  if (read(ev(h).fd, &one, sizeof one) != sizeof one)
    return -1;
  std::lock_guard e{ev(h).mutex};
  auto port = ev(h).ready.front();
  ev(h).ready.pop_front();
  return xenevtchn_port_or_error_t(port);
}

int fake_xen::impl::unmask(xenevtchn_handle* h, evtchn_port_t port) {
  if (int err = hot("xenevtchn_unmask"))
    return fail(err);
  bool again = false;
  {
    std::lock_guard e{ev(h).mutex};
    auto i = ev(h).ports.find(port);
    if (i == ev(h).ports.end())
      return fail(EINVAL);
    i->second.masked = false;
    again = std::exchange(i->second.pending, false);
  }
  if (again)
    f().fire(ev(h), port);
  return 0;
}

// xenforeignmemory
xenforeignmemory_handle* fake_xen::impl::fmem_open(xentoollog_logger*, unsigned) {
  if (int err = enter("xenforeignmemory_open")) {
    errno = err;
    return nullptr;
  }
  return reinterpret_cast<xenforeignmemory_handle*>(&dummy_handle);
}

int fake_xen::impl::fmem_close(xenforeignmemory_handle*) {
  enter("xenforeignmemory_close");
  return 0;
}

void* fake_xen::impl::fmem_map(xenforeignmemory_handle*, uint32_t domid, int prot, size_t num,
                               const xen_pfn_t* pfns, int* errs) {
  void* out = nullptr;
  int rc = control("xenforeignmemory_map", domid, false, [&](domain_state& d) {
    auto s = session(d);
    auto size = num * XC_PAGE_SIZE;
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      return ENOMEM;
    auto* bytes = static_cast<std::byte*>(p);
    for (size_t i = 0; i < num; ++i) {
      // As Xen maps a guest's page: the page itself, so later writes show. Pages the sim
      // never writes (code, zeros) are copied.
      if (auto shared = d.dom->shared_page(pfns[i])) {
        if (::mmap(bytes + i * XC_PAGE_SIZE, XC_PAGE_SIZE, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_FIXED, shared->first, off_t(shared->second)) == MAP_FAILED) {
          munmap(p, size);
          return ENOMEM;
        }
        if (errs)
          errs[i] = 0;
        continue;
      }
      auto err =
        d.dom->read_physical(s, pfns[i] * XC_PAGE_SIZE, {bytes + i * XC_PAGE_SIZE, XC_PAGE_SIZE});
      if (errs)
        errs[i] = err ? -EFAULT : 0;
      else if (err) {
        munmap(p, size);
        return EFAULT;
      }
    }
    mprotect(p, size, prot);
    out = p;
    return 0;
  });
  return rc == 0 ? out : nullptr;
}

int fake_xen::impl::fmem_unmap(xenforeignmemory_handle*, void* addr, size_t num) {
  if (int err = hot("xenforeignmemory_unmap"))
    return fail(err);
  return munmap(addr, num * XC_PAGE_SIZE);
}

}  // namespace vmitap::testing
