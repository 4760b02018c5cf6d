// The multi-threaded work loop of the CPU references (dense and sparse decode): independent
// work items taken from a shared counter by a few threads, each with its own scratch space.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace flashmla::reference {

constexpr int kMaxReferenceThreads = 32;
constexpr double kMinMacsPerThread = 2e7;  // below this, threads cost more than they save

inline int usable_threads() {
  return std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, kMaxReferenceThreads);
}

// Runs computer.run(item, scratch) for every item on `threads` threads (1: on the caller's),
// each thread with one default-constructed Scratch. The first exception a thread throws stops
// the remaining items and is rethrown here.
template <typename Scratch, typename Computer, typename Item>
void run_items(const Computer& computer, const std::vector<Item>& items, int threads) {
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  const auto worker = [&] {
    Scratch scratch;
    try {
      for (size_t i = next++; i < items.size(); i = next++) computer.run(items[i], scratch);
    } catch (...) {  // e.g. bad_alloc: hand it to the caller instead of terminating
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next = items.size();
    }
  };
  if (threads == 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; ++i) pool.emplace_back(worker);
    for (auto& thread : pool) thread.join();
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace flashmla::reference
