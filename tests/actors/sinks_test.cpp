// Hit records: one valid JSON object per line with every documented field; files that rotate
// keeping N generations, reopen after logrotate, count write errors as errors, and reach the
// disk without being asked; senders that drop and count when a sink is full.

#include "actors/records/sinks.hpp"
#include "actors/records/hit_json.hpp"
#include "actors/records/line_file.hpp"
#include "drivers/error.hpp"
#include "tests/support/temp_files.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include <sys/resource.h>
#include <sys/stat.h>

using namespace vmitap;
using vmitap::testing::fresh_temp_dir;
namespace fs = std::filesystem;

namespace {

hit_record record(int i) {
  auto def = breakpoint_def::at("bp \"" + std::to_string(i) + "\"", 0x100000u + uint64_t(i));
  def.options.tags = {"tag", "ü"};
  auto bp = make_breakpoint(def, 1, armed_by::attach);
  auto id = std::make_shared<domain_identity>();
  id->id = 7;
  id->name = "dom\\1";
  id->view_names = {{1, "main"}};
  return {{id, 1, 1, 0x100, uint64_t(i), 0xffffffff80100000ull + uint64_t(i), bp, {}, {}},
          0xffffffff80100000ull,
          0x3000,
          std::chrono::steady_clock::now(),
          std::chrono::system_clock::now(),
          0,
          0};
}

std::vector<nlohmann::json> read_lines(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    out.push_back(nlohmann::json::parse(line));  // throws on invalid JSON
  return out;
}

}  // namespace

TEST(hit_json, every_field_is_there_with_consistent_hex_and_names) {
  auto j = nlohmann::json::parse(to_json_line(record(5), "host-a"));
  EXPECT_EQ(j["type"], "hit");
  EXPECT_EQ(j["schema"], hit_schema_version);
  EXPECT_EQ(j["host"], "host-a");
  EXPECT_EQ(j["domain"], "dom\\1");
  EXPECT_EQ(j["domain_id"], 7);
  EXPECT_EQ(j["vcpu"], 1);
  EXPECT_EQ(j["view"], "main");
  EXPECT_EQ(j["view_id"], 1);
  EXPECT_EQ(j["breakpoint"], "bp \"5\"");
  EXPECT_EQ(j["tags"], (nlohmann::json{"tag", "ü"}));
  EXPECT_EQ(j["gfn"], "0x100");
  EXPECT_EQ(j["pa"], "0x100005");
  EXPECT_EQ(j["gla"], "0xffffffff80100005");
  EXPECT_EQ(j["rip"], "0xffffffff80100000");
  EXPECT_EQ(j["cr3"], "0x3000");
  EXPECT_TRUE(j["monotonic_ns"].is_number_integer());
  auto time = j["time"].get<std::string>();
  EXPECT_EQ(time.size(), std::string("2026-11-25T13:16:34.123456Z").size()) << time;
  EXPECT_EQ(time.back(), 'Z');
}

TEST(hit_json, captures_are_values_and_failures_apart_each_key_with_one_type) {
  auto rec = record(1);
  auto specs = std::make_shared<std::vector<capture_spec>>();
  for (auto name : {"arg1", "path", "absent", "long"})
    specs->push_back({name, capture_spec::kind::value, {}, 0, name});
  auto def = breakpoint_def::at("open", 0x100000);
  def.options.captures = {specs};
  rec.bp = make_breakpoint(def, 1, armed_by::attach);
  rec.captures = {{"", drv::translation_fault::none, 0, false, 0x2a},
                  {"C:\\Windows\\ü", drv::translation_fault::none, 0, false, {}},
                  {"", drv::translation_fault::not_present, 0x7ffd00002000, false, {}},
                  {"abcd", drv::translation_fault::none, 0, true, {}}};
  auto j = nlohmann::json::parse(to_json_line(rec, "h"));
  EXPECT_EQ(j["captures"],
            (nlohmann::json{{"arg1", "0x2a"}, {"path", "C:\\Windows\\ü"}, {"long", "abcd"}}));
  EXPECT_EQ(
    j["capture_errors"],
    (nlohmann::json{{"absent", {{"cause", "not_present"}, {"address", "0x7ffd00002000"}}}}));
  EXPECT_EQ(j["captures_truncated"], (nlohmann::json{"long"}));
  // Without captures, none of the three keys.
  auto plain = nlohmann::json::parse(to_json_line(record(2), "h"));
  EXPECT_FALSE(plain.contains("captures"));
  EXPECT_FALSE(plain.contains("capture_errors"));
}

