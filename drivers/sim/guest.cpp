// The guest's memory and page tables: built once, when the domain is created, in pages
// reserved at the top of guest RAM.

#include "drivers/error.hpp"
#include "drivers/sim/domain.hpp"

#include <sys/mman.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace vmitap::sim {

namespace pte = drv::pte;

guest_memory::guest_memory(drv::gfn_t first, std::span<const page_image> pages) :
  first_(first), count_(pages.size()) {
  auto bytes = std::max<size_t>(pages.size(), 1) * drv::page_size;
  fd_ = ::memfd_create("vmitap-sim-guest", MFD_CLOEXEC);
  void* p = MAP_FAILED;
  if (fd_ >= 0 && ::ftruncate(fd_, off_t(bytes)) == 0)
    p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED)  // no memory for a guest: as fatal as a failed new
    throw std::system_error(errno, std::generic_category(), "sim guest memory");
  words_ = static_cast<std::atomic<uint64_t>*>(p);
  for (size_t pg = 0; pg < pages.size(); ++pg)
    for (size_t w = 0; w < page_words; ++w)
      words_[pg * page_words + w].store(pages[pg][w], std::memory_order_relaxed);
}

guest_memory::~guest_memory() {
  if (words_)
    ::munmap(words_, std::max<size_t>(count_, 1) * drv::page_size);
  if (fd_ >= 0)
    ::close(fd_);
}

void guest_memory::read(uint64_t pa, std::span<std::byte> out) const {
  for (size_t done = 0; done < out.size();) {
    auto at = pa + done;
    auto offset = at & 7;
    auto n = std::min<size_t>(8 - offset, out.size() - done);
    auto w = word(at & ~uint64_t{7}).load(std::memory_order_relaxed);
    std::memcpy(out.data() + done, reinterpret_cast<const std::byte*>(&w) + offset, n);
    done += n;
  }
}

void guest_memory::write(uint64_t pa, std::span<const std::byte> in) {
  for (size_t done = 0; done < in.size();) {
    auto at = pa + done;
    auto offset = at & 7;
    auto n = std::min<size_t>(8 - offset, in.size() - done);
    auto& target = word(at & ~uint64_t{7});
    uint64_t w;
    if (n == 8) {
      std::memcpy(&w, in.data() + done, 8);
    } else {  // the page's only writer: a load, a merge and a store lose nothing
      w = target.load(std::memory_order_relaxed);
      std::memcpy(reinterpret_cast<std::byte*>(&w) + offset, in.data() + done, n);
    }
    target.store(w, std::memory_order_relaxed);
    done += n;
  }
}

namespace {

constexpr uint64_t large_page = uint64_t{1} << 21;

// Page tables written into pages taken from the top of RAM downwards.
class table_builder {
public:
  explicit table_builder(drv::gfn_t top) : top_(top) {}

  drv::gfn_t alloc() {
    pages_.emplace_back();  // zeroed
    return top_ - (pages_.size() - 1);
  }
  uint64_t& entry(drv::gfn_t table, unsigned index) { return pages_[top_ - table][index]; }
  /// Writes `n` bytes at `offset` into page `gfn` (a structure, not a table).
  void write(drv::gfn_t gfn, uint64_t offset, const void* data, size_t n) {
    std::memcpy(reinterpret_cast<std::byte*>(pages_[top_ - gfn].data()) + offset, data, n);
  }
  void write64(drv::gfn_t gfn, uint64_t offset, uint64_t value) {
    write(gfn, offset, &value, sizeof value);
  }

  /// The table `table[index]` points to, made with `flags` if it is not there yet.
  drv::gfn_t next(drv::gfn_t table, unsigned index, uint64_t flags) {
    if (!(entry(table, index) & pte::present)) {
      auto made = alloc();  // before taking the entry: alloc may move the pages
      entry(table, index) = drv::pa_of(made) | flags;
    }
    return drv::gfn_of(entry(table, index) & pte::address_mask);
  }

  /// Sets the 4 KiB PTE of `va` in a user half.
  void map_user(drv::gfn_t pml4, uint64_t va, uint64_t value) {
    constexpr auto flags = pte::present | pte::writable | pte::user;
    auto pdpt = next(pml4, drv::table_index(va, 4), flags);
    auto pd = next(pdpt, drv::table_index(va, 3), flags);
    auto pt = next(pd, drv::table_index(va, 2), flags);
    entry(pt, drv::table_index(va, 1)) = value;
  }

