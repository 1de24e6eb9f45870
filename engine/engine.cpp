#include "engine/engine.hpp"

#include "drivers/error.hpp"

#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <spdlog/spdlog.h>

#include <unistd.h>
#include <future>
#include <thread>

namespace vmitap {

build_identity this_build() {
  return {VMITAP_VERSION, VMITAP_REVISION};
}

namespace {

std::string host_name() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

size_t default_pollers(size_t reserved_cores) {
  size_t cores = std::max(1u, std::thread::hardware_concurrency());
  return cores > reserved_cores ? cores - reserved_cores : 1;
}

}  // namespace

engine::engine(engine_config cfg, std::shared_ptr<drv::driver> driver, size_t reserved_cores,
               handler_registry_ptr handlers) :
  cfg_(std::move(cfg)), driver_(std::move(driver)), handlers_(std::move(handlers)) {
  pollers_ = std::make_unique<poller_pool>(
    cfg_.pollers != 0 ? cfg_.pollers : default_pollers(reserved_cores),
    poller::options{cfg_.poller_spin, true});
  system_cfg_.set("scheduler.max-threads", cfg_.worker_threads);
  system_cfg_.set("scheduler.max-throughput", defaults::max_throughput);
  // One shared queue: idle workers sleep until work comes (work stealing woke each every
  // 10 ms to steal, preempting the pollers on their cores), and no job waits behind a worker
  // busy in a long driver call. The control plane's rate makes one queue's lock cheap.
  system_cfg_.set("scheduler.policy", caf::atom("sharing"));
  system_ = std::make_unique<caf::actor_system>(system_cfg_);
  collectables_ = {
    std::make_shared<metrics_collector>(directory_, sink_book_, counters_, this_build()),
    make_process_collector()};
}

engine::~engine() {
  stop();
  if (abandoned_ || handler_calls_running()) {
    // A function handler still in its call runs on a thread CAF joins when the actor system
    // goes: its VCPUs were resumed at their deadlines, so nothing waits for it.
    // Threads stuck in a driver call still use these: they are left to the process's exit.
    (void)system_.release();
    (void)pollers_.release();
  }
}

void engine::count_reload(bool ok) {
  (ok ? counters_.reloads_ok : counters_.reloads_failed).add();
  counters_.last_reload_ok = ok;
  if (ok)
    counters_.last_reload_success =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

caf::error engine::start() {
  // Loading the config at start is its first successful load.
  counters_.last_reload_success =
    std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  if (!cfg_.metrics_listen.empty()) {
    auto where = parse_listen(cfg_.metrics_listen);
    if (!where)
      return make_error(ec::listen_failed, "metrics: " + context_of(where.error()));
    auto collectables = collectables_;
    auto exporter =
      http_exporter::start(*where, [collectables] { return render_metrics(collectables); });
    if (!exporter)
      return std::move(exporter.error());
    exporter_ = std::move(*exporter);
  }
  std::map<std::string, sink_handle> sinks;
  auto host = host_name();
  for (auto& s : cfg_.sinks) {
    auto h = spawn_sink(*system_, s, host);
    if (!h) {
      for (auto& [name, opened] : sinks)  // nothing may keep the actor system waiting
        caf::anon_send_exit(opened.actor, caf::exit_reason::user_shutdown);
      // A path the config names that cannot be opened: the config's problem (exit code 2),
      // as check would have said had the file system not changed since.
      return make_error(ec::config_invalid, context_of(h.error()));
    }
    sinks.emplace(s.name, *h);
    sink_book_->open(h->queue);
  }
  engine_environment env{driver_,    pollers_.get(), directory_, sink_book_,
                         &counters_, host,           handlers_};
  actor_ = system_->spawn(engine_behavior, std::move(env),
                          std::make_shared<const engine_config>(cfg_), std::move(sinks));
  auto me = actor_;
  if (auto err = driver_->watch([me](const drv::domain_change& c) {
        if (c.started)
          caf::anon_send(me, started_atom_v, c.domain);
        else
          caf::anon_send(me, stopped_atom_v, c.domain);
      }))
    return err;
  auto domains = driver_->list_domains();
  if (!domains)
    return std::move(domains.error());
  for (auto& d : *domains)
    caf::anon_send(actor_, started_atom_v, d);
  return {};
}

std::vector<domain_report> engine::status() {
  std::vector<domain_report> out;
  if (!actor_ || stopped_)
    return out;
  caf::scoped_actor self{*system_};
  self->request(actor_, defaults::request_timeout + std::chrono::seconds(1), status_atom_v)
    .receive([&](std::vector<domain_report>& r) { out = std::move(r); },
             [&](caf::error& err) { spdlog::error("status: {}", render(err)); });
  return out;
}

std::vector<domain_progress> engine::progress() const {
  std::vector<domain_progress> out;
  for (auto& d : directory_->list()) {
    auto t = d->counters().totals();
    out.push_back({d->info().name, d->info().id, t.events, t.hits});
  }
  std::sort(out.begin(), out.end(),
            [](auto& a, auto& b) { return std::tie(a.name, a.id) < std::tie(b.name, b.id); });
  return out;
}

caf::error engine::reload(engine_config next) {
  if (!actor_ || stopped_)
    return make_error(ec::shutting_down, "reload: the engine is not running");
  caf::error result;
  caf::scoped_actor self{*system_};
  // The engine's own settings stay as started (the stop deadline this facade waits with
  // among them); only the topology changes.
  self
    ->request(actor_, defaults::attach_timeout + cfg_.stop_deadline, reload_atom_v,
              engine_config_ptr{std::make_shared<const engine_config>(cfg_.with_topology_of(next))})
    .receive([](ok_atom) {}, [&](caf::error& err) { result = std::move(err); });
  return result;
}

caf::error engine::reopen_sinks() {
  if (!actor_ || stopped_)
    return {};
  caf::error result;
  caf::scoped_actor self{*system_};
  self->request(actor_, defaults::request_timeout + std::chrono::seconds(1), reopen_atom_v)
    .receive([](ok_atom) {}, [&](caf::error& err) { result = std::move(err); });
  return result;
}

std::vector<domain_report> engine::stop() {
  std::vector<domain_report> out;
  if (stopped_)
    return out;
  stopped_ = true;
  driver_->unwatch();
  {
    caf::scoped_actor self{*system_};
    if (actor_) {
      self->request(actor_, cfg_.stop_deadline + std::chrono::seconds(1), stop_atom_v)
        .receive([&](std::vector<domain_report>& r) { out = std::move(r); },
                 [&](caf::error& err) { spdlog::error("stop: {}", render(err)); });
      self->send_exit(actor_, caf::exit_reason::user_shutdown);
    }
  }
  // A teardown stuck in a driver call must not keep the process: its actors get one more
  // stop deadline to finish, then they are left behind.
  auto all_done = std::make_shared<std::promise<void>>();
  auto finished = all_done->get_future();
  std::thread([system = system_.get(), all_done] {
    system->await_all_actors_done();
    all_done->set_value();
  }).detach();
  if (finished.wait_for(cfg_.stop_deadline) != std::future_status::ready) {
    abandoned_ = true;
    spdlog::error(
      "{} actor(s) still busy {} ms after the stop (a driver call that does not "
      "return): leaving them behind",
      system_->registry().running(), cfg_.stop_deadline.count());
    return out;
  }
  if (auto n = handler_calls_running())
    spdlog::info(
      "{} function handler call(s) still running at the stop; their VCPUs were "
      "resumed at their deadlines, and the exit does not wait for them",
      n);
  exporter_.reset();
  return out;
}

uint32_t engine::handler_calls_running() const {
  return handlers_ ? handlers_->functions_running() : 0;
}

std::vector<prometheus::MetricFamily> engine::collect() const {
  std::vector<prometheus::MetricFamily> out;
  for (auto& c : collectables_)
    for (auto& f : c->Collect())
      out.push_back(std::move(f));
  return out;
}

}  // namespace vmitap
