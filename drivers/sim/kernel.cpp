// The simulated kernel: names, slide, identity, processes; its image page; its ISF.

#include "drivers/sim/kernel.hpp"

#include "drivers/error.hpp"
#include "drivers/sim/domain.hpp"

#include <nlohmann/json.hpp>

#include <cstring>

namespace vmitap::sim {

namespace {

// The hottest functions (low indices are picked most) get the names tracers arm first.
constexpr const char* linux_names[] = {"do_sys_openat2",
                                       "ksys_read",
                                       "ksys_write",
                                       "vfs_read",
                                       "vfs_write",
                                       "do_filp_open",
                                       "path_openat",
                                       "__x64_sys_openat",
                                       "__x64_sys_read",
                                       "__x64_sys_write",
                                       "do_execveat_common",
                                       "bprm_execve",
                                       "kernel_clone",
                                       "do_exit",
                                       "__schedule",
                                       "pick_next_task_fair",
                                       "tcp_sendmsg",
                                       "tcp_recvmsg",
                                       "inet_accept",
                                       "__sys_connect",
                                       "__sys_bind",
                                       "sock_sendmsg",
                                       "sock_recvmsg",
                                       "do_mmap",
                                       "__do_munmap",
                                       "handle_mm_fault",
                                       "do_user_addr_fault",
                                       "filemap_read",
                                       "generic_perform_write",
                                       "ext4_file_write_iter",
                                       "ext4_file_read_iter",
                                       "security_file_open",
                                       "commit_creds",
                                       "prepare_creds",
                                       "__x64_sys_kill",
                                       "send_signal_locked",
                                       "do_nanosleep",
                                       "futex_wait",
                                       "futex_wake",
                                       "do_epoll_wait",
                                       "__x64_sys_ioctl",
                                       "do_vfs_ioctl",
                                       "kmem_cache_alloc",
                                       "kfree",
                                       "__kmalloc",
                                       "copy_process"};
constexpr const char* windows_names[] = {"NtCreateFile",
                                         "NtReadFile",
                                         "NtWriteFile",
                                         "NtClose",
                                         "NtOpenFile",
                                         "NtDeviceIoControlFile",
                                         "NtCreateUserProcess",
                                         "NtOpenProcess",
                                         "NtAllocateVirtualMemory",
                                         "NtFreeVirtualMemory",
                                         "NtProtectVirtualMemory",
                                         "NtQuerySystemInformation",
                                         "NtCreateKey",
                                         "NtOpenKey",
                                         "NtSetValueKey",
                                         "NtQueryValueKey",
                                         "NtDeleteKey",
                                         "NtMapViewOfSection",
                                         "NtUnmapViewOfSection",
                                         "NtCreateSection",
                                         "NtWaitForSingleObject",
                                         "NtTerminateProcess",
                                         "NtCreateThreadEx",
                                         "NtResumeThread",
                                         "NtSuspendThread",
                                         "NtQueueApcThread",
                                         "NtLoadDriver",
                                         "NtSetInformationThread",
                                         "NtSetInformationProcess",
                                         "NtQueryInformationProcess",
                                         "NtDuplicateObject",
                                         "NtCreateMutant",
                                         "NtCreateEvent",
                                         "NtSetEvent",
                                         "ExAllocatePoolWithTag",
                                         "ExFreePoolWithTag",
                                         "ObReferenceObjectByHandle",
                                         "ObfDereferenceObject",
                                         "PspInsertProcess",
                                         "PspCreateThread",
                                         "MmCopyVirtualMemory",
                                         "IofCallDriver",
                                         "IopCreateFile",
                                         "KeWaitForSingleObject",
                                         "KiDeliverApc",
                                         "PsLookupProcessByProcessId"};
constexpr const char* linux_processes[] = {"systemd", "sshd",         "nginx",   "bash",
                                           "cron",    "postgres",     "python3", "containerd",
                                           "dockerd", "rsyslogd",     "agetty",  "dbus-daemon",
                                           "chronyd", "redis-server", "node",    "sudo"};
constexpr const char* windows_processes[] = {
  "System",      "smss.exe",     "csrss.exe",   "wininit.exe",    "services.exe", "lsass.exe",
  "svchost.exe", "explorer.exe", "chrome.exe",  "powershell.exe", "winlogon.exe", "spoolsv.exe",
  "MsMpEng.exe", "OneDrive.exe", "notepad.exe", "cmd.exe"};

constexpr uint64_t max_slide = uint64_t{1} << 30;  // Linux: CONFIG_RANDOMIZE_BASE_MAX_OFFSET
constexpr uint64_t slide_align = uint64_t{2} << 20;

uint64_t fnv1a(std::string_view s, uint64_t h = 0xcbf29ce484222325ULL) {
  for (unsigned char c : s)
    h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

/// The build: the same seed and workload give the same kernel (and the same profile).
uint64_t build_id(const domain_config& cfg) {
  const auto& w = cfg.workload;
  auto text = std::to_string(w.seed) + "/" + std::to_string(w.functions) + "/" +
              std::to_string(w.min_function_length) + "/" + std::to_string(w.max_function_length) +
              "/" + std::to_string(w.code_base_gfn) + "/" + drv::to_string(kernel_os_of(cfg));
  if (w.module_functions > 0)  // the module moves the code after it: another build
    text += "/module " + std::to_string(w.module_functions);
  return fnv1a(text);
}

template <size_t N>
std::string name_from(const char* const (&table)[N], size_t i, const char* extra) {
  return i < N ? table[i] : std::string(extra) + std::to_string(i);
}

void put(std::array<uint64_t, drv::page_size / 8>& page, uint64_t offset, const void* data,
         size_t n) {
  std::memcpy(reinterpret_cast<std::byte*>(page.data()) + offset, data, n);
}
template <class T>
void put(std::array<uint64_t, drv::page_size / 8>& page, uint64_t offset, T value) {
  put(page, offset, &value, sizeof value);
}

}  // namespace

drv::kernel_os kernel_os_of(const domain_config& cfg) {
  return cfg.abi == drv::calling_convention::ms_x64 ? drv::kernel_os::windows_kernel
                                                    : drv::kernel_os::linux_kernel;
}

sim_kernel make_kernel(const domain_config& cfg, const program& code, uint64_t linear_bytes) {
  sim_kernel k;
  k.os = kernel_os_of(cfg);
  bool windows = k.os == drv::kernel_os::windows_kernel;
  k.image_gfn = code.first_code_gfn() - 1;
  auto id = build_id(cfg);

  // The map of RAM must end below 2^64: the slide takes what the RAM leaves of 2 GiB.
  auto room = std::min(max_slide, (uint64_t{2} << 30) - linear_bytes);
  rng r{id ^ fnv1a(cfg.name) ^ 0x6b61'736c'72ULL};
  k.slide = r.below(room / slide_align + 1) * slide_align;

  auto n = code.functions().size();
  for (size_t i = 0; i < n; ++i)
    k.function_names.push_back(windows ? name_from(windows_names, i, "KiSimRoutine")
                                       : name_from(linux_names, i, "sim_routine_"));
  // The syscall entry is the coldest function outside the module (MSR_LSTAR must always
  // translate); Windows has both entries (KVA shadow on).
  auto entry = code.first_module_function() - 1;
  k.syscall_entry = entry;
  if (windows) {
    k.function_names[entry] = "KiSystemCall64Shadow";
    if (entry >= 1)
      k.function_names[entry - 1] = "KiSystemCall64";
  } else {
    k.function_names[entry] = "entry_SYSCALL_64";
  }

  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(id));
  k.banner = std::string(
               "Linux version 6.1.0-sim-amd64 (vmitap-sim@build) (gcc (Debian "
               "12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC build ") +
             hex + "\n";
  rng g{id};
  char guid[33];
  std::snprintf(guid, sizeof guid, "%016llX%016llX", static_cast<unsigned long long>(g.next()),
                static_cast<unsigned long long>(g.next()));
  k.pdb = {guid, uint32_t(1 + id % 4), "ntkrnlmp.pdb"};

