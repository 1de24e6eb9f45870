#pragma once

// Xen 4.17 as a backend: its [xen] section has no keys (the host is what it is); domains are
// found on the host at run time, so `check` cannot know them in advance.

#include "engine/backends.hpp"

namespace vmitap {

backend xen_backend();

}  // namespace vmitap
