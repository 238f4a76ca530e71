// lal bench bus — hop latency (publish → handler entry) and throughput of the message bus.
#include <algorithm>
#include <atomic>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "command.hpp"
#include "lal/runtime/bus.hpp"

namespace lal::cli {
namespace {

struct Blob {
  static constexpr const char* kTypeName = "lal.bench.Blob/1";
  std::vector<char> bytes;
};

struct Result {
  double p50_us = 0, p90_us = 0, p99_us = 0, max_us = 0;
  double publishes_per_s = 0, deliveries_per_s = 0;
  std::uint64_t dropped = 0;
};

double percentile(std::vector<std::int64_t>& v, double q) {
  if (v.empty()) return 0;
  const std::size_t k = std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return static_cast<double>(v[k]) / 1000.0;
}

Result bench(std::size_t fanout, std::size_t payload, std::size_t latency_samples, std::size_t throughput_msgs,
             runtime::BusOptions options) {
  Result r;
  runtime::Bus bus(options);
  auto topic = bus.topic("bench", Blob::kTypeName);
  std::vector<std::vector<std::int64_t>> lat(fanout);
  std::atomic<std::uint64_t> received{0};
  std::atomic<bool> record{true};
  for (std::size_t i = 0; i < fanout; ++i) {
    lat[i].reserve(latency_samples);
    auto member = bus.add_member("sub" + std::to_string(i));
    // A bounded mailbox with back-pressure, as pipelines use: the throughput phase measures the steady state, not
    // how fast a million queued payloads can be allocated.
    bus.subscribe(member, topic, 4096, OverflowPolicy::block, [&, i](const ErasedMessage& m) {
      const std::int64_t now = monotonic_ns();
      if (record.load(std::memory_order_relaxed)) lat[i].push_back(now - m.header.timestamp_ns);
      received.fetch_add(1, std::memory_order_release);
    });
  }
  // Latency: one message in flight at a time; the hop is publish → each subscriber's handler entry.
  for (std::size_t n = 0; n < latency_samples + 1000; ++n) {
    if (n == 1000) {  // warm-up done
      for (auto& l : lat) l.clear();
      record.store(true);
    }
    const std::uint64_t target = received.load() + fanout;
    auto blob = std::make_shared<Blob>();
    blob->bytes.resize(payload);
    bus.publish(topic, std::move(blob), {});
    while (received.load(std::memory_order_acquire) < target) {
    }
  }
  std::vector<std::int64_t> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  r.p50_us = percentile(all, 0.50);
  r.p90_us = percentile(all, 0.90);
  r.p99_us = percentile(all, 0.99);
  r.max_us = all.empty() ? 0 : static_cast<double>(*std::max_element(all.begin(), all.end())) / 1000.0;

  // Throughput: publish as fast as possible, until every subscriber has handled every message. Payloads come from
  // a pool built beforehand (messages are immutable and shared, so publishing one again is legitimate): this
  // measures the bus, not malloc — allocating a payload per message is the producer's cost, reported separately.
  record.store(false);
  bus.wait_idle();
  std::vector<std::shared_ptr<const Blob>> pool;
  for (int i = 0; i < 256; ++i) {
    auto blob = std::make_shared<Blob>();
    blob->bytes.resize(payload);
    pool.push_back(std::move(blob));
  }
  const std::uint64_t start_count = received.load();
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t n = 0; n < throughput_msgs; ++n) bus.publish(topic, pool[n % pool.size()], {});
  bus.wait_idle();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.publishes_per_s = static_cast<double>(throughput_msgs) / secs;
  r.deliveries_per_s = static_cast<double>(received.load() - start_count) / secs;
  r.dropped = bus.total_dropped();
  return r;
}

int bench_bus_command(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  desc.add_options()("json", "print one JSON object instead of a table")(
      "threads", po::value<std::size_t>()->default_value(2), "bus worker threads")(
      "spin_us", po::value<long>()->default_value(50), "idle spin of a worker before it sleeps (µs)")(
      "samples", po::value<std::size_t>()->default_value(20000), "latency samples per case")(
      "messages", po::value<std::size_t>()->default_value(500000), "messages per throughput case");
  po::variables_map vm;
  if (!parse_command_line("bench bus", "[--json] [--threads N] [--samples N] [--messages N]", args, desc, {}, vm))
    return 0;
  runtime::BusOptions options;
  options.threads = vm["threads"].as<std::size_t>();
  options.spin = std::chrono::microseconds(vm["spin_us"].as<long>());
  if (options.threads == 0) throw UsageError("--threads must be at least 1");
  nlohmann::json out;
  out["threads"] = options.threads;
  out["spin_us"] = options.spin.count();
  out["hardware_threads"] = std::thread::hardware_concurrency();
  out["cases"] = nlohmann::json::array();
  const bool json = vm.count("json") != 0;
  if (!json)
    std::cout << "fan-out  payload   p50 µs   p90 µs   p99 µs   publishes/s   deliveries/s\n";
  for (std::size_t fanout : {1, 4}) {
    for (std::size_t payload : {64, 4096}) {
      const Result r = bench(fanout, payload, vm["samples"].as<std::size_t>(), vm["messages"].as<std::size_t>(), options);
      out["cases"].push_back({{"fanout", fanout},
                              {"payload_bytes", payload},
                              {"latency_us", {{"p50", r.p50_us}, {"p90", r.p90_us}, {"p99", r.p99_us}, {"max", r.max_us}}},
                              {"publishes_per_s", r.publishes_per_s},
                              {"deliveries_per_s", r.deliveries_per_s},
                              {"dropped", r.dropped}});
      if (!json) {
        char line[160];
        std::snprintf(line, sizeof line, "1→%-5zu %6zu B %8.2f %8.2f %8.2f %13.0f %14.0f\n", fanout, payload, r.p50_us,
                      r.p90_us, r.p99_us, r.publishes_per_s, r.deliveries_per_s);
        std::cout << line;
      }
    }
  }
  if (json) std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace

LAL_COMMAND("bench bus", "message-bus hop latency and throughput (1→1, 1→4; 64 B, 4 KiB)", bench_bus_command);

}  // namespace lal::cli
