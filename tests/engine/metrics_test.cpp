// The exporter: every family from the plain counters, values equal to what the sessions
// counted, sessions of one name summed, and the HTTP side: /metrics, a landing page, IPv6,
// a clear error for a port in use.

#include "engine/http_exporter.hpp"
#include "tests/support/metric_values.hpp"
#include "tests/support/scenario.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <atomic>
#include <thread>

using namespace vmitap;
using namespace vmitap::testing;

namespace {

const prometheus::MetricFamily* family(const std::vector<prometheus::MetricFamily>& fams,
                                       const std::string& name) {
  for (auto& f : fams)
    if (f.name == name)
      return &f;
  return nullptr;
}

double value(const prometheus::MetricFamily& f, const std::map<std::string, std::string>& labels) {
  return series_sum(f, labels).value_or(0);
}

/// A TCP connection to the exporter on 127.0.0.1 (`rcvbuf`: a small receive buffer, set before
/// connecting, for a client that reads slowly); -1 if it failed.
int connect_to(uint16_t port, int rcvbuf = 0) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (rcvbuf)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string http_get(uint16_t port, const std::string& target, bool v6 = false) {
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
  sockaddr_storage addr{};
  socklen_t len;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, "::1", &a->sin6_addr);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&addr);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &a->sin_addr);
    len = sizeof *a;
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    close(fd);
    return "connect failed";
  }
  auto req = "GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n";
  send(fd, req.data(), req.size(), 0);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;)
    out.append(buf, size_t(n));
  close(fd);
  return out;
}

}  // namespace

TEST(metrics, counters_equal_what_the_sessions_counted) {
  scenario s;
  s.add("m1", 2, 100000, step_mode::classic, true);
  engine eng{s.cfg, std::make_shared<sim::sim_driver>(s.hv)};
  ASSERT_FALSE(eng.start());
  while (!s.all_halted())
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  auto reports = eng.status();  // everything raised so far is counted
  ASSERT_EQ(reports.size(), 1u);
  auto& r = reports[0];
  auto fams = eng.collect();
  EXPECT_EQ(value(*family(fams, "vmitap_events_total"), {{"domain", "m1"}}),
            double(r.totals.events));
  EXPECT_EQ(value(*family(fams, "vmitap_events_total"), {{"reason", "singlestep"}}),
            double(r.totals.singlesteps));
  EXPECT_EQ(value(*family(fams, "vmitap_breakpoint_hits_total"), {{"breakpoint", "fn0_entry"}}),
            double(find_bp(r, "fn0_entry").hits));
  EXPECT_EQ(value(*family(fams, "vmitap_breakpoint_hits_total"), {{"view", "shadow"}}),
            double(find_bp(r, "fn0_entry_shadow").hits))
    << "views by name, as in the records";
  EXPECT_EQ(value(*family(fams, "vmitap_page_neighbour_events_total"), {}),
            double(r.totals.neighbours));
  EXPECT_EQ(value(*family(fams, "vmitap_breakpoints"), {{"view", "main"}}), 5);
  EXPECT_EQ(value(*family(fams, "vmitap_domains_monitored"), {}), 1);
  EXPECT_EQ(value(*family(fams, "vmitap_domain_attach_total"), {{"result", "ok"}}), 1);
  auto* handling = family(fams, "vmitap_event_handling_seconds");
  ASSERT_TRUE(handling);
  EXPECT_EQ(handling->metric.at(0).histogram.sample_count, r.totals.events);
  EXPECT_EQ(handling->metric.at(0).histogram.bucket.front().upper_bound, 1e-6);
  ASSERT_TRUE(family(fams, "vmitap_build_info"));
  ASSERT_TRUE(family(fams, "process_open_fds"));
  eng.stop();
  fams = eng.collect();
  EXPECT_TRUE(family(fams, "vmitap_events_total")->metric.empty())
    << "a detached domain's series go";
}

