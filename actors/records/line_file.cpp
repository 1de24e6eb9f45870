#include "actors/records/line_file.hpp"

#include "drivers/error.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>

namespace vmitap {

namespace {

/// Creates the directories `path` needs that do not exist yet (mode 0750: records are for
/// the operator), as a service's log directory is made at its first start.
caf::error make_parents(const std::string& path) {
  for (size_t at = path.find('/', 1); at != std::string::npos; at = path.find('/', at + 1)) {
    auto dir = path.substr(0, at);
    if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST)
      return make_error(ec::io_failed, "mkdir", dir, errno);
  }
  return {};
}

}  // namespace

caf::expected<line_file> line_file::open(options opts) {
  line_file f{std::move(opts)};
  if (!f.opts_.path.empty())
    if (auto err = make_parents(f.opts_.path))
      return err;
  if (auto err = f.open_fd())
    return err;
  return f;
}

line_file::line_file(line_file&& other) noexcept :
  opts_(std::move(other.opts_)),
  fd_(std::exchange(other.fd_, -1)),
  owns_fd_(std::exchange(other.owns_fd_, false)),
  size_(other.size_),
  buffer_(std::move(other.buffer_)),
  ends_(std::move(other.ends_)),
  torn_(other.torn_) {}

line_file& line_file::operator=(line_file&& other) noexcept {
  if (this != &other) {
    close_fd();
    opts_ = std::move(other.opts_);
    fd_ = std::exchange(other.fd_, -1);
    owns_fd_ = std::exchange(other.owns_fd_, false);
    size_ = other.size_;
    buffer_ = std::move(other.buffer_);
    ends_ = std::move(other.ends_);
    torn_ = other.torn_;
  }
  return *this;
}

line_file::~line_file() {
  close_fd();
}

void line_file::close_fd() {
  if (owns_fd_ && fd_ >= 0)
    ::close(fd_);
  fd_ = -1;
  owns_fd_ = false;
}

caf::error line_file::open_fd() {
  if (opts_.path.empty()) {
    fd_ = STDOUT_FILENO;
    owns_fd_ = false;
    return {};
  }
  int fd = ::open(opts_.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0)
    return make_error(ec::io_failed, "open", opts_.path, errno);
  struct stat st {};
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    return make_error(ec::io_failed, "open", opts_.path, EISDIR);
  }
  fd_ = fd;
  owns_fd_ = true;
  size_ = uint64_t(st.st_size);
  return {};
}

void line_file::append(std::string_view line) {
  buffer_.append(line);
  buffer_.push_back('\n');
  ends_.push_back(buffer_.size());
}

line_file::flush_result line_file::flush() {
  flush_result r;
  if (buffer_.empty())
    return r;
  if (fd_ < 0)
    r.error = open_fd();  // the directory may be back
  size_t done = 0;
  if (!r.error && torn_) {
    // The last failure cut a line: end it first, or the next record would continue it.
    ssize_t n;
    while ((n = ::write(fd_, "\n", 1)) < 0 && errno == EINTR) {
    }
    if (n == 1)
      torn_ = false;
    else
      r.error = make_error(ec::io_failed, "write", opts_.path.empty() ? "stdout" : opts_.path,
                           n < 0 ? errno : EIO);
  }
  while (!r.error && done < buffer_.size()) {
    auto n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      r.error =
        make_error(ec::io_failed, "write", opts_.path.empty() ? "stdout" : opts_.path, errno);
      break;
    }
    done += size_t(n);
  }
  size_ += done;
  for (auto end : ends_)
    ++(end <= done ? r.written : r.failed);
  if (r.error && done > 0)
    torn_ = r.written == 0 || ends_[r.written - 1] != done;  // stopped inside a record
  buffer_.clear();
  ends_.clear();
  if (!r.error && owns_fd_ && opts_.rotate_bytes != 0 && size_ >= opts_.rotate_bytes)
    r.error = rotate();
  return r;
}

caf::error line_file::rotate() {
  close_fd();
  caf::error err;
  auto generation = [&](uint32_t n) { return opts_.path + "." + std::to_string(n); };
  if (opts_.rotate_keep == 0) {
    if (::unlink(opts_.path.c_str()) != 0 && errno != ENOENT)
      err = make_error(ec::io_failed, "unlink", opts_.path, errno);
  } else {
    for (uint32_t n = opts_.rotate_keep; n > 1; --n)
      if (::rename(generation(n - 1).c_str(), generation(n).c_str()) != 0 && errno != ENOENT &&
          !err)
        err = make_error(ec::io_failed, "rename", generation(n - 1), errno);
    if (::rename(opts_.path.c_str(), generation(1).c_str()) != 0 && !err)
      err = make_error(ec::io_failed, "rename", opts_.path, errno);
  }
  if (auto open_err = open_fd(); open_err && !err)
    err = std::move(open_err);
  return err;
}

caf::error line_file::reopen() {
  if (!owns_fd_ && fd_ == STDOUT_FILENO)
    return {};
  close_fd();
  return open_fd();
}

}  // namespace vmitap