TEST(hit_json, time_is_rfc3339_utc_with_microseconds) {
  auto t = std::chrono::system_clock::time_point(std::chrono::microseconds(1764076594123456));
  EXPECT_EQ(rfc3339_utc(t), "2025-11-25T13:16:34.123456Z");
}

TEST(line_file, rotation_keeps_n_generations_newest_first_and_loses_nothing_else) {
  auto dir = fresh_temp_dir("rotate");
  auto f = line_file::open({dir + "/hits.jsonl", 1000, 3});
  ASSERT_TRUE(f);
  uint64_t written = 0;
  for (int i = 0; i < 100; ++i) {
    f->append(std::string(99, 'a' + i % 26));  // 100 bytes with the newline
    if (i % 5 == 4)
      written += f->flush().written;
  }
  EXPECT_EQ(written, 100u);
  EXPECT_TRUE(fs::exists(dir + "/hits.jsonl.1"));
  EXPECT_TRUE(fs::exists(dir + "/hits.jsonl.3"));
  EXPECT_FALSE(fs::exists(dir + "/hits.jsonl.4")) << "the oldest generation goes";
  EXPECT_EQ(fs::file_size(dir + "/hits.jsonl.1"), 1000u);
  std::ifstream newest(dir + "/hits.jsonl.1");
  std::string last;
  for (std::string line; std::getline(newest, line);)
    last = line;
  EXPECT_EQ(last[0], char('a' + 99 % 26)) << ".1 holds the newest rotated records";
}

TEST(line_file, write_errors_count_records_as_failed_never_as_written) {
  auto f = line_file::open({"/dev/full", 0, 0});
  ASSERT_TRUE(f);
  f->append("x");
  f->append("y");
  auto r = f->flush();
  EXPECT_EQ(r.written, 0u);
  EXPECT_EQ(r.failed, 2u);
  EXPECT_EQ(code_of(r.error), ec::io_failed);
  EXPECT_NE(render(r.error).find("/dev/full"), std::string::npos) << render(r.error);
  EXPECT_NE(render(r.error).find("errno 28"), std::string::npos) << render(r.error);
}

// A write cut short (here by the file size limit) leaves part of a record in the file; the
// next record must start on a line of its own, so every other line stays valid JSON.
TEST(line_file, a_record_cut_short_is_ended_before_the_next_one) {
  auto dir = fresh_temp_dir("torn");
  auto f = line_file::open({dir + "/hits.jsonl", 0, 0});
  ASSERT_TRUE(f);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // EFBIG instead of a signal
  rlimit old_limit{};
  getrlimit(RLIMIT_FSIZE, &old_limit);
  rlimit small = old_limit;
  small.rlim_cur = 10;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  f->append(R"({"a":"0123456789"})");
  auto cut = f->flush();
  f->append(R"({"b":1})");
  auto blocked = f->flush();
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old_limit), 0);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(cut.failed, 1u);
  EXPECT_NE(render(cut.error).find("errno 27"), std::string::npos) << render(cut.error);
  EXPECT_EQ(blocked.failed, 1u) << "not written after a cut line that could not be ended";
  f->append(R"({"c":2})");
  auto ok = f->flush();
  EXPECT_FALSE(ok.error) << render(ok.error);
  EXPECT_EQ(ok.written, 1u);
  std::ifstream in(dir + "/hits.jsonl");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], R"({"a":"0123)") << "the cut record (10 bytes), ended";
  EXPECT_EQ(lines[1], R"({"c":2})");
}

TEST(line_file, opening_creates_the_directories_the_path_needs) {
  auto dir = fresh_temp_dir("mkdirs") + "/var/log/vmitap";
  auto f = line_file::open({dir + "/hits.jsonl", 0, 1});
  ASSERT_TRUE(f) << render(f.error());
  f->append("one");
  EXPECT_EQ(f->flush().written, 1u);
  struct stat st {};
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0750u) << "records are for the operator";
}

