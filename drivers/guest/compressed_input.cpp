#include "drivers/guest/compressed_input.hpp"

#include "drivers/error.hpp"

#define ZLIB_CONST  // the input is read-only
#include <fcntl.h>
#include <lzma.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vmitap::drv {

namespace {

constexpr size_t chunk_size = 256 * 1024;
// xz -9 needs 65 MiB to decode; a file that asks for more is not a profile anyone wrote.
constexpr uint64_t xz_memory_limit = 128u << 20;

enum class format : uint8_t { plain, gzip, xz };

format format_of(std::string_view head) {
  if (head.starts_with("\x1f\x8b"))
    return format::gzip;
  if (head.starts_with(std::string_view("\xfd"
                                        "7zXZ\0",
                                        6)))
    return format::xz;
  return format::plain;
}

const char* lzma_message(lzma_ret rc) {
  switch (rc) {
    case LZMA_MEM_ERROR:
      return "xz: out of memory";
    case LZMA_MEMLIMIT_ERROR:
      return "xz: needs more than 128 MiB of memory to decompress";
    case LZMA_FORMAT_ERROR:
      return "xz: not in the .xz format";
    case LZMA_OPTIONS_ERROR:
      return "xz: unsupported compression options";
    case LZMA_DATA_ERROR:
      return "xz: corrupt compressed data";
    case LZMA_BUF_ERROR:
      return "truncated xz stream";
    default:
      return "xz: decoder error";
  }
}

}  // namespace

struct compressed_input::state {
  std::string path;
  int fd = -1;  ///< -1: the bytes are in memory, all of them in `pending` from the start
  std::string_view pending;  ///< input not yet decompressed
  bool input_done = false;   ///< nothing follows `pending`
  bool ended = false;
  format kind = format::plain;
  std::unique_ptr<char[]> in;
  std::unique_ptr<char[]> out;
  z_stream z{};
  bool z_live = false;
  lzma_stream x = LZMA_STREAM_INIT;
  bool x_live = false;
  caf::error err;

  ~state() {
    if (z_live)
      inflateEnd(&z);
    if (x_live)
      lzma_end(&x);
    if (fd >= 0)
      ::close(fd);
  }

  void fail(std::string what) {
    err = make_error(ec::config_invalid, path + ": " + what);
    ended = true;
  }

  /// Reads the file until `pending` holds at least `want` bytes or the file ends.
  void read_more(size_t want = 1) {
    if (fd < 0) {
      input_done = true;
      return;
    }
    if (!in)
      in = std::make_unique<char[]>(chunk_size);
    size_t have = pending.size();
    if (have > 0)  // an empty view's data() may be null, which memmove must not get
      std::memmove(in.get(), pending.data(), have);
    while (have < want) {
      auto n = ::read(fd, in.get() + have, chunk_size - have);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0) {
        err = make_error(ec::io_failed, "read", path, errno);
        ended = input_done = true;
        break;
      }
      if (n == 0) {
        input_done = true;
        break;
      }
      have += size_t(n);
    }
    pending = {in.get(), have};
  }

  /// Starts the decoder the first bytes call for.
  void start() {
    read_more(6);
    kind = format_of(pending);
    if (kind == format::plain)
      return;
    out = std::make_unique<char[]>(chunk_size);
    if (kind == format::gzip) {
      z_live = inflateInit2(&z, 16 + MAX_WBITS) == Z_OK;
      if (!z_live)
        fail("gzip: cannot start zlib");
      return;
    }
    auto rc = lzma_stream_decoder(&x, xz_memory_limit, LZMA_CONCATENATED);
    x_live = rc == LZMA_OK;
    if (!x_live)
      fail(lzma_message(rc));
  }

  std::string_view next_plain() {
    if (pending.empty() && !input_done)
      read_more();
    std::string_view chunk = pending;
    pending = {};
    ended = chunk.empty();
    return chunk;
  }

  std::string_view next_gzip() {
    for (;;) {
      if (pending.empty() && !input_done)
        read_more();
      if (ended)
        return {};
      // zlib counts in 32 bits; a buffer in memory may be larger.
      auto offered = uInt(std::min<size_t>(pending.size(), 1u << 30));
      z.next_in = reinterpret_cast<const Bytef*>(pending.data());
      z.avail_in = offered;
      z.next_out = reinterpret_cast<Bytef*>(out.get());
      z.avail_out = uInt(chunk_size);
      int rc = inflate(&z, Z_NO_FLUSH);
      pending.remove_prefix(offered - z.avail_in);
      size_t produced = chunk_size - z.avail_out;
      if (rc == Z_STREAM_END) {
        // gzip allows several members back to back: the stream ends only with the input.
        if (pending.empty() && !input_done)
          read_more();
        if (pending.empty())
          ended = true;
        else
          inflateReset(&z);
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        fail(std::string("gzip: ") + (z.msg ? z.msg : zError(rc)));
      } else if (produced == 0 && pending.empty() && input_done) {
        fail("truncated gzip stream");
      }
      if (produced > 0)
        return {out.get(), produced};
      if (ended)
        return {};
    }
  }

  std::string_view next_xz() {
    for (;;) {
      if (pending.empty() && !input_done)
        read_more();
      if (ended)
        return {};
      x.next_in = reinterpret_cast<const uint8_t*>(pending.data());
      x.avail_in = pending.size();
      x.next_out = reinterpret_cast<uint8_t*>(out.get());
      x.avail_out = chunk_size;
      // With LZMA_CONCATENATED the decoder learns of the input's end only from LZMA_FINISH.
      auto rc = lzma_code(&x, input_done && pending.empty() ? LZMA_FINISH : LZMA_RUN);
      pending.remove_prefix(pending.size() - x.avail_in);
      size_t produced = chunk_size - x.avail_out;
      if (rc == LZMA_STREAM_END)
        ended = true;
      else if (rc != LZMA_OK)
        fail(lzma_message(rc));
      if (produced > 0)
        return {out.get(), produced};
      if (ended)
        return {};
    }
  }
};

caf::expected<compressed_input> compressed_input::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return make_error(ec::io_failed, "open", path, errno);
  auto s = std::make_unique<state>();
  s->path = path;
  s->fd = fd;
  s->start();
  if (code_of(s->err) == ec::io_failed)
    return s->err;
  return compressed_input{std::move(s)};
}

compressed_input::compressed_input(std::string_view bytes, std::string path) :
  s_(std::make_unique<state>()) {
  s_->path = std::move(path);
  s_->pending = bytes;
  s_->input_done = true;
  s_->start();
}

compressed_input::compressed_input(std::unique_ptr<state> s) : s_(std::move(s)) {}
compressed_input::compressed_input(compressed_input&&) noexcept = default;
compressed_input::~compressed_input() = default;

std::string_view compressed_input::next() {
  if (s_->ended)
    return {};
  switch (s_->kind) {
    case format::plain:
      return s_->next_plain();
    case format::gzip:
      return s_->next_gzip();
    case format::xz:
      return s_->next_xz();
  }
  return {};
}

const caf::error& compressed_input::error() const {
  return s_->err;
}

}  // namespace vmitap::drv
