#include "drivers/error.hpp"

#include <caf/make_message.hpp>
#include <caf/message.hpp>
#include <caf/to_string.hpp>

#include <cstring>

namespace vmitap {

const char* to_string(ec code) {
  switch (code) {
    case ec::none:
      return "none";
    case ec::driver_call_failed:
      return "driver_call_failed";
    case ec::no_hypervisor:
      return "no_hypervisor";
    case ec::incompatible_hypervisor:
      return "incompatible_hypervisor";
    case ec::another_monitor:
      return "another_monitor";
    case ec::no_such_domain:
      return "no_such_domain";
    case ec::domain_dead:
      return "domain_dead";
    case ec::already_attached:
      return "already_attached";
    case ec::not_attached:
      return "not_attached";
    case ec::no_such_vcpu:
      return "no_such_vcpu";
    case ec::vcpu_not_paused:
      return "vcpu_not_paused";
    case ec::no_such_view:
      return "no_such_view";
    case ec::view_in_use:
      return "view_in_use";
    case ec::gfn_out_of_range:
      return "gfn_out_of_range";
    case ec::invalid_argument:
      return "invalid_argument";
    case ec::breakpoint_not_found:
      return "breakpoint_not_found";
    case ec::duplicate_breakpoint:
      return "duplicate_breakpoint";
    case ec::timeout:
      return "timeout";
    case ec::config_invalid:
      return "config_invalid";
    case ec::io_failed:
      return "io_failed";
    case ec::listen_failed:
      return "listen_failed";
    case ec::shutting_down:
      return "shutting_down";
    case ec::handler_failed:
      return "handler_failed";
    case ec::kernel_not_found:
      return "kernel_not_found";
    case ec::no_kernel_mode_vcpu:
      return "no_kernel_mode_vcpu";
    case ec::profile_mismatch:
      return "profile_mismatch";
    case ec::not_mapped:
      return "not_mapped";
  }
  return "unknown";
}

caf::error make_error(ec code) {
  return caf::error{code};
}

caf::error make_error(ec code, std::string what) {
  return caf::error{code, std::move(what)};
}

caf::error make_error(ec code, std::string_view call, int err) {
  return caf::error{code, std::string(call), int32_t(err)};
}

caf::error make_error(ec code, std::string_view call, std::string_view path, int err) {
  return caf::error{code, std::string(call), std::string(path), int32_t(err)};
}

ec code_of(const caf::error& err) {
  if (!err || err.category() != error_category)
    return ec::none;
  return static_cast<ec>(err.code());
}

bool domain_gone(const caf::error& err) {
  auto code = code_of(err);
  return code == ec::domain_dead || code == ec::no_such_domain;
}

int errno_of(const caf::error& err) {
  const auto& ctx = err.context();
  if (code_of(err) == ec::none || ctx.empty())
    return 0;
  if (ctx.match_elements<std::string, int32_t>())
    return ctx.get_as<int32_t>(1);
  if (ctx.match_elements<std::string, std::string, int32_t>())
    return ctx.get_as<int32_t>(2);
  return 0;
}

namespace {

std::string errno_text(int err) {
  return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")";
}

}  // namespace

std::string context_of(const caf::error& err) {
  const auto& ctx = err.context();
  if (code_of(err) == ec::none)
    return render(err);
  if (ctx.match_elements<std::string>())
    return ctx.get_as<std::string>(0);
  if (ctx.match_elements<std::string, int32_t>())
    return ctx.get_as<std::string>(0) + ": " + errno_text(ctx.get_as<int32_t>(1));
  if (ctx.match_elements<std::string, std::string, int32_t>())
    return ctx.get_as<std::string>(0) + "(" + ctx.get_as<std::string>(1) +
           "): " + errno_text(ctx.get_as<int32_t>(2));
  return {};
}

std::string render(const caf::error& err) {
  if (!err)
    return "no error";
  if (err.category() != error_category)
    return caf::to_string(err);
  std::string out = to_string(static_cast<ec>(err.code()));
  if (auto ctx = context_of(err); !ctx.empty())
    out += ": " + ctx;
  return out;
}

}  // namespace vmitap
