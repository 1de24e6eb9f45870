// Kernel profiles (Volatility 3 ISF): what a Linux and a Windows profile give, the same from
// plain, gzip and xz files and in any key order, and every hostile input failing with the key
// it was reading.

#include "drivers/guest/profile.hpp"
#include "drivers/error.hpp"
#include "tests/support/temp_files.hpp"

#include <gtest/gtest.h>
#include <lzma.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <random>

using namespace vmitap;
using namespace vmitap::drv;
using namespace vmitap::testing;

namespace {

// As dwarf2json writes it (fewer of everything): task_struct's fields with their type
// objects, pcpu_hot (kernels >= 6.2), a Windows type that a Linux profile drops.
const std::string linux_isf = R"({
  "metadata": {
    "linux": {"symbols": [{"kind": "system-map", "name": "System.map", "hash_type": "sha256",
                           "hash_value": "3f1c"}]},
    "producer": {"version": "0.8.0", "name": "dwarf2json"},
    "format": "6.2.0"
  },
  "base_types": {
    "int": {"size": 4, "signed": true, "kind": "int", "endian": "little"},
    "char": {"size": 1, "signed": true, "kind": "char", "endian": "little"}
  },
  "user_types": {
    "task_struct": {
      "size": 9792,
      "fields": {
        "state": {"type": {"kind": "base", "name": "unsigned int"}, "offset": 24},
        "pid": {"type": {"kind": "base", "name": "int"}, "offset": 2456},
        "tgid": {"type": {"kind": "base", "name": "int"}, "offset": 2460},
        "real_parent": {"type": {"kind": "pointer", "subtype": {"kind": "struct",
                        "name": "task_struct"}}, "offset": 2472},
        "comm": {"type": {"kind": "array", "count": 16, "subtype": {"kind": "base",
                 "name": "char"}}, "offset": 3016}
      },
      "kind": "struct"
    },
    "pcpu_hot": {
      "size": 64,
      "fields": {
        "current_task": {"type": {"kind": "pointer", "subtype": {"kind": "struct",
                         "name": "task_struct"}}, "offset": 0},
        "preempt_count": {"type": {"kind": "base", "name": "int"}, "offset": 8}
      },
      "kind": "struct"
    },
    "_EPROCESS": {"size": 2944, "fields": {"UniqueProcessId": {"offset": 1088}}, "kind": "struct"},
    "list_head": {"size": 16, "fields": {"next": {"offset": 0}, "prev": {"offset": 8}},
                  "kind": "struct"}
  },
  "enums": {
    "pid_type": {"size": 4, "base": "unsigned int", "constants": {"PIDTYPE_PID": 0,
                 "PIDTYPE_TGID": 1}}
  },
  "symbols": {
    "do_sys_open": {"type": {"kind": "function"}, "address": 18446744071581011968},
    "entry_SYSCALL_64": {"type": {"kind": "function"}, "address": 18446744071595589632},
    "linux_banner": {
      "type": {"kind": "array", "count": 190, "subtype": {"kind": "base", "name": "char"}},
      "constant_data": "TGludXggdmVyc2lvbiA2LjEuMC0xOC1hbWQ2NCAoZGViaWFuLWtlcm5lbEBsaXN0cy5kZWJpYW4ub3JnKSAoZ2NjLTEyIChEZWJpYW4gMTIuMi4wLTE0KSAxMi4yLjAsIEdOVSBsZCAoR05VIEJpbnV0aWxzIGZvciBEZWJpYW4pIDIuNDApICMxIFNNUCBQUkVFTVBUX0RZTkFNSUMgRGViaWFuIDYuMS43Ni0xICgyMDI0LTAyLTAxKQoA",
      "address": 18446744071603372224
    },
    "init_task": {"type": {"kind": "struct", "name": "task_struct"}, "address": 18446744071610000000}
  }
})";

const std::string banner =
  "Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) "
  "12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 "
  "(2024-02-01)\n";

