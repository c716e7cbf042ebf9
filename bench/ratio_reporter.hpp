// The closing table of the benchmark programs: every `<op>_nnops` run beside each
// `<op>_<baseline>` run of the same arguments, as baseline time / nnops time from the medians of
// the repetitions.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace nnops::bench {

// Records seconds per iteration of every run (every repetition), then prints the ratio table
// from the medians. On a shared machine, run with --benchmark_repetitions=5
// --benchmark_enable_random_interleaving=true so both sides of a pair see the same conditions.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (r.run_type == Run::RT_Iteration && r.iterations > 0) {
        samples_[r.run_name.str()].push_back(r.real_accumulated_time /
                                             static_cast<double>(r.iterations));
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
  void print_ratios() {
    for (auto& [name, times] : samples_) {
      std::sort(times.begin(), times.end());
      seconds_[name] = times[times.size() / 2];
    }
    print_table();
  }
  void print_table() const {
    const std::vector<std::string> baselines = {"openblas",    "onednn",   "cublas", "cublaslt",
                                                "ceiling",     "f32",      "nth_element",
                                                "cub_sort",    "dense",    "cusparse",
                                                "simple",      "direct"};
    std::printf(
        "\n%-40s %-14s %10s   (baseline time / nnops time; > 1 means nnops is faster;\n"
        "%-40s %-14s %10s    vs 'ceiling' it is the fraction of copy bandwidth reached)\n",
        "benchmark", "baseline", "ratio", "", "", "");
    for (const auto& [name, t] : seconds_) {
      const auto pos = name.find("_nnops");
      if (pos == std::string::npos) continue;
      for (const std::string& b : baselines) {
        std::string other = name;
        other.replace(pos, 6, "_" + b);
        const auto it = seconds_.find(other);
        if (it != seconds_.end())
          std::printf("%-40s %-14s %10.3f\n", name.c_str(), b.c_str(), it->second / t);
      }
    }
  }

 private:
  std::map<std::string, std::vector<double>> samples_;
  std::map<std::string, double> seconds_;
};

// The body of each benchmark program's main(): run what the flags select, then the table.
inline int run_with_ratio_table(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.print_ratios();
  benchmark::Shutdown();
  return 0;
}

}  // namespace nnops::bench
