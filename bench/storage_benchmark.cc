// What a new guest disk costs on each storage backend: a copy-on-write clone of a golden image (64
// MiB of data), against a full copy of it.
//   BM_LocalClone       qemu-img create with a backing file (the local backend), plus its checks
//   BM_RbdClone         librbd clone of the image's protected snapshot (the rbd backend), plus checks
//   BM_LocalCopy        a full copy of the same image instead (qemu-img convert into a new image)
//   BM_RbdCopy          a full copy on RBD (the image's bytes written into a new RBD image)
//   BM_LocalClone50     50 clones in a row (a burst of new guests): p50 and p99 of one clone
//   BM_RbdClone50       the same on RBD
//   BM_RbdGetVolume     librados small ops from this process: open a clone, stat it, list its watchers
// The rbd benchmarks need a Ceph: UW_CEPH_DIR names a scripts/ceph directory (ctest's fixture `ceph`
// sets it); without one they are skipped with a message.
// Run: UW_CEPH_DIR=/var/tmp/uw-ceph-ctest build/bench/storage_benchmark --benchmark_format=json
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include "common/json.h"
#include "storage/storage.h"
#include "tests/ceph_config.h"

namespace uw::storage {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kMiB = 1 << 20;

fs::path GoldenPath() { return fs::temp_directory_path() / ("uw-bench-golden-" + std::to_string(getpid()) + ".raw"); }

// Removes the golden file when the run ends.
struct GoldenRemover {
  ~GoldenRemover() {
    std::error_code ec;
    fs::remove(GoldenPath(), ec);
  }
} golden_remover;

fs::path GoldenFile() {
  const fs::path p = GoldenPath();
  if (!fs::exists(p)) {
    // 64 MiB of data (not a sparse file: a full copy must move every byte, as with a real image).
    std::ofstream out(p, std::ios::binary);
    std::string block(kMiB, '\0');
    for (size_t i = 0; i < block.size(); ++i) block[i] = static_cast<char>('A' + i % 23);
    out << "UW-GOLDEN";
    for (int i = 0; i < 64; ++i) out << block;
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

// Runs `fn` on a local backend in a directory of its own, removed afterwards.
template <class Fn>
void WithLocalBackend(benchmark::State& state, const std::string& tag, Fn fn) {
  const fs::path dir = fs::temp_directory_path() / ("uw-bench-" + tag + "-" + std::to_string(getpid()));
  auto b = OpenLocalBackend({dir.string()});
  if (!b.ok()) {
    state.SkipWithError(b.status().ToString().c_str());
    return;
  }
  fn(**b);
  b->reset();
  fs::remove_all(dir);
}

void BM_LocalClone(benchmark::State& state) {
  WithLocalBackend(state, "local", [&](StorageBackend& b) {
    if (EnsureImage(state, b, "golden")) CloneLoop(state, b, "golden");
  });
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

// A full copy of the golden image as a new image (what provisioning without clones costs).
void CopyLoop(benchmark::State& state, StorageBackend& b) {
  int i = 0;
  for (auto _ : state) {
    const std::string name = "bench-copy-" + std::to_string(getpid()) + "-" + std::to_string(i++);
    auto made = b.ImportImage(name, GoldenFile().string());
    if (!made.ok()) {
      state.SkipWithError(made.status().ToString().c_str());
      return;
    }
    state.PauseTiming();
    if (Status s = b.DeleteImage(name); !s.ok()) state.SkipWithError(s.ToString().c_str());
    state.ResumeTiming();
  }
  state.counters["image_mib"] = static_cast<double>(fs::file_size(GoldenFile())) / kMiB;
}

void BM_LocalCopy(benchmark::State& state) {
  WithLocalBackend(state, "local-copy", [&](StorageBackend& b) { CopyLoop(state, b); });
}
BENCHMARK(BM_LocalCopy)->Unit(benchmark::kMillisecond);

void BM_RbdCopy(benchmark::State& state) {
  auto b = OpenRbd(state);
  if (!b) return;
  CopyLoop(state, *b);
}
BENCHMARK(BM_RbdCopy)->Unit(benchmark::kMillisecond);

// 50 clones in a row, each timed; then their deletion (untimed). Reports the p50 and p99 of one.
void Burst50(benchmark::State& state, StorageBackend& b, const std::string& image) {
  std::vector<double> ms;
  for (auto _ : state) {
    for (int i = 0; i < 50; ++i) {
      const auto start = std::chrono::steady_clock::now();
      auto made = b.CreateVolume({"bench50-" + std::to_string(getpid()) + "-" + std::to_string(i), 0, image});
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
      if (!made.ok()) {
        state.SkipWithError(made.status().ToString().c_str());
        return;
      }
    }
    state.PauseTiming();
    for (int i = 0; i < 50; ++i) (void)b.DeleteVolume("bench50-" + std::to_string(getpid()) + "-" + std::to_string(i));
    state.ResumeTiming();
  }
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) {
    return ms[std::min(ms.size() - 1, static_cast<size_t>(q * static_cast<double>(ms.size())))];
  };
  state.counters["clones"] = benchmark::Counter(50, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["clone_p50_ms"] = at(0.50);
  state.counters["clone_p99_ms"] = at(0.99);
}

void BM_LocalClone50(benchmark::State& state) {
  WithLocalBackend(state, "local50", [&](StorageBackend& b) {
    if (EnsureImage(state, b, "golden")) Burst50(state, b, "golden");
  });
}
BENCHMARK(BM_LocalClone50)->Unit(benchmark::kMillisecond)->Iterations(2);

void BM_RbdClone50(benchmark::State& state) {
  auto b = OpenRbd(state);
  if (!b) return;
  const std::string image = "bench-golden50-" + std::to_string(getpid());
  if (!EnsureImage(state, *b, image)) return;
  Burst50(state, *b, image);
  (void)b->DeleteImage(image);
}
BENCHMARK(BM_RbdClone50)->Unit(benchmark::kMillisecond)->Iterations(2);

void BM_RbdGetVolume(benchmark::State& state) {
  auto b = OpenRbd(state);
  if (!b) return;
  const std::string image = "bench-golden-get-" + std::to_string(getpid());
  const std::string volume = "bench-get-" + std::to_string(getpid());
  if (!EnsureImage(state, *b, image)) return;
  if (auto made = b->CreateVolume({volume, 0, image}); !made.ok()) {
    state.SkipWithError(made.status().ToString().c_str());
    return;
  }
  for (auto _ : state) {
    auto v = b->GetVolume(volume);
    if (!v.ok()) {
      state.SkipWithError(v.status().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(v->virtual_bytes);
  }
  (void)b->DeleteVolume(volume);
  (void)b->DeleteImage(image);
}
BENCHMARK(BM_RbdGetVolume)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace uw::storage

BENCHMARK_MAIN();