// The same profile, every object's keys in another order: metadata last, a symbol's address
// before its constant_data, the OS after the format.
const std::string linux_isf_reordered = R"({
  "symbols": {
    "init_task": {"address": 18446744071610000000, "type": {"kind": "struct", "name": "task_struct"}},
    "linux_banner": {
      "address": 18446744071603372224,
      "constant_data": "TGludXggdmVyc2lvbiA2LjEuMC0xOC1hbWQ2NCAoZGViaWFuLWtlcm5lbEBsaXN0cy5kZWJpYW4ub3JnKSAoZ2NjLTEyIChEZWJpYW4gMTIuMi4wLTE0KSAxMi4yLjAsIEdOVSBsZCAoR05VIEJpbnV0aWxzIGZvciBEZWJpYW4pIDIuNDApICMxIFNNUCBQUkVFTVBUX0RZTkFNSUMgRGViaWFuIDYuMS43Ni0xICgyMDI0LTAyLTAxKQoA",
      "type": {"subtype": {"name": "char", "kind": "base"}, "count": 190, "kind": "array"}
    },
    "entry_SYSCALL_64": {"address": 18446744071595589632, "type": {"kind": "function"}},
    "do_sys_open": {"address": 18446744071581011968, "type": {"kind": "function"}}
  },
  "enums": {},
  "user_types": {
    "pcpu_hot": {"kind": "struct", "fields": {"current_task": {"offset": 0}}, "size": 64},
    "_EPROCESS": {"kind": "struct", "fields": {"UniqueProcessId": {"offset": 1088}}},
    "task_struct": {
      "kind": "struct",
      "fields": {
        "comm": {"offset": 3016, "type": {"kind": "array"}},
        "real_parent": {"offset": 2472},
        "tgid": {"offset": 2460},
        "pid": {"offset": 2456}
      },
      "size": 9792
    }
  },
  "base_types": {"int": {"endian": "little", "kind": "int", "signed": true, "size": 4}},
  "metadata": {"format": "6.2.0", "producer": {"name": "dwarf2json"}, "linux": {"symbols": []}}
})";

// As pdbconv writes it: the PDB's identity in metadata.windows.pdb, addresses as offsets from
// the image base.
const std::string windows_isf = R"({
  "metadata": {
    "producer": {"name": "pdbconv", "version": "0.1.0"},
    "format": "6.1.0",
    "windows": {
      "pe": {"major": 10, "minor": 0, "revision": 19041},
      "pdb": {"GUID": "6B4A8D0A3F0F4B1E8C6A62D4D3C0C1E1", "age": 1, "database": "ntkrnlmp.pdb",
              "machine_type": 34404}
    }
  },
  "base_types": {"unsigned long long": {"size": 8, "signed": false, "kind": "int",
                                        "endian": "little"}},
  "user_types": {
    "_KPCR": {"size": 14848, "fields": {"Prcb": {"type": {"kind": "struct", "name": "_KPRCB"},
              "offset": 384}}, "kind": "struct"},
    "_KPRCB": {"size": 14080, "fields": {"CurrentThread": {"offset": 8}}, "kind": "struct"},
    "_KTHREAD": {"size": 1536, "fields": {"Process": {"offset": 544}}, "kind": "struct"},
    "_ETHREAD": {"size": 2304, "fields": {"Cid": {"offset": 1208}}, "kind": "struct"},
    "_CLIENT_ID": {"size": 16, "fields": {"UniqueProcess": {"offset": 0},
                   "UniqueThread": {"offset": 8}}, "kind": "struct"},
    "_EPROCESS": {"size": 2944, "fields": {"UniqueProcessId": {"offset": 1088},
                  "ImageFileName": {"offset": 1448}, "Peb": {"offset": 1360},
                  "InheritedFromUniqueProcessId": {"offset": 1344}}, "kind": "struct"},
    "task_struct": {"size": 9792, "fields": {"pid": {"offset": 2456}}, "kind": "struct"}
  },
  "enums": {"_POOL_TYPE": {"size": 4, "base": "int", "constants": {"NonPagedPool": 0}}},
  "symbols": {
    "KiSystemCall64": {"address": 4211008},
    "KiSystemCall64Shadow": {"address": 10485824},
    "PsActiveProcessHead": {"address": 13692960}
  }
})";

