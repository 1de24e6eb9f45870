#pragma once

// A file or a buffer read as a stream of bytes, decompressed on the fly when it is gzip
// (zlib) or xz (liblzma), chosen by its magic bytes: a reader of a 60 MB kernel profile holds
// one chunk of it at a time, never the whole text.

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace vmitap::drv {

class compressed_input {
public:
  /// Opens `path` (ec::io_failed if it cannot be opened or read).
  static caf::expected<compressed_input> open(const std::string& path);
  /// Bytes already in memory, borrowed: they must outlive the input. `path` names them in
  /// errors.
  compressed_input(std::string_view bytes, std::string path);

  compressed_input(compressed_input&&) noexcept;
  ~compressed_input();

  /// The next bytes of the (decompressed) stream, valid until the next call; empty at the end
  /// of the stream or on an error, which error() then names.
  std::string_view next();
  /// None, or what ended the stream early: ec::config_invalid naming the path for a corrupt or
  /// truncated stream ("x.json.gz: truncated gzip stream"), ec::io_failed for a failed read.
  const caf::error& error() const;

private:
  struct state;
  explicit compressed_input(std::unique_ptr<state> s);
  std::unique_ptr<state> s_;
};

}  // namespace vmitap::drv
