#pragma once

// vmitap's exit codes, in one place (the README's "Exit codes" lists them).

namespace vmitap::exit_code {

inline constexpr int ok = 0;
/// The run failed: a teardown error, or the sim's verification did not hold.
inline constexpr int failed = 1;
/// The config or the command line is invalid (file:line:column on stderr).
inline constexpr int config = 2;
/// The metrics exporter could not listen (the port is in use, the address is not local).
inline constexpr int listen = 3;
/// The hypervisor is not available (no Xen on this machine, no access to it).
inline constexpr int unavailable = 4;
/// The run itself held, but hit records were lost: a sink could not write them or its queue
/// was full (the summary's sink table says which).
inline constexpr int records_lost = 5;

}  // namespace vmitap::exit_code