std::string gzip(const std::string& text) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, text.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  z.avail_in = uInt(text.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = uInt(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string xz(const std::string& text) {
  std::string out(lzma_stream_buffer_bound(text.size()), '\0');
  size_t written = 0;
  EXPECT_EQ(lzma_easy_buffer_encode(1, LZMA_CHECK_CRC64, nullptr,
                                    reinterpret_cast<const uint8_t*>(text.data()), text.size(),
                                    reinterpret_cast<uint8_t*>(out.data()), &written, out.size()),
            LZMA_OK);
  out.resize(written);
  return out;
}

/// The error's text, or "" if the profile was read; every such error is config_invalid.
std::string problem(const caf::expected<kernel_profile>& p) {
  if (p)
    return "";
  EXPECT_EQ(code_of(p.error()), ec::config_invalid) << render(p.error());
  return context_of(p.error());
}

std::string problem_of(const std::string& text, const std::string& path = "x.json") {
  return problem(parse_profile(text, path));
}

/// `text` with its first `from` replaced by `to` (which must be there).
std::string with(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos)
    text.replace(at, from.size(), to);
  return text;
}

void expect_linux_profile(const kernel_profile& p) {
  EXPECT_EQ(p.os, kernel_os::linux_kernel);
  EXPECT_EQ(p.format, "6.2.0");
  EXPECT_EQ(p.symbols.size(), 4u);
  EXPECT_EQ(p.symbol("do_sys_open"), 18446744071581011968u);
  EXPECT_EQ(p.symbol("entry_SYSCALL_64"), 18446744071595589632u);
  EXPECT_EQ(p.symbol("linux_banner"), 18446744071603372224u);
  EXPECT_EQ(p.symbol("init_task"), 18446744071610000000u);
  EXPECT_EQ(p.symbol("do_sys_close"), std::nullopt);
  EXPECT_EQ(p.banner, banner);
  EXPECT_EQ(p.pdb, std::nullopt);
  EXPECT_EQ(p.offset("task_struct", "pid"), 2456u);
  EXPECT_EQ(p.offset("task_struct", "tgid"), 2460u);
  EXPECT_EQ(p.offset("task_struct", "real_parent"), 2472u);
  EXPECT_EQ(p.offset("task_struct", "comm"), 3016u);
  EXPECT_EQ(p.offset("pcpu_hot", "current_task"), 0u);
  // Fields and types vmitap does not read, and the other OS's, are dropped.
  EXPECT_EQ(p.offset("task_struct", "state"), std::nullopt);
  EXPECT_EQ(p.offset("pcpu_hot", "preempt_count"), std::nullopt);
  EXPECT_EQ(p.offset("_EPROCESS", "UniqueProcessId"), std::nullopt);
  EXPECT_EQ(p.offsets.size(), 5u);
}

}  // namespace

TEST(profile, fields_used_are_the_task_chain_of_each_os) {
  auto names = [](kernel_os os) {
    std::vector<std::string> out;
    for (auto& f : fields_used(os))
      out.push_back(std::string(f.type) + "." + std::string(f.field));
    return out;
  };
  EXPECT_EQ(names(kernel_os::linux_kernel),
            (std::vector<std::string>{"task_struct.pid", "task_struct.tgid", "task_struct.comm",
                                      "task_struct.real_parent", "pcpu_hot.current_task"}));
  EXPECT_EQ(names(kernel_os::windows_kernel),
            (std::vector<std::string>{"_KPCR.Prcb", "_KPRCB.CurrentThread", "_KTHREAD.Process",
                                      "_ETHREAD.Cid", "_CLIENT_ID.UniqueThread",
                                      "_EPROCESS.UniqueProcessId", "_EPROCESS.ImageFileName",
                                      "_EPROCESS.InheritedFromUniqueProcessId"}));
}

TEST(profile, os_names_round_trip) {
  for (auto os : {kernel_os::linux_kernel, kernel_os::windows_kernel})
    EXPECT_EQ(kernel_os_from(to_string(os)), os);
  EXPECT_STREQ(to_string(kernel_os::linux_kernel), "linux");
  EXPECT_STREQ(to_string(kernel_os::windows_kernel), "windows");
  EXPECT_EQ(kernel_os_from("Linux"), std::nullopt);
  EXPECT_EQ(kernel_os_from(""), std::nullopt);
}

