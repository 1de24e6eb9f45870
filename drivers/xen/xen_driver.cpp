#include "drivers/xen/xen_driver.hpp"

#include "drivers/error.hpp"
#include "drivers/xen/xen_host.hpp"
#include "drivers/xen/xen_session.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <thread>

namespace vmitap::xen {

drv::capabilities capabilities_of(int major, int minor, const std::string& extra) {
  auto version = std::to_string(major) + "." + std::to_string(minor) + extra;
  int patch = 0;
  if (!extra.empty() && extra[0] == '.')
    patch = std::atoi(extra.c_str() + 1);
  // The fix that keeps fast singlestep's state is in 4.17.4 and in 4.19.
  if (major > 4 || (major == 4 && minor >= 19) || (major == 4 && minor == 17 && patch >= 4))
    return {true, {}};
  return {false, "Xen " + version +
                   " may lose fast singlestep's state (fixed in 4.17.4 and 4.19); "
                   "set step = \"fast\" to use it anyway"};
}

namespace {

/// The capabilities of the Xen that runs here. If its version cannot be read, fast
/// singlestep is not relied on, and the reason says why.
drv::capabilities running_version(const xen_api& api, xc_interface* xch) {
  auto unknown = [](const char* call) {
    int err = errno;
    return drv::capabilities{false, std::string(call) + ": " + std::strerror(err) + " (errno " +
                                      std::to_string(err) +
                                      "): Xen's version is unknown, so "
                                      "fast singlestep is not relied on; set step = \"fast\" "
                                      "to use it anyway"};
  };
  int version = api.xc_version(xch, XENVER_version, nullptr);
  if (version < 0)
    return unknown("xc_version(XENVER_version)");
  xen_extraversion_t extra{};
  if (api.xc_version(xch, XENVER_extraversion, &extra) < 0)
    return unknown("xc_version(XENVER_extraversion)");
  return capabilities_of(version >> 16, version & 0xffff,
                         std::string(extra, strnlen(extra, sizeof extra)));
}

class xen_driver final : public drv::driver {
public:
  explicit xen_driver(std::shared_ptr<xen_host> host) : host_(std::move(host)) {}
  ~xen_driver() override { unwatch(); }

  std::string name() const override { return "xen"; }
  drv::capabilities caps() const override { return host_->caps; }

  caf::expected<std::vector<drv::domain_info>> list_domains() override {
    std::vector<xc_domaininfo_t> infos(1024);
    int n = host_->api.xc_domain_getinfolist(host_->xch, 0, unsigned(infos.size()), infos.data());
    if (n < 0)
      return make_error(ec::driver_call_failed, "xc_domain_getinfolist", errno);
    std::vector<drv::domain_info> out;
    for (int i = 0; i < n; ++i)
      if (infos[i].domain != 0)  // dom0 is where vmitap runs: never a guest to monitor
        out.push_back(host_->info_of(infos[i]));
    return out;
  }

  caf::error watch(std::function<void(const drv::domain_change&)> on_change) override {
    unwatch();
    auto* xsh = host_->api.xs_open(0);
    if (!xsh)
      return make_error(ec::driver_call_failed, "xs_open", errno);
    auto& api = host_->api;
    if (!api.xs_watch(xsh, "@introduceDomain", "vmitap") ||
        !api.xs_watch(xsh, "@releaseDomain", "vmitap")) {
      int err = errno;
      api.xs_close(xsh);
      return make_error(ec::driver_call_failed, "xs_watch", err);
    }
    stop_fd_ = eventfd(0, EFD_CLOEXEC);
    auto known = list_domains();
    std::map<drv::domain_id, drv::domain_info> seen;
    if (known)
      for (auto& d : *known)
        seen[d.id] = d;
    watcher_ = std::thread([this, xsh, on_change = std::move(on_change), seen]() mutable {
      watch_loop(xsh, on_change, seen);
    });
    return {};
  }

  void unwatch() override {
    if (!watcher_.joinable())
      return;
    uint64_t one = 1;
    [[maybe_unused]] auto n = write(stop_fd_, &one, sizeof one);
    watcher_.join();
    close(stop_fd_);
  }

  caf::expected<std::unique_ptr<drv::domain_session>> attach(drv::domain_id id) override {
    auto s = xen_session::attach(host_, id);
    if (!s)
      return std::move(s.error());
    return std::unique_ptr<drv::domain_session>(std::move(*s));
  }

private:
  /// xenstore fires a watch once when it is set and whenever a domain is introduced or
  /// released, without saying which: rescan and compare.
  void watch_loop(struct xs_handle* xsh,
                  const std::function<void(const drv::domain_change&)>& on_change,
                  std::map<drv::domain_id, drv::domain_info>& seen) {
    auto& api = host_->api;
    pollfd fds[2] = {{api.xs_fileno(xsh), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    while (poll(fds, 2, -1) >= 0 || errno == EINTR) {
      if (fds[1].revents)
        break;
      if (!(fds[0].revents & POLLIN))
        continue;
      while (char** w = api.xs_check_watch(xsh))
        std::free(w);
      auto now = list_domains();
      if (!now)
        continue;
      std::map<drv::domain_id, drv::domain_info> next;
      for (auto& d : *now)
        next[d.id] = d;
      for (auto& [id, d] : seen)
        if (!next.count(id) || next[id].state == drv::domain_state::dying)
          on_change({d, false});
      for (auto& [id, d] : next)
        if (!seen.count(id) && d.state != drv::domain_state::dying)
          on_change({d, true});
      std::erase_if(next, [](auto& e) { return e.second.state == drv::domain_state::dying; });
      seen = std::move(next);
    }
    api.xs_unwatch(xsh, "@introduceDomain", "vmitap");
    api.xs_unwatch(xsh, "@releaseDomain", "vmitap");
    api.xs_close(xsh);
  }

  std::shared_ptr<xen_host> host_;
  std::thread watcher_;
  int stop_fd_ = -1;
};

}  // namespace

caf::expected<std::shared_ptr<drv::driver>> open_xen_driver(const xen_api& api) {
  auto host = std::make_shared<xen_host>(api);
  // Xen's libraries log to stderr themselves unless given a logger: give a quiet one.
  host->logger =
    reinterpret_cast<xentoollog_logger*>(api.xtl_createlogger_stdiostream(stderr, XTL_CRITICAL, 0));
  host->xch = api.xc_interface_open(host->logger, host->logger, 0);
  if (!host->xch) {
    int err = errno;
    if (err == ENOENT)
      return make_error(ec::no_hypervisor, "no Xen hypervisor here: /dev/xen/privcmd missing (" +
                                             std::string(std::strerror(err)) + ", errno " +
                                             std::to_string(err) + ")");
    if (err == EACCES || err == EPERM)
      return make_error(ec::no_hypervisor,
                        "Xen: /dev/xen/privcmd: " + std::string(std::strerror(err)) + " (errno " +
                          std::to_string(err) + "): run vmitap as root in dom0");
    return make_error(ec::driver_call_failed, "xc_interface_open", err);
  }
  host->xsh = api.xs_open(0);
  if (!host->xsh)
    return make_error(ec::no_hypervisor, "xs_open: xenstored is not reachable (" +
                                           std::string(std::strerror(errno)) + ", errno " +
                                           std::to_string(errno) + ")");
  host->caps = running_version(api, host->xch);
  return std::shared_ptr<drv::driver>(std::make_shared<xen_driver>(host));
}

}  // namespace vmitap::xen