// Regression (issue 10): no metric said whether the last SIGHUP was applied, and the latency
// buckets jumped from 250 µs to 1 ms where the p99 sits.
TEST(metrics, reloads_are_exported_as_prometheus_has_them_and_buckets_are_dense) {
  scenario s;
  s.add("r", 1, 0);  // runs until stopped: its series exist throughout
  engine eng{s.cfg, std::make_shared<sim::sim_driver>(s.hv)};
  ASSERT_FALSE(eng.start());
  // start() returns once the engine runs; the domain's session (and its series) comes with
  // its attach, which a loaded sanitizer build may not have finished yet.
  ASSERT_TRUE(eventually([&] { return !eng.progress().empty(); }));
  auto fams = eng.collect();
  auto loaded = value(*family(fams, "vmitap_config_last_reload_success_timestamp_seconds"), {});
  EXPECT_GT(loaded, 1.6e9) << "the config loaded at start counts as the first success";
  EXPECT_EQ(value(*family(fams, "vmitap_config_last_reload_successful"), {}), 1);
  eng.count_reload(false);
  fams = eng.collect();
  EXPECT_EQ(value(*family(fams, "vmitap_config_last_reload_successful"), {}), 0);
  EXPECT_EQ(value(*family(fams, "vmitap_config_reloads_total"), {{"result", "failed"}}), 1);
  EXPECT_EQ(value(*family(fams, "vmitap_config_last_reload_success_timestamp_seconds"), {}), loaded)
    << "a rejected reload is no success";
  eng.count_reload(true);
  fams = eng.collect();
  EXPECT_EQ(value(*family(fams, "vmitap_config_last_reload_successful"), {}), 1);
  EXPECT_EQ(value(*family(fams, "vmitap_config_reloads_total"), {{"result", "ok"}}), 1);
  EXPECT_GE(value(*family(fams, "vmitap_config_last_reload_success_timestamp_seconds"), {}),
            loaded);
  auto* handling = family(fams, "vmitap_event_handling_seconds");
  ASSERT_TRUE(handling);
  auto& buckets = handling->metric.at(0).histogram.bucket;
  ASSERT_GE(buckets.size(), 3u);
  EXPECT_EQ(buckets.front().upper_bound, 1e-6);
  EXPECT_EQ(buckets[buckets.size() - 2].upper_bound, 1e-2) << "the last finite bound: 10 ms";
  for (size_t i = 1; i + 1 < buckets.size(); ++i)
    EXPECT_LE(buckets[i].upper_bound / buckets[i - 1].upper_bound, 2.5)
      << "no bucket more than 2.5 times the one below: " << buckets[i].upper_bound;
  eng.stop();
}