TEST(profile, reads_a_linux_isf_symbols_banner_and_task_offsets) {
  auto p = parse_profile(linux_isf, "linux.json");
  ASSERT_TRUE(p) << render(p.error());
  EXPECT_EQ(p->path, "linux.json");
  expect_linux_profile(*p);
}

TEST(profile, reads_a_windows_isf_pdb_identity_and_offsets) {
  auto p = parse_profile(windows_isf, "ntkrnlmp.json");
  ASSERT_TRUE(p) << render(p.error());
  EXPECT_EQ(p->os, kernel_os::windows_kernel);
  EXPECT_EQ(p->format, "6.1.0");
  EXPECT_EQ(p->pdb, (pdb_identity{"6B4A8D0A3F0F4B1E8C6A62D4D3C0C1E1", 1, "ntkrnlmp.pdb"}));
  EXPECT_EQ(p->banner, std::nullopt);
  EXPECT_EQ(p->symbol("KiSystemCall64"), 4211008u);
  EXPECT_EQ(p->symbol("KiSystemCall64Shadow"), 10485824u);
  EXPECT_EQ(p->symbols.size(), 3u);
  EXPECT_EQ(p->offset("_KPCR", "Prcb"), 384u);
  EXPECT_EQ(p->offset("_KPRCB", "CurrentThread"), 8u);
  EXPECT_EQ(p->offset("_KTHREAD", "Process"), 544u);
  EXPECT_EQ(p->offset("_ETHREAD", "Cid"), 1208u);
  EXPECT_EQ(p->offset("_CLIENT_ID", "UniqueProcess"), std::nullopt) << "not used: not kept";
  EXPECT_EQ(p->offset("_CLIENT_ID", "UniqueThread"), 8u);
  EXPECT_EQ(p->offset("_EPROCESS", "UniqueProcessId"), 1088u);
  EXPECT_EQ(p->offset("_EPROCESS", "ImageFileName"), 1448u);
  EXPECT_EQ(p->offset("_EPROCESS", "InheritedFromUniqueProcessId"), 1344u);
  EXPECT_EQ(p->offset("_EPROCESS", "Peb"), std::nullopt);
  EXPECT_EQ(p->offset("task_struct", "pid"), std::nullopt);
  EXPECT_EQ(p->offsets.size(), 8u);
}

TEST(profile, reads_keys_in_any_order_metadata_last) {
  auto p = parse_profile(linux_isf_reordered, "x.json");
  ASSERT_TRUE(p) << render(p.error());
  expect_linux_profile(*p);
}

TEST(profile, reads_gz_and_xz_the_same_as_plain) {
  auto dir = fresh_temp_dir("profile-formats");
  std::ofstream(dir + "/k.json") << linux_isf;
  std::ofstream(dir + "/k.json.gz") << gzip(linux_isf);
  std::ofstream(dir + "/k.json.xz") << xz(linux_isf);
  // The format is in the bytes, not the name.
  std::ofstream(dir + "/gz-named.json") << gzip(linux_isf);
  for (auto name : {"k.json", "k.json.gz", "k.json.xz", "gz-named.json"}) {
    SCOPED_TRACE(name);
    auto p = read_profile(dir + "/" + name);
    ASSERT_TRUE(p) << render(p.error());
    EXPECT_EQ(p->path, dir + "/" + name);
    expect_linux_profile(*p);
  }
  // And from memory.
  for (auto& bytes : {gzip(windows_isf), xz(windows_isf)}) {
    auto p = parse_profile(bytes, "w");
    ASSERT_TRUE(p) << render(p.error());
    EXPECT_EQ(p->offsets.size(), 8u);
  }
}

