# Third-party packages, all from Debian 12.
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)

# CAF 0.17.6: Debian ships headers and libraries but no CMake config, so import by hand.
find_path(CAF_INCLUDE_DIR caf/all.hpp REQUIRED)
find_library(CAF_CORE_LIBRARY caf_core REQUIRED)
add_library(caf::core SHARED IMPORTED GLOBAL)
set_target_properties(caf::core PROPERTIES
  IMPORTED_LOCATION "${CAF_CORE_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${CAF_INCLUDE_DIR}"
  INTERFACE_LINK_LIBRARIES Threads::Threads)

find_package(GTest REQUIRED)
find_package(prometheus-cpp REQUIRED)
find_package(spdlog REQUIRED)
find_package(tomlplusplus REQUIRED)
find_package(nlohmann_json REQUIRED)
# Kernel profiles are read as gzip (zlib) or xz (liblzma) as well as plain JSON.
find_package(ZLIB REQUIRED)
find_package(LibLZMA REQUIRED)
find_package(CLI11 REQUIRED)
pkg_check_modules(systemd REQUIRED IMPORTED_TARGET libsystemd)