TEST(metrics, exporter_serves_metrics_and_a_landing_page) {
  auto where = parse_listen("127.0.0.1:0");
  ASSERT_TRUE(where);
  auto exp = http_exporter::start(*where, [] { return std::string("vmitap_x 1\n"); });
  ASSERT_TRUE(exp) << render(exp.error());
  auto port = (*exp)->port();
  ASSERT_NE(port, 0);
  auto metrics = http_get(port, "/metrics");
  EXPECT_NE(metrics.find("200 OK"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("vmitap_x 1"), std::string::npos) << metrics;
  EXPECT_NE(http_get(port, "/").find("href=\"/metrics\""), std::string::npos);
  EXPECT_NE(http_get(port, "/nope").find("404"), std::string::npos);
}

TEST(metrics, exporter_listens_on_ipv6_loopback) {
  auto where = parse_listen("[::1]:0");
  ASSERT_TRUE(where) << render(where.error());
  auto exp = http_exporter::start(*where, [] { return std::string("ok 1\n"); });
  if (!exp && render(exp.error()).find("no such local address") != std::string::npos)
    GTEST_SKIP() << "this machine has no IPv6 loopback";
  ASSERT_TRUE(exp) << render(exp.error());
  EXPECT_NE(http_get((*exp)->port(), "/metrics", true).find("ok 1"), std::string::npos);
}

TEST(metrics, a_taken_port_is_reported_as_in_use) {
  auto first = http_exporter::start(*parse_listen("127.0.0.1:0"), [] { return std::string(); });
  ASSERT_TRUE(first);
  auto again = http_exporter::start(*parse_listen("127.0.0.1:" + std::to_string((*first)->port())),
                                    [] { return std::string(); });
  ASSERT_FALSE(again);
  EXPECT_EQ(code_of(again.error()), ec::listen_failed);
  EXPECT_EQ(context_of(again.error()),
            "metrics: port " + std::to_string((*first)->port()) + " on 127.0.0.1 is in use");
}

TEST(metrics, listen_addresses_are_validated) {
  EXPECT_EQ(parse_listen("10474")->authority(), "127.0.0.1:10474") << "a bare port is loopback";
  EXPECT_EQ(parse_listen("[::1]:9478")->authority(), "[::1]:9478");
  EXPECT_EQ(parse_listen("localhost:1")->host, "127.0.0.1");
  EXPECT_FALSE(parse_listen("127.0.0.1:99999"));
  EXPECT_FALSE(parse_listen("::1:80")) << "IPv6 needs brackets";
  EXPECT_FALSE(parse_listen("garbage:80"));
  EXPECT_FALSE(parse_listen("127.0.0.1:"));
  EXPECT_FALSE(parse_listen(""));
}

// Regression (issue 20): the exporter served one connection at a time, so five idle TCP
// connections delayed a scrape by 10 s, Prometheus's default scrape timeout. Now idle and
// half-open connections, a client that reads one byte a second and 50 concurrent scrapes
// are served side by side: every scrape is answered well within a second.
TEST(metrics, no_client_delays_another_scrape) {
  std::atomic<bool> big{true};
  std::atomic<int> renders{0};
  auto exp = http_exporter::start(*parse_listen("127.0.0.1:0"), [&] {
    ++renders;
    // The slow reader's answer is larger than any socket buffer: it cannot be sent at once.
    return big.load() ? std::string(16 << 20, 'x') : std::string("vmitap_up 1\n");
  });
  ASSERT_TRUE(exp) << render(exp.error());
  auto port = (*exp)->port();
  int slow = connect_to(port, 4096);
  ASSERT_GE(slow, 0);
  std::string get = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(send(slow, get.data(), get.size(), 0), ssize_t(get.size()));
  ASSERT_TRUE(eventually([&] { return renders.load() == 1; }));
  big = false;
  std::atomic<bool> done{false};
  std::thread reader([&] {  // one byte a second, until the test is over
    char c;
    while (!done && recv(slow, &c, 1, 0) == 1)
      std::this_thread::sleep_for(std::chrono::seconds(1));
  });
  std::vector<int> idle;
  for (int i = 0; i < 5; ++i)
    idle.push_back(connect_to(port));
  int half = connect_to(port);
  std::string part = "GET /metr";
  send(half, part.data(), part.size(), 0);
  std::vector<std::thread> scrapes;
  std::vector<double> seconds(50);
  std::vector<std::string> answers(50);
  for (int i = 0; i < 50; ++i)
    scrapes.emplace_back([&, i] {
      auto t0 = std::chrono::steady_clock::now();
      answers[i] = http_get(port, "/metrics");
      seconds[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    });
  for (auto& t : scrapes)
    t.join();
  for (int i = 0; i < 50; ++i) {
    EXPECT_NE(answers[i].find("vmitap_up 1"), std::string::npos) << i << ": " << answers[i];
    EXPECT_LT(seconds[i], 1.0) << "scrape " << i;
  }
  // A client that sends its request and closes its side at once still gets the answer.
  int once = connect_to(port);
  ASSERT_EQ(send(once, get.data(), get.size(), 0), ssize_t(get.size()));
  shutdown(once, SHUT_WR);
  std::string answer;
  char buf[4096];
  for (ssize_t n; (n = recv(once, buf, sizeof buf, 0)) > 0;)
    answer.append(buf, size_t(n));
  close(once);
  EXPECT_NE(answer.find("vmitap_up 1"), std::string::npos) << answer;
  done = true;
  shutdown(slow, SHUT_RDWR);
  reader.join();
  for (int fd : idle)
    close(fd);
  close(half);
  close(slow);
}