TEST(profile, reads_a_stream_larger_than_its_buffers) {
  // Enough symbols that every layer refills many times, gzip members back to back as
  // `cat a.gz b.gz` makes them.
  std::string symbols;
  for (int i = 0; i < 20000; ++i)
    symbols += "\"sym_" + std::to_string(i) + "\": {\"type\": {\"kind\": \"function\"}, " +
               "\"address\": " + std::to_string(1000 + i) + "},\n";
  auto text = with(linux_isf, "\"symbols\": {", "\"symbols\": {\n" + symbols);
  auto half = text.size() / 2;
  auto expect_all = [&](const caf::expected<kernel_profile>& p) {
    ASSERT_TRUE(p) << render(p.error());
    EXPECT_EQ(p->symbols.size(), 20004u);
    EXPECT_EQ(p->symbol("sym_19999"), 20999u);
    EXPECT_EQ(p->banner, banner);
  };
  auto dir = fresh_temp_dir("profile-big");
  for (auto& bytes :
       {text, gzip(text), xz(text), gzip(text.substr(0, half)) + gzip(text.substr(half))}) {
    expect_all(parse_profile(bytes, "big"));
    std::ofstream(dir + "/big") << bytes;
    expect_all(read_profile(dir + "/big"));
  }
}

TEST(profile, an_unreadable_file_is_io_failed_with_its_errno) {
  auto p = read_profile(process_temp_dir() + "/no-such-profile.json");
  ASSERT_FALSE(p);
  EXPECT_EQ(code_of(p.error()), ec::io_failed);
  EXPECT_EQ(errno_of(p.error()), ENOENT);
  EXPECT_NE(context_of(p.error()).find("no-such-profile.json"), std::string::npos);
  // A directory opens, and fails its first read.
  auto dir = read_profile(fresh_temp_dir("profile-dir"));
  ASSERT_FALSE(dir);
  EXPECT_EQ(code_of(dir.error()), ec::io_failed);
  EXPECT_EQ(errno_of(dir.error()), EISDIR);
}

TEST(profile, an_empty_file_is_named_empty) {
  auto path = write_temp_file("empty.json", "");
  EXPECT_EQ(problem(read_profile(path)), path + ": empty file");
  EXPECT_EQ(problem_of(gzip(""), "e.json.gz"), "e.json.gz: empty file");
}

TEST(profile, truncated_json_names_the_key_and_byte_offset) {
  // The offset is nlohmann's: the byte it could not read, counted from 1.
  auto cut = linux_isf.find("\"address\": 18446744071595589632");
  EXPECT_EQ(problem_of(linux_isf.substr(0, cut)),
            "x.json: symbols.entry_SYSCALL_64: invalid JSON at byte " + std::to_string(cut + 1) +
              ": syntax error while parsing object key - unexpected end of input; expected "
              "string literal");
  EXPECT_EQ(problem_of(R"({"metadata": {"format": "6.2.0", "linux": {)"),
            "x.json: metadata.linux: invalid JSON at byte 44: syntax error while parsing object "
            "key - unexpected end of input; expected string literal");
  EXPECT_EQ(problem_of(R"({"symbols": {"a": {"address": 12x}}})"),
            "x.json: symbols.a: invalid JSON at byte 33: syntax error while parsing "
            "object - invalid literal; last read: '12x'; expected '}'");
}

TEST(profile, error_text_is_valid_utf8_whatever_the_input) {
  // nlohmann quotes the bytes it read last as they are: past ASCII they become \xNN.
  EXPECT_EQ(problem_of("{\"a\": \xff\xfe}"),
            "x.json: a: invalid JSON at byte 7: syntax error while parsing value - invalid "
            "literal; last read: '\"a\": \\xff'");
  // A format shown in the message is cut at a character boundary, not inside one.
  auto p = parse_profile(
    with(linux_isf, "\"format\": \"6.2.0\"", "\"format\": \"" + std::string(39, '7') + "é!\""),
    "x.json");
  EXPECT_EQ(problem(p),
            "x.json: metadata.format: \"" + std::string(39, '7') + "…\" is not ISF format 6.x");
}