TEST(line_file, a_missing_directory_fails_each_flush_until_it_is_back) {
  auto dir = fresh_temp_dir("vanish");
  auto f = line_file::open({dir + "/hits.jsonl", 0, 0});
  ASSERT_TRUE(f);
  fs::remove_all(dir);
  auto err = f->reopen();
  ASSERT_TRUE(err) << "reopen fails: the directory is gone";
  EXPECT_NE(render(err).find("errno 2"), std::string::npos) << render(err);
  f->append("lost");
  auto r = f->flush();
  EXPECT_EQ(r.failed, 1u);
  EXPECT_EQ(r.written, 0u);
  fs::create_directories(dir);
  f->append("kept");
  EXPECT_EQ(f->flush().written, 1u) << "the next flush opens the file again";
  std::ifstream in(dir + "/hits.jsonl");
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "kept\n");
}

TEST(line_file, reopen_follows_logrotate_moving_the_file) {
  auto dir = fresh_temp_dir("logrotate");
  auto path = dir + "/hits.jsonl";
  auto f = line_file::open({path, 0, 0});
  ASSERT_TRUE(f);
  f->append("before");
  ASSERT_EQ(f->flush().written, 1u);
  fs::rename(path, path + ".1");  // what logrotate does, then it sends SIGUSR1
  ASSERT_FALSE(f->reopen());
  f->append("after");
  ASSERT_EQ(f->flush().written, 1u);
  std::ifstream old(path + ".1"), now(path);
  std::string a, b;
  std::getline(old, a);
  std::getline(now, b);
  EXPECT_EQ(a, "before");
  EXPECT_EQ(b, "after");
}

namespace {

struct sink_test : ::testing::Test {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::string dir = fresh_temp_dir("sink");

  void flush(const sink_handle& h) {
    caf::scoped_actor self{sys};
    self->request(h.actor, std::chrono::seconds(10), flush_atom_v)
      .receive([](ok_atom) {}, [](caf::error& e) { FAIL() << render(e); });
  }
  void TearDown() override { sys.await_all_actors_done(); }
};

}  // namespace

TEST_F(sink_test, records_reach_the_file_unasked_within_the_flush_interval) {
  sink_config sc{"hits", sink_config::kind::jsonl_file, dir + "/hits.jsonl",           0, 5,
                 1000,   defaults::sink_queue_bytes,    std::chrono::milliseconds(100)};
  auto h = spawn_sink(sys, sc, "host");
  ASSERT_TRUE(h);
  h->offer({record(1), record(2)});
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (read_lines(sc.path).size() < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(read_lines(sc.path).size(), 2u) << "a tail -f sees them without a flush or an exit";
  flush(*h);  // the sink counts right after it writes: wait for it before reading the counts
  EXPECT_EQ(h->queue->written.get(), 2u);
  EXPECT_EQ(h->queue->depth.load(), 0u);
  caf::anon_send_exit(h->actor, caf::exit_reason::user_shutdown);
}

TEST_F(sink_test, the_last_records_are_written_when_the_sink_exits) {
  sink_config sc{"hits",
                 sink_config::kind::jsonl_file,
                 dir + "/exit.jsonl",
                 0,
                 5,
                 1000,
                 defaults::sink_queue_bytes,
                 std::chrono::milliseconds(60000)};
  auto h = spawn_sink(sys, sc, "host");
  ASSERT_TRUE(h);
  h->offer({record(1), record(2), record(3)});
  caf::anon_send_exit(h->actor, caf::exit_reason::user_shutdown);
  sys.await_all_actors_done();
  EXPECT_EQ(read_lines(sc.path).size(), 3u);
}

TEST_F(sink_test, a_full_queue_drops_new_records_and_counts_them) {
  sink_config sc{"hits", sink_config::kind::jsonl_file, dir + "/full.jsonl",           0, 5,
                 3,      defaults::sink_queue_bytes,    std::chrono::milliseconds(100)};
  auto h = spawn_sink(sys, sc, "host");
  ASSERT_TRUE(h);
  h->queue->depth = 2;  // as if two records were queued already
  EXPECT_EQ(h->offer({record(1), record(2), record(3)}), 2u) << "room for one";
  EXPECT_EQ(h->queue->dropped.load(), 2u);
  h->queue->depth -= 2;
  flush(*h);
  EXPECT_EQ(read_lines(sc.path).size(), 1u);
  caf::anon_send_exit(h->actor, caf::exit_reason::user_shutdown);
}

// A rotation that keeps failing (here PATH.1 is a directory) loses no record and is logged
// once, not at every flush.
TEST_F(sink_test, a_failing_rotation_writes_every_record_and_is_logged_once) {
  auto log = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(16);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("test", log));
  sink_config sc{"hits",
                 sink_config::kind::jsonl_file,
                 dir + "/rot.jsonl",
                 1,
                 1,
                 1000,
                 defaults::sink_queue_bytes,
                 std::chrono::milliseconds(60000)};
  fs::create_directories(sc.path + ".1/blocker");
  auto h = spawn_sink(sys, sc, "host");
  ASSERT_TRUE(h);
  for (int i = 0; i < 3; ++i) {
    h->offer({record(i)});
    flush(*h);
  }
  caf::anon_send_exit(h->actor, caf::exit_reason::user_shutdown);
  sys.await_all_actors_done();
  spdlog::set_default_logger(previous);
  EXPECT_EQ(read_lines(sc.path).size(), 3u) << "nothing rotated away, nothing lost";
  EXPECT_EQ(h->queue->written.get(), 3u);
  EXPECT_EQ(h->queue->errors.get(), 0u);
  auto lines = log->last_formatted();
  ASSERT_EQ(lines.size(), 1u) << "one line for the streak";
  EXPECT_NE(lines[0].find("rot.jsonl"), std::string::npos) << lines[0];
}

