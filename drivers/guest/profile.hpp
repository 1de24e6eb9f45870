#pragma once

// A kernel's symbol table as Volatility 3 writes it (ISF, format 6.x: dwarf2json for Linux,
// pdbconv for Windows), reduced to what vmitap uses: every symbol's address, the banner or
// the PDB identity that proves a profile matches the running kernel, and the offsets of the
// few structure fields that tell which process runs. Read streaming: a distribution kernel's
// ISF is 30-100 MB of JSON, most of it types vmitap never reads.

#include <caf/expected.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace vmitap::drv {

enum class kernel_os : uint8_t { linux_kernel, windows_kernel };
const char* to_string(kernel_os os);  ///< "linux", "windows"
std::optional<kernel_os> kernel_os_from(std::string_view name);

/// The PDB a Windows kernel was built with (ISF `metadata.windows.pdb`); the kernel's PE
/// header names the same in its CodeView record.
struct pdb_identity {
  std::string guid;  ///< 32 upper-case hex digits, no dashes, as pdbconv writes it
  uint32_t age = 0;
  std::string database;  ///< "ntkrnlmp.pdb"
  bool operator==(const pdb_identity&) const = default;
};

/// A structure field vmitap reads: `type.field` (nested fields by dots: "_KPCR.Prcb" then
/// "_KPRCB.CurrentThread" are two entries, each one level deep).
struct field_ref {
  std::string_view type;
  std::string_view field;
};

/// The fields vmitap reads from a kernel of each kind (the reader keeps these and drops every
/// other type): Linux `task_struct.{pid,tgid,comm,real_parent}` and `pcpu_hot.current_task`
/// (kernels since 6.2); Windows the KPCR → KPRCB → KTHREAD → EPROCESS chain and the thread's
/// CLIENT_ID.
std::vector<field_ref> fields_used(kernel_os os);

struct kernel_profile {
  std::string path;  ///< the file it was read from (for messages)
  kernel_os os = kernel_os::linux_kernel;
  std::string format;  ///< metadata.format, "6.x.y"
  /// Symbol name → address. Linux: the link-time virtual address; Windows: the offset from
  /// the kernel image's base.
  std::unordered_map<std::string, uint64_t> symbols;
  /// Linux: `linux_banner`'s bytes (its `constant_data`, decoded), the NUL not included.
  std::optional<std::string> banner;
  /// Windows: the PDB the kernel was built with.
  std::optional<pdb_identity> pdb;
  /// "type.field" → byte offset, for `fields_used(os)` the profile has.
  std::unordered_map<std::string, uint64_t> offsets;

  std::optional<uint64_t> symbol(std::string_view name) const;
  std::optional<uint64_t> offset(std::string_view type, std::string_view field) const;
  /// Up to `count` symbol names closest to `name` (edit distance, then name), for "did you
  /// mean" in config errors.
  std::vector<std::string> nearest(std::string_view name, size_t count = 3) const;
};

/// Reads an ISF file: plain JSON, or compressed (`.json.gz` by zlib, `.json.xz` by liblzma;
/// chosen by the file's magic bytes, not its name). A file that is not a 6.x ISF, truncated,
/// or whose keys have the wrong types fails with ec::config_invalid naming the path and the
/// key (`symbols.foo.address: expected an unsigned integer`); an unreadable one with
/// ec::io_failed.
caf::expected<kernel_profile> read_profile(const std::string& path);
/// The same from bytes already in memory (JSON, gz or xz); `path` only names it in errors.
caf::expected<kernel_profile> parse_profile(std::string_view bytes, const std::string& path);

}  // namespace vmitap::drv