TEST(profile, truncated_gz_and_xz_are_named_truncated) {
  for (size_t cut : {size_t{1}, size_t{10}}) {
    auto gz = gzip(linux_isf);
    EXPECT_EQ(problem_of(gz.substr(0, gz.size() - cut), "p.json.gz"),
              "p.json.gz: truncated gzip stream");
    auto x = xz(linux_isf);
    EXPECT_EQ(problem_of(x.substr(0, x.size() - cut), "p.json.xz"),
              "p.json.xz: truncated xz stream");
  }
  auto gz = gzip(linux_isf);
  EXPECT_EQ(problem_of(gz.substr(0, gz.size() / 2), "p.json.gz"),
            "p.json.gz: truncated gzip stream");
  EXPECT_EQ(problem_of(std::string("\x1f\x8b", 2), "p.json.gz"),
            "p.json.gz: truncated gzip stream");
  // Corrupt: zlib's or liblzma's word for it.
  gz[gz.size() - 6] ^= 0x55;  // the CRC
  EXPECT_EQ(problem_of(gz, "p.json.gz"), "p.json.gz: gzip: incorrect data check");
  auto x = xz(linux_isf);
  x[x.size() / 2] ^= 0x55;
  EXPECT_EQ(problem_of(x, "p.json.xz"), "p.json.xz: xz: corrupt compressed data");
}

TEST(profile, values_of_the_wrong_type_name_their_key) {
  struct bad {
    std::string text;
    std::string expected;
  };
  const std::string address = "\"address\": 18446744071581011968";
  std::vector<bad> cases = {
    {with(linux_isf, address, "\"address\": \"0xffffffff81000000\""),
     "x.json: symbols.do_sys_open.address: expected an unsigned integer"},
    {with(linux_isf, address, "\"address\": -16"),
     "x.json: symbols.do_sys_open.address: expected an unsigned integer"},
    {with(linux_isf, address, "\"address\": 1.5"),
     "x.json: symbols.do_sys_open.address: expected an unsigned integer"},
    {with(linux_isf, address, "\"address\": 18446744073709551616"),  // 2^64
     "x.json: symbols.do_sys_open.address: expected an unsigned integer"},
    {with(linux_isf, address, "\"address\": {}"),
     "x.json: symbols.do_sys_open.address: expected an unsigned integer"},
    {with(linux_isf, "\"format\": \"6.2.0\"", "\"format\": 6"),
     "x.json: metadata.format: expected a string"},
    {with(linux_isf, "\"format\": \"6.2.0\"", "\"format\": \"5.0.0\""),
     "x.json: metadata.format: \"5.0.0\" is not ISF format 6.x"},
    {with(linux_isf, "\"format\": \"6.2.0\"", "\"format\": \"60.1\""),
     "x.json: metadata.format: \"60.1\" is not ISF format 6.x"},
    {with(linux_isf, "\"symbols\": {", "\"symbols\": [], \"x\": {"),
     "x.json: symbols: expected an object"},
    {with(linux_isf, "\"user_types\": {", "\"user_types\": \"none\", \"x\": {"),
     "x.json: user_types: expected an object"},
    {with(linux_isf, "\"enums\": {", "\"enums\": 3, \"x\": {"),
     "x.json: enums: expected an object"},
    {with(linux_isf, "\"base_types\": {", "\"base_types\": null, \"x\": {"),
     "x.json: base_types: expected an object"},
    {with(linux_isf, "\"metadata\": {", "\"metadata\": [], \"x\": {"),
     "x.json: metadata: expected an object"},
    {with(linux_isf, "\"linux\": {", "\"linux\": true, \"x\": {"),
     "x.json: metadata.linux: expected an object"},
    {with(linux_isf, "\"do_sys_open\": {\"type\": {\"kind\": \"function\"}, " + address + "}",
          "\"do_sys_open\": 5"),
     "x.json: symbols.do_sys_open: expected an object"},
    {with(linux_isf, "\"offset\": 2456", "\"offset\": \"2456\""),
     "x.json: user_types.task_struct.fields.pid.offset: expected an unsigned integer"},
    {with(linux_isf, "\"fields\": {", "\"fields\": [], \"x\": {"),
     "x.json: user_types.task_struct.fields: expected an object"},
    {with(linux_isf, "\"constant_data\": \"", "\"constant_data\": \"*"),
     "x.json: symbols.linux_banner.constant_data: not valid base64"},
    {with(linux_isf, "\"constant_data\": ", "\"constant_data\": 7, \"x\": "),
     "x.json: symbols.linux_banner.constant_data: expected a string"},
    {with(windows_isf, "\"age\": 1", "\"age\": 4294967296"),
     "x.json: metadata.windows.pdb.age: expected an unsigned 32-bit integer"},
    {with(windows_isf, "\"GUID\": \"6B4A8D0A3F0F4B1E8C6A62D4D3C0C1E1\"", "\"GUID\": 1"),
     "x.json: metadata.windows.pdb.GUID: expected a string"},
    {"[]", "x.json: expected a JSON object at the top level"},
    {"\"isf\"", "x.json: expected a JSON object at the top level"},
  };
  for (auto& c : cases)
    EXPECT_EQ(problem_of(c.text), c.expected) << c.text.substr(0, 200);
}