// Regression (issue 20): records a full queue dropped left no trace in the file. Each sink
// numbers the records offered to it, so a lost one leaves a gap.
TEST_F(sink_test, records_are_numbered_per_sink_and_a_dropped_one_leaves_a_gap) {
  sink_config sc{"hits",
                 sink_config::kind::jsonl_file,
                 dir + "/seq.jsonl",
                 0,
                 5,
                 2,
                 defaults::sink_queue_bytes,
                 std::chrono::milliseconds(60000)};
  auto h = spawn_sink(sys, sc, "host");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->offer({record(1), record(2), record(3)}), 1u) << "room for two";
  flush(*h);
  EXPECT_EQ(h->offer({record(4)}), 0u);
  flush(*h);
  std::vector<uint64_t> seqs;
  for (auto& j : read_lines(sc.path))
    seqs.push_back(j["seq"].get<uint64_t>());
  EXPECT_EQ(seqs, (std::vector<uint64_t>{0, 1, 3})) << "2 was dropped";
  caf::anon_send_exit(h->actor, caf::exit_reason::user_shutdown);
}

// Regression (issue 21): 200 captures of 4 096 bytes on a hot breakpoint queued 2 GB at a
// sink: the queue is bounded in bytes too.
TEST_F(sink_test, a_queue_full_in_bytes_drops_large_records_and_still_takes_small_ones) {
  sink_config sc{"hits",          sink_config::kind::jsonl_file,   dir + "/bytes.jsonl", 0, 5, 1000,
                 size_t(1) << 20, std::chrono::milliseconds(60000)};
  auto h = spawn_sink(sys, sc, "host");
  ASSERT_TRUE(h);
  auto big = record(1);
  capture_value bytes;
  bytes.text = std::string(300 * 1024, 'a');
  big.captures.push_back(bytes);
  auto small = record(2);
  auto big_size = record_bytes(big);
  EXPECT_EQ(h->offer({big, big, big, big}), 1u) << "three of 300 KiB fit in 1 MiB";
  EXPECT_EQ(h->offer({big, small}), 1u) << "a small one still fits";
  EXPECT_EQ(h->queue->dropped.load(), 2u);
  EXPECT_EQ(h->queue->bytes.load(), 3 * big_size + record_bytes(small));
  flush(*h);
  EXPECT_EQ(h->queue->bytes.load(), 0u) << "given back when written";
  EXPECT_EQ(h->queue->depth.load(), 0u);
  EXPECT_EQ(read_lines(sc.path).size(), 4u);
  caf::anon_send_exit(h->actor, caf::exit_reason::user_shutdown);
}

TEST_F(sink_test, a_path_that_cannot_be_opened_is_an_error_naming_it_and_errno) {
  // Missing directories are made; one that is a file cannot be.
  std::ofstream(dir + "/blocker") << "a file\n";
  sink_config sc{"hits", sink_config::kind::jsonl_file, dir + "/blocker/dir/x.jsonl",  0, 5,
                 10,     defaults::sink_queue_bytes,    std::chrono::milliseconds(100)};
  auto h = spawn_sink(sys, sc, "host");
  ASSERT_FALSE(h);
  EXPECT_EQ(code_of(h.error()), ec::io_failed);
  EXPECT_NE(render(h.error()).find("blocker/dir"), std::string::npos) << render(h.error());
  EXPECT_NE(render(h.error()).find("errno 20"), std::string::npos) << render(h.error());
}
