#pragma once

// Xen's C headers, as vmitap needs them: none of them has `extern "C"` guards, and
// xenctrl.h needs gnu++ mode (anonymous unions) and defines __XEN_TOOLS__, which
// xen/vm_event.h needs for the ring types.

#include <cstdint>
#include <cstdio>

// In this order: the public Xen headers need xenctrl.h's definitions first.
// clang-format off
extern "C" {
#include <xenctrl.h>
#include <xenevtchn.h>
#include <xenforeignmemory.h>
#include <xenstore.h>
#include <xentoollog.h>
#include <xen/vm_event.h>
#include <xen/hvm/save.h>
}
// clang-format on
