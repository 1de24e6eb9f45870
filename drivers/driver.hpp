#pragma once

// The hypervisor port: everything vmitap asks of a hypervisor, one interface for every backend
// (drivers/sim, drivers/xen). Event and response types mirror Xen's vm_event interface
// (xen/vm_event.h, VM_EVENT_INTERFACE_VERSION 7) so the Xen backend translates field by field.

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace vmitap::drv {

using domain_id = uint32_t;
using vcpu_id = uint32_t;
using view_id = uint16_t;
using gfn_t = uint64_t;

inline constexpr unsigned page_shift = 12;
inline constexpr uint64_t page_size = uint64_t{1} << page_shift;
inline constexpr uint64_t page_mask = page_size - 1;

constexpr gfn_t gfn_of(uint64_t pa) { return pa >> page_shift; }
constexpr uint64_t pa_of(gfn_t gfn, uint64_t offset = 0) { return (gfn << page_shift) | offset; }

/// EPT access rights of one page in one view (Xen's xenmem_access_t, reduced to r/w/x bits).
enum class page_access : uint8_t { none = 0, r = 1, w = 2, rw = 3, x = 4, rx = 5, wx = 6, rwx = 7 };

constexpr page_access operator|(page_access a, page_access b) { return page_access(uint8_t(a) | uint8_t(b)); }
constexpr page_access operator&(page_access a, page_access b) { return page_access(uint8_t(a) & uint8_t(b)); }
constexpr page_access without(page_access a, page_access b) { return page_access(uint8_t(a) & ~uint8_t(b) & 7); }
constexpr bool allows(page_access a, page_access b) { return (a & b) == b; }
const char* to_string(page_access a);

/// Why the hypervisor paused a VCPU; the numbers are Xen's VM_EVENT_REASON_*.
enum class event_reason : uint32_t {
  unknown = 0,
  mem_access = 1,
  software_breakpoint = 6,
  singlestep = 7,
};
const char* to_string(event_reason r);

inline constexpr uint32_t interface_version = 7;

/// Flags of requests and responses; the bits are Xen's VM_EVENT_FLAG_*.
namespace flag {
inline constexpr uint32_t vcpu_paused = 1u << 0;
inline constexpr uint32_t emulate = 1u << 2;
inline constexpr uint32_t toggle_singlestep = 1u << 4;
inline constexpr uint32_t alternate_p2m = 1u << 7;
inline constexpr uint32_t set_registers = 1u << 8;
inline constexpr uint32_t fast_singlestep = 1u << 11;
}  // namespace flag

/// The register subset vmitap reads and may write back.
struct registers {
  uint64_t rip = 0;
  uint64_t rsp = 0;
  uint64_t rax = 0;
  uint64_t rflags = 0;
  uint64_t cr3 = 0;
};

/// The `u.mem_access` part of a request: which access faulted, where.
struct mem_access_info {
  gfn_t gfn = 0;
  uint64_t offset = 0;  ///< offset of the faulting address within the page
  uint64_t gla = 0;     ///< guest linear address of the access
  page_access attempted = page_access::none;
};

/// One request from the hypervisor. The VCPU stays paused until it is answered.
struct event {
  uint32_t version = interface_version;
  uint32_t flags = flag::vcpu_paused;
  event_reason reason = event_reason::unknown;
  vcpu_id vcpu = 0;
  view_id view = 0;  ///< altp2m view the VCPU was in
  mem_access_info mem;  ///< for mem_access; for singlestep, gfn of the next instruction
  registers regs;
};

/// The answer to one event. Build it with `make_response` so the echoed fields are right.
struct response {
  uint32_t version = interface_version;
  uint32_t flags = 0;
  event_reason reason = event_reason::unknown;
  vcpu_id vcpu = 0;
  view_id view = 0;              ///< with flag::alternate_p2m: switch this VCPU to it
  view_id fast_return_view = 0;  ///< with flag::fast_singlestep: back to it after one instruction
  mem_access_info mem;           ///< echoed (Xen's EMULATE needs it)
  registers regs;                ///< applied with flag::set_registers
};

/// A response that resumes the VCPU unchanged: version, VCPU, pause flag and echoes set.
response make_response(const event& ev);

struct access_change {
  gfn_t gfn = 0;
  page_access value = page_access::rwx;
};

enum class domain_state : uint8_t { running, paused, dying, dead };
const char* to_string(domain_state s);

struct domain_info {
  domain_id id = 0;
  std::string name;
  uint32_t vcpus = 0;
  domain_state state = domain_state::running;
  gfn_t max_gfn = 0;  ///< guest RAM spans gfn [0, max_gfn]
};

struct domain_change {
  domain_info domain;
  bool started = false;  ///< false: the domain stopped (died or was destroyed)
};

using event_handler = std::function<void(const event&)>;

/// Where a domain's events go: one handler per VCPU, plus one for requests whose VCPU id is
/// out of range (Xen's single ring cannot demultiplex them, but they must be answered too).
struct event_handlers {
  std::vector<event_handler> per_vcpu;
  event_handler orphan;
};

/// A monitoring session on one domain. Thread-safe: VCPU actors respond concurrently while
/// the controller changes access rights.
class domain_session {
public:
  virtual ~domain_session() = default;

  virtual domain_info info() const = 0;

  // Views (altp2m). View 0 is the host p2m; it cannot be destroyed.
  virtual caf::expected<view_id> create_view(page_access default_access) = 0;
  virtual caf::error destroy_view(view_id view) = 0;
  /// Moves every VCPU to `view` (Xen pauses the domain for it).
  virtual caf::error switch_all(view_id view) = 0;
  virtual caf::expected<page_access> get_access(view_id view, gfn_t gfn) = 0;
  /// One batched call for many gfns (xc_altp2m_set_mem_access_multi). On failure a prefix
  /// of `changes` may have been applied; the caller reads back to learn which.
  virtual caf::error set_access(view_id view, std::span<const access_change> changes) = 0;

  // Events.
  /// Starts delivery; handlers run on driver or responder threads and must not block.
  virtual caf::error start_events(event_handlers handlers) = 0;
  /// Answers one event. Exactly one response per request, also for bad input.
  virtual caf::error respond(const response& rsp) = 0;

  // Memory and execution.
  virtual caf::error read_physical(uint64_t pa, std::span<std::byte> out) = 0;
  /// Pauses every VCPU; when it returns, every raised event has reached its handler.
  virtual caf::error pause() = 0;
  virtual caf::error resume() = 0;

  /// Ordered teardown: pause, answer what is unanswered, singlestep off, all VCPUs to view 0,
  /// destroy views, stop events, unpause. Safe to call twice and after the domain died.
  virtual caf::error detach() = 0;
};

/// A hypervisor backend.
class driver {
public:
  virtual ~driver() = default;

  virtual std::string name() const = 0;
  virtual caf::expected<std::vector<domain_info>> list_domains() = 0;
  /// Calls `on_change` for every domain that starts or stops from now on (any thread).
  virtual caf::error watch(std::function<void(const domain_change&)> on_change) = 0;
  /// Stops calling the watch callback; returns once no call is in progress.
  virtual void unwatch() = 0;
  virtual caf::expected<std::unique_ptr<domain_session>> attach(domain_id id) = 0;
};

}  // namespace vmitap::drv
