// Hit sinks: valid JSON lines a standard parser reads, rotation by size, and a full queue
// that drops and counts instead of blocking the sender.

#include "actors/sinks.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <future>

using namespace vmitap;

namespace {

hit_record record(int i, std::string name) {
  auto bp = std::make_shared<breakpoint>();
  bp->id = uint64_t(i);
  bp->spec = {0x100000u + uint64_t(i), 1, std::move(name), {"tag \"q\"", "ü"}};
  return hit_record{7, std::make_shared<const std::string>("dom\\1"), 1, 1, 0x100,
                    0xffffffff80100000ull, 0x3000, bp, std::chrono::steady_clock::now()};
}

std::vector<nlohmann::json> read_lines(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    out.push_back(nlohmann::json::parse(line));  // throws on invalid JSON
  return out;
}

}  // namespace

TEST(jsonl_sink, writes_one_valid_json_object_per_line_and_rotates_by_size) {
  auto dir = testing::TempDir() + "sink-test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto path = dir + "/hits.jsonl";
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  metrics m{"test"};
  sink_config sc{"hits", sink_config::kind::jsonl_file, path, 4000, 1000};
  auto sink = spawn_sink(sys, sc, m.sink("hits"));
  ASSERT_TRUE(sink);
  for (int i = 0; i < 100; ++i)
    ASSERT_TRUE(sink->offer(record(i, "bp \"" + std::to_string(i) + "\"\n\t\x01")));
  caf::scoped_actor self{sys};
  self->request(sink->actor, std::chrono::seconds(10), flush_atom::value)
    .receive([](ok_atom) {}, [&](caf::error& e) { FAIL() << "no flush: " << sys.render(e); });
  ASSERT_TRUE(std::filesystem::exists(path + ".1")) << "rotated";
  EXPECT_LT(std::filesystem::file_size(path), 4000u + 400u);
  auto lines = read_lines(path + ".1");  // every line must parse, in both files
  auto current = read_lines(path);
  lines.insert(lines.end(), current.begin(), current.end());
  ASSERT_FALSE(lines.empty());
  auto& last = lines.back();
  EXPECT_EQ(last["breakpoint"], "bp \"99\"\n\t\x01");
  EXPECT_EQ(last["domain"], "dom\\1");
  EXPECT_EQ(last["domain_id"], 7);
  EXPECT_EQ(last["pa"], "0x100063");
  EXPECT_EQ(last["tags"][0], "tag \"q\"");
  EXPECT_EQ(last["tags"][1], "ü");
  EXPECT_EQ(m.sink("hits").written->Value(), 100);
  EXPECT_EQ(m.sink("hits").dropped->Value(), 0);
  self->send_exit(sink->actor, caf::exit_reason::user_shutdown);
}

TEST(jsonl_sink, a_full_queue_drops_new_records_and_counts_them) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  metrics m{"test"};
  // A sink that never gets to read its mailbox: it blocks until released.
  auto release = std::make_shared<std::promise<void>>();
  auto released = release->get_future().share();
  auto blocked = [](sink_actor::pointer, std::shared_future<void> until) -> sink_actor::behavior_type {
    until.wait();
    return {[](hit_atom, const hit_record&) {}, [](flush_atom) { return ok_atom::value; }};
  };
  sink_actor stuck = sys.spawn<caf::detached>(blocked, released);
  auto queue = std::make_shared<sink_queue>("slow", 3, m.sink("slow"));
  sink_handle h{stuck, queue};
  int accepted = 0;
  for (int i = 0; i < 10; ++i)
    accepted += h.offer(record(i, "r"));
  EXPECT_EQ(accepted, 3);
  EXPECT_EQ(m.sink("slow").dropped->Value(), 7);
  EXPECT_EQ(m.sink("slow").depth->Value(), 3);
  release->set_value();
  caf::anon_send_exit(stuck, caf::exit_reason::user_shutdown);
}
