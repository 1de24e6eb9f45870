#pragma once

// Reading a kernel profile: a generated ISF of a distribution kernel's size and shape (as
// dwarf2json writes it), plain and gzip, each read in a fresh process so that its peak RSS is
// the reader's own.

#include <string>

namespace vmitap::bench {

struct profile_load_report {
  std::string markdown;  ///< the report's section, "## Kernel profile load"
  bool ok = false;       ///< every read succeeded, with every symbol
};

/// Writes the profiles to a temporary directory, reads each in this program run again
/// (/proc/self/exe --profile-load), prints the rows as they are measured.
profile_load_report profile_load_section();

/// The child's side (vmitap-bench --profile-load FILE): reads the file, prints its seconds,
/// symbols and offsets on one line. Exit status 0 if it was read.
int profile_load_child(const std::string& path);

}  // namespace vmitap::bench
