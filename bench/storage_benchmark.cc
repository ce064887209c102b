// What a new guest disk costs on each storage backend: a copy-on-write clone of a golden image.
//   BM_LocalClone       qemu-img create with a backing file (the local backend), plus its checks
//   BM_RbdClone         librbd clone of the image's protected snapshot (the rbd backend), plus checks
//   BM_RbdClone50       50 clones in a row and their deletion (a burst of new guests)
// The rbd benchmarks need a Ceph: UW_CEPH_DIR names a scripts/ceph directory (ctest's fixture `ceph`
// sets it); without one they are skipped with a message.
// Run: UW_CEPH_DIR=/var/tmp/uw-ceph-ctest build/bench/storage_benchmark --benchmark_format=json
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/json.h"
#include "storage/storage.h"
#include "tests/ceph_config.h"

namespace uw::storage {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kMiB = 1 << 20;

fs::path GoldenFile() {
  const fs::path p = fs::temp_directory_path() / ("uw-bench-golden-" + std::to_string(getpid()) + ".raw");
  if (!fs::exists(p)) {
    std::ofstream(p) << "UW-GOLDEN";
    fs::resize_file(p, 64 * kMiB);
  }
  return p;
}

std::unique_ptr<StorageBackend> OpenRbd(benchmark::State& state) {
  const char* dir = std::getenv("UW_CEPH_DIR");
  if (dir == nullptr) {
    state.SkipWithError("UW_CEPH_DIR is not set (a scripts/ceph directory; ctest's fixture `ceph` sets it)");
    return nullptr;
  }
  auto j = LoadJsonFile(std::string(dir) + "/ceph.json");
  if (!j.ok()) {
    state.SkipWithError(j.status().ToString().c_str());
    return nullptr;
  }
  auto b = OpenRbdBackend(uw::testing::RbdConfigOf(*j));
  if (!b.ok()) {
    state.SkipWithError(b.status().ToString().c_str());
    return nullptr;
  }
  return std::move(*b);
}

// Imports the golden image as `name` unless it is there.
bool EnsureImage(benchmark::State& state, StorageBackend& b, const std::string& name) {
  if (b.GetImage(name).ok()) return true;
  auto r = b.ImportImage(name, GoldenFile().string());
  if (!r.ok()) state.SkipWithError(r.status().ToString().c_str());
  return r.ok();
}

void CloneLoop(benchmark::State& state, StorageBackend& b, const std::string& image) {
  int i = 0;
  for (auto _ : state) {
    const std::string v = "bench-" + std::to_string(getpid()) + "-" + std::to_string(i++);
    auto made = b.CreateVolume({v, 0, image});
    if (!made.ok()) {
      state.SkipWithError(made.status().ToString().c_str());
      return;
    }
    state.PauseTiming();
    if (Status s = b.DeleteVolume(v); !s.ok()) state.SkipWithError(s.ToString().c_str());
    state.ResumeTiming();
  }
}

void BM_LocalClone(benchmark::State& state) {
  const fs::path dir = fs::temp_directory_path() / ("uw-bench-local-" + std::to_string(getpid()));
  auto b = OpenLocalBackend({dir.string()});
  if (!b.ok()) {
    state.SkipWithError(b.status().ToString().c_str());
    return;
  }
  if (!EnsureImage(state, **b, "golden")) return;
  CloneLoop(state, **b, "golden");
  b->reset();
  fs::remove_all(dir);
}
BENCHMARK(BM_LocalClone)->Unit(benchmark::kMillisecond);

void BM_RbdClone(benchmark::State& state) {
  auto b = OpenRbd(state);
  if (!b) return;
  const std::string image = "bench-golden-" + std::to_string(getpid());
  if (!EnsureImage(state, *b, image)) return;
  CloneLoop(state, *b, image);
  (void)b->DeleteImage(image);  // best effort: a benchmark run leaves no image behind
}
BENCHMARK(BM_RbdClone)->Unit(benchmark::kMillisecond);

void BM_RbdClone50(benchmark::State& state) {
  auto b = OpenRbd(state);
  if (!b) return;
  const std::string image = "bench-golden50-" + std::to_string(getpid());
  if (!EnsureImage(state, *b, image)) return;
  for (auto _ : state) {
    for (int i = 0; i < 50; ++i) {
      auto made = b->CreateVolume({"bench50-" + std::to_string(getpid()) + "-" + std::to_string(i), 0, image});
      if (!made.ok()) {
        state.SkipWithError(made.status().ToString().c_str());
        return;
      }
    }
    state.PauseTiming();
    for (int i = 0; i < 50; ++i) (void)b->DeleteVolume("bench50-" + std::to_string(getpid()) + "-" + std::to_string(i));
    state.ResumeTiming();
  }
  state.counters["clones"] = benchmark::Counter(50, benchmark::Counter::kIsIterationInvariantRate);
  (void)b->DeleteImage(image);
}
BENCHMARK(BM_RbdClone50)->Unit(benchmark::kMillisecond)->Iterations(2);

}  // namespace
}  // namespace uw::storage

BENCHMARK_MAIN();