  size_t used() const { return pages_.size(); }
  /// The pages from the lowest gfn up.
  std::vector<page_image> take() {
    std::reverse(pages_.begin(), pages_.end());
    return std::move(pages_);
  }

private:
  drv::gfn_t top_;
  std::vector<page_image> pages_;  // [i] is gfn top_ - i
};

// Arity 0 to 8; half the arguments integers, the others strings, as many ASCII as UTF-16.
std::vector<signature> draw_signatures(uint64_t seed, size_t functions) {
  rng r{seed ^ 0x51a7'0a65'ca11'5eedULL};  // not the program's draws: its layout stays
  std::vector<signature> out(functions);
  for (auto& sig : out) {
    sig.arity = uint8_t(r.below(max_args + 1));
    for (unsigned i = 0; i < sig.arity; ++i) {
      auto k = r.below(4);
      sig.kinds[i] = k < 2 ? arg_kind::integer : k == 2 ? arg_kind::ascii : arg_kind::utf16;
    }
  }
  return out;
}

struct stack_need {
  uint64_t bytes = 0;
  uint32_t frames = 0;
};

// The deepest the stack can get: calls go only to later functions, so the longest chain is
// found from the last function back.
stack_need worst_stack(const program& code, const std::vector<signature>& sigs,
                       drv::calling_convention abi) {
  // Arguments, at most 15 bytes of alignment, the return address.
  auto frame = [&](uint32_t f) { return caller_area(sigs[f], abi) + 24; };
  auto fns = code.functions();
  std::vector<stack_need> below(fns.size());  // what calls made from a function need
  stack_need worst;
  for (auto f = uint32_t(fns.size()); f-- > 0;) {
    for (auto i = fns[f].first; i < fns[f].first + fns[f].count; ++i) {
      const auto& in = code.at(i);
      if (in.kind != op::call)
        continue;
      auto& callee = below[in.target];
      below[f].bytes = std::max(below[f].bytes, frame(in.target) + callee.bytes);
      below[f].frames = std::max(below[f].frames, callee.frames + 1);
    }
    worst.bytes = std::max(worst.bytes, frame(f) + below[f].bytes);
    worst.frames = std::max(worst.frames, below[f].frames + 1);
  }
  return worst;
}

// The kernel's structures: per VCPU a per-CPU area (Linux: current_task) or a KPCR (Windows:
// Prcb.CurrentThread), per thread a task_struct or an ETHREAD, per process (Windows) an
// EPROCESS, each on a page of its own in the kernel's map.
void lay_out_kernel(const domain_config& cfg, table_builder& b, guest_layout& layout) {
  namespace at = layout_of;
  const auto& k = layout.kernel;
  auto va = [&](drv::gfn_t gfn) { return k.va_of(drv::pa_of(gfn)); };
  bool windows = k.os == drv::kernel_os::windows_kernel;
  layout.thread_gfns.assign(cfg.processes, {});
  for (uint32_t p = 0; p < cfg.processes; ++p) {
    if (windows)
      layout.eprocess_gfns.push_back(b.alloc());
    for (uint32_t v = 0; v < cfg.vcpus; ++v)
      layout.thread_gfns[p].push_back(b.alloc());
  }
  for (uint32_t p = 0; p < cfg.processes; ++p) {
    const auto& proc = k.processes[p];
    char name[16] = {};
    std::memcpy(name, proc.name.data(), std::min<size_t>(proc.name.size(), 15));
    if (windows) {
      auto ep = layout.eprocess_gfns[p];
      b.write64(ep, at::eprocess_unique_process_id, proc.pid);
      b.write64(ep, at::eprocess_inherited_from, proc.ppid);
      b.write(ep, at::eprocess_image_file_name, name, 15);
    }
    for (uint32_t v = 0; v < cfg.vcpus; ++v) {
      auto t = layout.thread_gfns[p][v];
      if (windows) {
        b.write64(t, at::kthread_process, va(layout.eprocess_gfns[p]));
        b.write64(t, at::ethread_cid + at::client_id_unique_process, proc.pid);
        b.write64(t, at::ethread_cid + at::client_id_unique_thread, proc.tid(v, k.os));
        continue;
      }
      int32_t tid = int32_t(proc.tid(v, k.os)), tgid = int32_t(proc.pid);
      b.write(t, at::task_pid, &tid, 4);
      b.write(t, at::task_tgid, &tgid, 4);
      // A process's parent is its parent's main thread; the first process's is none.
      auto parent = p == 0 ? 0 : va(layout.thread_gfns[(p - 1) / 2][0]);
      b.write64(t, at::task_real_parent, parent);
      b.write(t, at::task_comm, name, 16);
    }
  }
}

// Lays out the page tables, then each VCPU's pages, taking pages from `b`'s top down.
void lay_out(const domain_config& cfg, const program& code, uint64_t stack_pages, table_builder& b,
             guest_layout& layout) {
  // The kernel half, shared: PML4[511] of every process points to the same PDPT. 2 MiB pages;
  // RAM not filling its last 2 MiB (an odd memory_mib) ends in 4 KiB pages, and so do the
  // regions holding module pages: a module page comes and goes by its own PTE.
  constexpr auto kernel_flags = pte::present | pte::writable;
  auto holds_module = [&](uint64_t at, uint64_t end) {
    return code.has_module() && drv::pa_of(code.first_module_gfn()) < end &&
           drv::pa_of(code.last_module_gfn()) >= at;
  };
  auto kernel_pdpt = b.alloc();
  layout.first_module_gfn = code.first_module_gfn();
  for (uint64_t at = 0; at < layout.linear_bytes; at += large_page) {
    auto va = layout.kernel.va_of(at);
    auto pd = b.next(kernel_pdpt, drv::table_index(va, 3), kernel_flags);
    auto end = std::min(at + large_page, layout.linear_bytes);
    bool module = holds_module(at, end);
    if (end == at + large_page && !module) {
      b.entry(pd, drv::table_index(va, 2)) = at | kernel_flags | pte::large;
      continue;
    }
    auto pt = b.next(pd, drv::table_index(va, 2), kernel_flags);
    if (module)
      layout.module_table_gfns.push_back(pt);
    for (auto pa = at; pa < end; pa += drv::page_size) {
      auto index = drv::table_index(layout.kernel.va_of(pa), 1);
      if (code.is_module_gfn(drv::gfn_of(pa))) {
        // Out until the loader stores it present: the frame stays, as in a PTE on its way in.
        b.entry(pt, index) = pa | pte::writable;
        layout.module_ptes.push_back(drv::pa_of(pt) + 8 * index);
      } else {
        // Accessed already: a walk through the module's table writes module entries only.
        b.entry(pt, index) = pa | kernel_flags | (module ? pte::accessed : 0);
      }
    }
  }

  std::vector<drv::gfn_t> pml4s;
  for (uint32_t p = 0; p < cfg.processes; ++p) {
    auto pml4 = b.alloc();
    b.entry(pml4, drv::table_index(layout.kernel.va_of(0), 4)) =
      drv::pa_of(kernel_pdpt) | kernel_flags;
    pml4s.push_back(pml4);
    layout.processes.push_back({drv::pa_of(pml4), user_strings_base});
  }

  // Each VCPU's pages. Taken downwards while the addresses go up: a string that crosses a
  // page boundary is not contiguous in physical memory, as in a real guest.
  constexpr auto data = pte::present | pte::writable | pte::user | pte::no_execute;
  auto stack_stride = (stack_pages + 1) * drv::page_size;  // with a guard page under it
  stack_stride = (stack_stride + user_slot_stride - 1) / user_slot_stride * user_slot_stride;
  auto map_everywhere = [&](uint64_t va, uint64_t value) {
    for (auto pml4 : pml4s)
      b.map_user(pml4, va, value);
  };
  for (uint32_t i = 0; i < cfg.vcpus; ++i) {
    vcpu_layout v;
    v.process = i % cfg.processes;
    v.kernel_strings_gfn = b.alloc();
    v.percpu_gfn = b.alloc();
    v.strings_va = user_strings_base + user_slot_stride * (i + 1);
    for (unsigned k = 0; k < string_pages; ++k) {
      v.string_gfns[k] = b.alloc();
      map_everywhere(v.strings_va + k * drv::page_size, drv::pa_of(v.string_gfns[k]) | data);
    }
    v.stack_top = user_stack_top - i * stack_stride;
    v.stack_low = v.stack_top - stack_pages * drv::page_size;
    for (uint64_t k = 0; k < stack_pages; ++k) {
      v.stack_gfns.push_back(b.alloc());
      map_everywhere(v.stack_low + k * drv::page_size, drv::pa_of(v.stack_gfns.back()) | data);
    }
    layout.vcpus.push_back(std::move(v));
  }
  lay_out_kernel(cfg, b, layout);
  for (uint32_t i = 0; i < cfg.vcpus; ++i) {  // each VCPU's current thread, at boot
    const auto& v = layout.vcpus[i];
    auto thread = layout.kernel.va_of(drv::pa_of(layout.thread_gfns[v.process][i]));
    if (layout.kernel.os == drv::kernel_os::windows_kernel)
      b.write64(v.percpu_gfn, layout_of::kpcr_prcb + layout_of::kprcb_current_thread, thread);
    else
      b.write64(v.percpu_gfn, layout_of::current_task, thread);
  }
  // The not-present page: its PTE keeps a frame with the present bit clear, as a page on its
  // way out does (Windows' transition PTEs), so a walker that ignores the bit reads text.
  for (auto pml4 : pml4s)
    b.map_user(pml4, user_strings_base,
               drv::pa_of(layout.vcpus[0].kernel_strings_gfn) | (data & ~pte::present));
}

}  // namespace

caf::expected<guest_image> build_guest(const domain_config& cfg, const program& code) {
  if (cfg.processes == 0 || cfg.processes > 64)
    return make_error(ec::invalid_argument, "processes must be 1 to 64");
  guest_image image;
  auto& layout = image.layout;
  layout.signatures = draw_signatures(cfg.workload.seed, code.functions().size());
  auto need = worst_stack(code, layout.signatures, cfg.abi);
  layout.max_call_depth = need.frames;
  // The root's caller (rsp 8 below the top) and some slack.
  auto stack_pages =
    std::max<uint64_t>(min_stack_pages, (need.bytes + 8 + 256 + drv::page_mask) / drv::page_size);
  layout.linear_bytes = std::min(cfg.memory_mib << 20, max_linear_bytes);
  if (code.first_code_gfn() == 0)
    return make_error(ec::invalid_argument,
                      "sim guest: code_base_gfn must be at least 1 (the kernel image's first "
                      "page lies below the code)");
  if (code.has_module() && drv::pa_of(code.last_module_gfn() + 1) > layout.linear_bytes)
    return make_error(ec::invalid_argument,
                      "sim guest: the module's pages must lie in the kernel's map of RAM (its "
                      "first " +
                        std::to_string(layout.linear_bytes >> 20) + " MiB)");
  layout.kernel = make_kernel(cfg, code, layout.linear_bytes);
  layout.loader_store_pa = drv::pa_of(layout.kernel.image_gfn, layout_of::loader_store_offset);
  auto top = drv::gfn_of(layout.linear_bytes) - 1;  // reserved pages must be in the linear map

  // Counted first, from a top far above RAM: a guest too large for its memory must not have
  // its tables' addresses wrap below gfn 0 while it is built.
  table_builder dry{drv::gfn_t{1} << 32};
  auto scratch = layout;
  lay_out(cfg, code, stack_pages, dry, scratch);
  auto last_data = code.last_data_gfn();
  if (top <= last_data || top - last_data < dry.used()) {
    auto need_mib = (drv::pa_of(last_data + 1 + dry.used()) + (1 << 20) - 1) >> 20;
    return make_error(ec::invalid_argument,
                      "sim guest: page tables, stacks and string buffers need " +
                        std::to_string(dry.used()) +
                        " pages at the top of guest memory, above"
                        " the code and data (which end at gfn " +
                        std::to_string(last_data) + "): " + std::to_string(need_mib) +
                        " MiB of guest memory, the domain"
                        " has " +
                        std::to_string(cfg.memory_mib) + " MiB");
  }
  table_builder b{top};
  lay_out(cfg, code, stack_pages, b, layout);
  layout.last_reserved_gfn = top;
  layout.first_reserved_gfn = top - (b.used() - 1);
  image.pages = b.take();
  image.image_page = image_page(layout.kernel);
  return image;
}

}  // namespace vmitap::sim
