#pragma once

// Where a sink's lines go: a file it appends to, rotates by size (keeping N generations) and
// reopens after logrotate moved it, or standard output. Lines are buffered and written with
// write(2): a record counts as written only once the kernel has it, and every failure is
// reported with the call, the path and errno.

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vmitap {

class line_file {
public:
  struct options {
    std::string path;           ///< empty: standard output (never rotated or reopened)
    uint64_t rotate_bytes = 0;  ///< rotate once the file reaches this size; 0: never
    uint32_t rotate_keep = 5;   ///< PATH.1 … PATH.N; the oldest goes
  };
  struct flush_result {
    uint64_t written = 0;  ///< records the kernel took
    uint64_t failed = 0;   ///< records lost
    caf::error error;      ///< why, if any were lost (or a rotation failed)
  };

  /// Opens (creates) the file for appending; fails naming path and errno.
  static caf::expected<line_file> open(options opts);

  line_file(line_file&& other) noexcept;
  line_file& operator=(line_file&& other) noexcept;
  line_file(const line_file&) = delete;
  line_file& operator=(const line_file&) = delete;
  ~line_file();

  /// Buffers one record (a newline is added).
  void append(std::string_view line);
  size_t buffered_records() const { return ends_.size(); }
  size_t buffered_bytes() const { return buffer_.size(); }
  /// Writes what is buffered; rotates afterwards if the file grew past its limit.
  flush_result flush();
  /// Closes and opens the path again (logrotate moved the file). A no-op for stdout.
  caf::error reopen();
  const std::string& path() const { return opts_.path; }

private:
  explicit line_file(options opts) : opts_(std::move(opts)) {}
  caf::error open_fd();
  caf::error rotate();
  void close_fd();

  options opts_;
  int fd_ = -1;
  bool owns_fd_ = false;
  uint64_t size_ = 0;
  std::string buffer_;
  std::vector<size_t> ends_;  // where each buffered record ends
  bool torn_ = false;         // a failed write left a partial line in the file
};

}  // namespace vmitap
