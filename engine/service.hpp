#pragma once

// Telling a service manager where vmitap stands (systemd's Type=notify): READY=1 once every
// selected domain is being attached and metrics are served, RELOADING=1 around a reload,
// STOPPING=1 before the detach. Without a service manager (no NOTIFY_SOCKET) it does nothing.

namespace vmitap {

void service_notify(const char* state);

}  // namespace vmitap