  for (uint32_t p = 0; p < cfg.processes; ++p) {
    sim_process proc;
    if (windows)
      proc.pid = p == 0 ? 4 : 0x200 * p;
    else
      proc.pid = p == 0 ? 1 : 1000 * p;
    proc.name = windows ? name_from(windows_processes, p, "worker") + (p < 16 ? "" : ".exe")
                        : name_from(linux_processes, p, "worker-");
    k.processes.push_back(std::move(proc));
  }
  for (uint32_t p = 1; p < cfg.processes; ++p)
    k.processes[p].ppid = k.processes[(p - 1) / 2].pid;
  return k;
}

std::array<uint64_t, drv::page_size / 8> image_page(const sim_kernel& k) {
  std::array<uint64_t, drv::page_size / 8> page{};
  if (k.os == drv::kernel_os::linux_kernel) {
    put(page, layout_of::banner_offset, k.banner.data(), k.banner.size());  // NUL: zeroed
    return page;
  }
  namespace at = layout_of;
  put(page, 0, uint16_t{0x5a4d});                                      // "MZ"
  put(page, 0x3c, uint32_t(at::pe_header_offset));                     // e_lfanew
  put(page, at::pe_header_offset, uint32_t{0x4550});                   // "PE\0\0"
  auto file = at::pe_header_offset + 4;                                // IMAGE_FILE_HEADER
  put(page, file, uint16_t{0x8664});                                   // AMD64
  put(page, file + 16, uint16_t{0xf0});                                // SizeOfOptionalHeader
  auto opt = file + 20;                                                // IMAGE_OPTIONAL_HEADER64
  put(page, opt, uint16_t{0x20b});                                     // PE32+
  put(page, opt + 108, uint32_t{16});                                  // NumberOfRvaAndSizes
  put(page, opt + 112 + 6 * 8, uint32_t(at::debug_directory_offset));  // [DEBUG].RVA
  put(page, opt + 112 + 6 * 8 + 4, uint32_t{28});
  auto dbg = at::debug_directory_offset;  // IMAGE_DEBUG_DIRECTORY
  put(page, dbg + 12, uint32_t{2});       // IMAGE_DEBUG_TYPE_CODEVIEW
  put(page, dbg + 16, uint32_t(24 + k.pdb.database.size() + 1));
  put(page, dbg + 20, uint32_t(at::codeview_offset));  // AddressOfRawData (RVA)
  // RSDS, the GUID as Windows stores it (Data1-3 little-endian, Data4 as bytes), the age, the
  // PDB's name.
  auto cv = at::codeview_offset;
  put(page, cv, uint32_t{0x53445352});
  auto hex = [&](size_t at, size_t digits) {
    return std::stoull(k.pdb.guid.substr(at, digits), nullptr, 16);
  };
  put(page, cv + 4, uint32_t(hex(0, 8)));
  put(page, cv + 8, uint16_t(hex(8, 4)));
  put(page, cv + 10, uint16_t(hex(12, 4)));
  for (size_t i = 0; i < 8; ++i)
    put(page, cv + 12 + i, uint8_t(hex(16 + 2 * i, 2)));
  put(page, cv + 20, k.pdb.age);
  put(page, cv + 24, k.pdb.database.data(), k.pdb.database.size());
  return page;
}

caf::expected<std::string> kernel_profile_json(const domain_config& cfg) {
  auto built = prepare_guest(cfg);  // a guest that does not fit has no profile either
  if (!built)
    return std::move(built.error());
  const auto& code = built->code;
  const auto& k = built->guest.layout.kernel;
  bool windows = k.os == drv::kernel_os::windows_kernel;
  using nlohmann::json;
  auto field = [](uint64_t offset, json type) { return json{{"offset", offset}, {"type", type}}; };
  auto base = [](const char* name) { return json{{"kind", "base"}, {"name", name}}; };
  auto pointer = json{{"kind", "pointer"}, {"subtype", base("void")}};
  auto array = [&](size_t count) {
    return json{{"kind", "array"}, {"count", count}, {"subtype", base("char")}};
  };
  json symbols = json::object();
  auto fns = code.functions();
  for (size_t i = 0; i < fns.size(); ++i)
    symbols[k.function_names[i]] = {{"address", k.symbol_value(fns[i].entry_pa)},
                                    {"type", {{"kind", "function"}}}};
  json types = json::object();
  json metadata = {{"format", "6.2.0"}, {"producer", {{"name", "vmitap-sim"}, {"version", "1"}}}};
  namespace at = layout_of;
  if (windows) {
    metadata["windows"] = {{"pdb",
                            {{"GUID", k.pdb.guid},
                             {"age", k.pdb.age},
                             {"database", k.pdb.database},
                             {"machine_type", 34404}}}};
    auto s = [](uint64_t size, json fields) {
      return json{{"kind", "struct"}, {"size", size}, {"fields", std::move(fields)}};
    };
    types["_KPCR"] =
      s(0x8000, {{"Prcb", field(at::kpcr_prcb, {{"kind", "struct"}, {"name", "_KPRCB"}})}});
    types["_KPRCB"] = s(0x7f00, {{"CurrentThread", field(at::kprcb_current_thread, pointer)}});
    types["_KTHREAD"] = s(0x430, {{"Process", field(at::kthread_process, pointer)}});
    types["_ETHREAD"] =
      s(0x500, {{"Cid", field(at::ethread_cid, {{"kind", "struct"}, {"name", "_CLIENT_ID"}})}});
    types["_CLIENT_ID"] = s(16, {{"UniqueProcess", field(at::client_id_unique_process, pointer)},
                                 {"UniqueThread", field(at::client_id_unique_thread, pointer)}});
    types["_EPROCESS"] =
      s(0x850, {{"UniqueProcessId", field(at::eprocess_unique_process_id, pointer)},
                {"InheritedFromUniqueProcessId", field(at::eprocess_inherited_from, pointer)},
                {"ImageFileName", field(at::eprocess_image_file_name, array(15))}});
  } else {
    metadata["linux"] = {{"symbols", json::array({{{"kind", "dwarf"}, {"name", "vmlinux"}}})}};
    std::string banner_b64;
    {  // constant_data is the symbol's bytes, base64 (the NUL included, as dwarf2json has it)
      static constexpr char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
      std::string raw = k.banner + '\0';
      for (size_t i = 0; i < raw.size(); i += 3) {
        uint32_t v = uint32_t(uint8_t(raw[i])) << 16;
        if (i + 1 < raw.size())
          v |= uint32_t(uint8_t(raw[i + 1])) << 8;
        if (i + 2 < raw.size())
          v |= uint8_t(raw[i + 2]);
        banner_b64 += digits[(v >> 18) & 63];
        banner_b64 += digits[(v >> 12) & 63];
        banner_b64 += i + 1 < raw.size() ? digits[(v >> 6) & 63] : '=';
        banner_b64 += i + 2 < raw.size() ? digits[v & 63] : '=';
      }
    }
    symbols["linux_banner"] = {
      {"address", k.symbol_value(drv::pa_of(k.image_gfn, at::banner_offset))},
      {"type", array(k.banner.size() + 1)},
      {"constant_data", banner_b64}};
    symbols["current_task"] = {{"address", at::current_task}, {"type", pointer}};
    types["task_struct"] = {{"kind", "struct"},
                            {"size", 0x1000},
                            {"fields",
                             {{"pid", field(at::task_pid, base("int"))},
                              {"tgid", field(at::task_tgid, base("int"))},
                              {"real_parent", field(at::task_real_parent, pointer)},
                              {"comm", field(at::task_comm, array(16))}}}};
  }
  json base_types = {
    {"int", {{"kind", "int"}, {"size", 4}, {"signed", true}, {"endian", "little"}}},
    {"char", {{"kind", "char"}, {"size", 1}, {"signed", true}, {"endian", "little"}}},
    {"void", {{"kind", "void"}, {"size", 0}, {"signed", false}, {"endian", "little"}}},
    {"pointer", {{"kind", "int"}, {"size", 8}, {"signed", false}, {"endian", "little"}}}};
  json isf = {{"metadata", metadata},
              {"base_types", base_types},
              {"user_types", types},
              {"enums", json::object()},
              {"symbols", symbols}};
  return isf.dump(1);
}

}  // namespace vmitap::sim
