#pragma once

// Files a test writes live in a directory of their own per test process: CTest runs tests of
// one binary in parallel processes, and two of them sharing a fixed path remove or overwrite
// each other's files mid-test.

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

namespace vmitap::testing {

/// This process's own directory under the test temp dir: made once (mkdtemp), removed at exit.
inline const std::string& process_temp_dir() {
  struct owned_dir {
    std::string path = ::testing::TempDir() + "vmitap-test-XXXXXX";
    owned_dir() {
      if (!::mkdtemp(path.data()))
        throw std::system_error(errno, std::generic_category(), "mkdtemp " + path);
    }
    ~owned_dir() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  };
  static const owned_dir dir;
  return dir.path;
}

/// An empty directory `name` in this process's directory.
inline std::string fresh_temp_dir(const std::string& name) {
  auto dir = process_temp_dir() + "/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

/// Writes `text` to the file `name` in this process's directory; returns its path.
inline std::string write_temp_file(const std::string& name, const std::string& text) {
  auto path = process_temp_dir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

}  // namespace vmitap::testing