TEST(profile, values_not_kept_may_have_any_type) {
  // Only what is kept is checked: a field vmitap does not read, another symbol key.
  auto text = with(linux_isf, "\"offset\": 24", "\"offset\": \"24\"");
  text = with(text, "{\"kind\": \"function\"}, \"address\"",
              "{\"kind\": \"function\"}, \"size\": -1.5e3, \"address\"");
  auto p = parse_profile(text, "x.json");
  ASSERT_TRUE(p) << render(p.error());
  expect_linux_profile(*p);
}

TEST(profile, a_missing_section_or_key_is_named) {
  struct bad {
    std::string text;
    std::string expected;
  };
  std::vector<bad> cases = {
    {with(linux_isf, "\"symbols\": {", "\"not_symbols\": {"), "x.json: missing key \"symbols\""},
    {with(linux_isf, "\"user_types\": {", "\"types\": {"), "x.json: missing key \"user_types\""},
    {with(linux_isf, "\"base_types\": {", "\"base\": {"), "x.json: missing key \"base_types\""},
    {with(linux_isf, "\"format\": \"6.2.0\"", "\"version\": \"6.2.0\""),
     "x.json: missing key \"metadata.format\""},
    {with(linux_isf, "\"linux\": {", "\"os\": {"),
     "x.json: missing key \"metadata.linux\" or \"metadata.windows\""},
    {with(linux_isf, "\"metadata\": {", "\"meta\": {"), "x.json: missing key \"metadata\""},
    {"{}", "x.json: missing key \"metadata\""},
    {with(windows_isf, "\"age\": 1,", ""), "x.json: metadata.windows.pdb: missing key \"age\""},
    {with(linux_isf, "\"producer\"", "\"windows\": {}, \"producer\""),
     "x.json: metadata.windows: a profile is of one OS: metadata has both \"linux\" and "
     "\"windows\""},
  };
  for (auto& c : cases)
    EXPECT_EQ(problem_of(c.text), c.expected) << c.text.substr(0, 200);
}

TEST(profile, a_string_over_1_mib_is_refused_at_its_key) {
  std::string huge(2 << 20, 'a');
  EXPECT_EQ(problem_of(with(linux_isf, "\"kind\": \"int\"", "\"kind\": \"" + huge + "\"")),
            "x.json: base_types.int.kind: string longer than 1 MiB");
  EXPECT_EQ(problem_of(gzip(with(linux_isf, "\"function\"", "\"" + huge + "\"")), "x.gz"),
            "x.gz: symbols.do_sys_open.type.kind: string longer than 1 MiB");
  // A key is refused in the object that holds it.
  EXPECT_EQ(problem_of(with(linux_isf, "\"do_sys_open\"", "\"" + huge + "\"")),
            "x.json: symbols: string longer than 1 MiB");
  // As is whitespace, which nlohmann's lexer also holds on to.
  EXPECT_EQ(problem_of(with(linux_isf, "\"enums\": {", "\"enums\": {" + std::string(2 << 20, ' '))),
            "x.json: enums: more than 1 MiB between two strings");
  // Right at the bound it is a string like any other.
  std::string most(1 << 20, 'b');
  auto p = parse_profile(with(linux_isf, "\"kind\": \"int\"", "\"kind\": \"" + most + "\""), "x");
  EXPECT_TRUE(p) << render(p.error());
}

TEST(profile, nesting_deeper_than_64_is_refused) {
  std::string deep;
  std::string path = "x.json: enums";
  for (int i = 0; i < 100; ++i)
    deep += "{\"a\": ";
  deep += "1";
  for (int i = 0; i < 100; ++i)
    deep += "}";
  // enums is depth 2: its value's objects are 3 and on; the 65th is refused.
  for (int i = 3; i < 65; ++i)
    path += ".a";
  EXPECT_EQ(
    problem_of(with(linux_isf, "\"enums\": {", "\"enums\": {\"a\": " + deep + ", \"x\": {")),
    path + ".a: nested deeper than 64");
  std::string arrays(100, '[');
  EXPECT_EQ(
    problem_of(with(linux_isf, "\"enums\": {", "\"enums\": {\"e\": " + arrays)),
    "x.json: enums.e" +
      [] {
        std::string s;
        for (int i = 3; i < 65; ++i)
          s += "[0]";
        return s;
      }() +
      ": nested deeper than 64");
  // 64 deep is fine.
  std::string ok;
  for (int i = 3; i <= 64; ++i)
    ok += "[";
  ok += std::string(64 - 2, ']');
  auto p = parse_profile(with(linux_isf, "\"enums\": {", "\"enums\": {\"e\": " + ok + ", "), "x");
  EXPECT_TRUE(p) << render(p.error());
}

TEST(profile, data_after_the_json_is_refused) {
  // nlohmann stops at a NUL; what follows it is no part of a profile.
  EXPECT_EQ(problem_of(linux_isf + std::string("\0{}", 3)),
            "x.json: data after the JSON value, at byte " + std::to_string(linux_isf.size() + 1));
  EXPECT_EQ(problem_of(linux_isf + "{}"),
            "x.json: invalid JSON at byte " + std::to_string(linux_isf.size() + 1) +
              ": syntax error while parsing value - unexpected '{'; expected end of input");
  auto p = parse_profile(linux_isf + std::string("\n\0", 2), "x");
  EXPECT_TRUE(p) << render(p.error());
}

TEST(profile, nearest_names_the_closest_symbols_then_by_name) {
  kernel_profile p;
  for (auto name : {"do_sys_open", "do_sys_openat2", "sys_open", "ksys_open", "do_sys_close",
                    "__x64_sys_open", "zzz"})
    p.symbols[name] = 0;
  EXPECT_EQ(p.nearest("do_sys_opn"),
            (std::vector<std::string>{"do_sys_open", "do_sys_close", "do_sys_openat2"}));
  EXPECT_EQ(p.nearest("do_sys_opn", 1), (std::vector<std::string>{"do_sys_open"}));
  EXPECT_EQ(p.nearest("zzz", 2), (std::vector<std::string>{"zzz", "sys_open"}));
  EXPECT_EQ(p.nearest("x", 0), std::vector<std::string>{});
  EXPECT_EQ(p.nearest("do_sys_opn", 10).size(), 7u);
  EXPECT_EQ(kernel_profile{}.nearest("x"), std::vector<std::string>{});
}

TEST(profile, nearest_agrees_with_measuring_every_name) {
  // The bounds (length gap, a row past the worst kept distance) skip work, never a name.
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<size_t> row(a.size() + 1);
    for (size_t j = 0; j <= a.size(); ++j)
      row[j] = j;
    for (size_t i = 1; i <= b.size(); ++i) {
      size_t diagonal = row[0];
      row[0] = i;
      for (size_t j = 1; j <= a.size(); ++j) {
        size_t above = row[j];
        row[j] = std::min({above + 1, row[j - 1] + 1, diagonal + (a[j - 1] != b[i - 1])});
        diagonal = above;
      }
    }
    return row[a.size()];
  };
  std::mt19937 rng(7);
  auto name = [&] {
    std::string s(3 + rng() % 10, 'a');
    for (auto& c : s)
      c = "abcde_"[rng() % 6];
    return s;
  };
  kernel_profile p;
  for (int i = 0; i < 3000; ++i)
    p.symbols[name()] = 0;
  for (int q = 0; q < 50; ++q) {
    auto query = name();
    std::vector<std::pair<size_t, std::string>> all;
    for (auto& [s, _] : p.symbols)
      all.emplace_back(distance(query, s), s);
    std::sort(all.begin(), all.end());
    std::vector<std::string> expected;
    for (size_t i = 0; i < 5; ++i)
      expected.push_back(all[i].second);
    EXPECT_EQ(p.nearest(query, 5), expected) << query;
  }
}
