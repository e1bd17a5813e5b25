#include "trainer/search.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace sparse {
namespace {

constexpr int64_t kMinRoundRows = 64;     // fewer rows say nothing: fewer rounds
constexpr int64_t kRowsPerExpert = 8;     // at least this many fitting rows per expert
constexpr int64_t kMaxWidth = 1 << 16;    // t = E·k, to bound memory
constexpr size_t kFinalistsAtLeast = 4;   // halving never keeps fewer

int64_t Log2(int64_t e) {
  int64_t r = 0;
  while ((int64_t{1} << r) < e) ++r;
  return r;
}

// FLOPs per row of DESIGN.md §1, to choose candidates before training them.
int64_t EstimatedFlops(const SearchEntry& c, int64_t d, int64_t o) {
  const int64_t top = 2 * c.active_units * o;
  switch (c.router) {
    case RouterKind::kLsh: return 2 * Log2(c.experts) * d + 2 * c.active_units * d + top;
    case RouterKind::kHash: return 2 * c.active_units * d + top;
    case RouterKind::kKmeans: return 2 * c.experts * d + 2 * c.active_units * d + top;
    case RouterKind::kTopk: return 2 * c.width * d + top;
  }
  return 0;
}

// FP32 weights read per row: about one float per multiply-add.
bool Fits(int64_t flops, int64_t bytes, const SearchOptions& o) {
  return (o.budget_flops == 0 || flops <= o.budget_flops) &&
         (o.budget_bytes == 0 || bytes <= o.budget_bytes);
}
bool EstimateFits(const SearchEntry& c, int64_t d, int64_t o, const SearchOptions& options) {
  const int64_t flops = EstimatedFlops(c, d, o);
  return c.width <= kMaxWidth && Fits(flops, 2 * flops, options);
}

std::vector<SearchEntry> Candidates(const SearchOptions& options, int64_t fit_rows, int64_t d,
                                    int64_t o) {
  std::vector<SearchEntry> out;
  for (RouterKind router : {RouterKind::kLsh, RouterKind::kHash, RouterKind::kKmeans}) {
    for (int64_t e = 2; e * kRowsPerExpert <= fit_rows; e *= 2) {
      int64_t widest = 0;
      for (int64_t k = 2; k <= kMaxWidth; k *= 2) {
        if (EstimateFits({.router = router, .experts = e, .active_units = k, .width = e * k}, d, o,
                         options)) {
          widest = k;
        }
      }
      for (int64_t k : {widest, widest / 2}) {
        if (k >= 2) out.push_back({.router = router, .experts = e, .active_units = k, .width = e * k});
      }
    }
  }
  for (int64_t t = 8; t <= kMaxWidth; t *= 2) {
    const SearchEntry topk{.router = RouterKind::kTopk, .active_units = t / 4, .width = t};
    if (EstimateFits(topk, d, o, options)) out.push_back(topk);
  }
  return out;
}

Dataset Head(const Dataset& data, int64_t rows) {
  Dataset out;
  out.rows = rows;
  out.d = data.d;
  out.o = data.o;
  out.x.assign(data.x.begin(), data.x.begin() + rows * data.d);
  out.y.assign(data.y.begin(), data.y.begin() + rows * data.o);
  return out;
}

TrainOptions OptionsFor(const TrainOptions& base, const SearchEntry& c) {
  TrainOptions t = base;
  t.kind = ModelKind::kDsm;
  t.router = c.router;
  t.experts = std::max<int64_t>(c.experts, 1);
  t.active_units = c.active_units;
  t.topk_width = c.width;
  t.blocks = 1;
  return t;
}

// Trains one candidate on `fit`, measures it on `validation`. A candidate
// that cannot be trained is kept, with an infinite MSE and the reason.
void TrainEntry(const Dataset& fit, const Dataset& validation, const SearchOptions& options,
                SearchEntry& e) {
  TrainOptions t = OptionsFor(options.base, e);
  t.progress = nullptr;
  e.rows = fit.rows;
  absl::StatusOr<TrainResult> r = Train(fit, validation, t);
  if (!r.ok()) {
    e.validation_mse = e.dense_validation_mse = std::numeric_limits<double>::infinity();
    e.warning = absl::StrCat("not trained: ", r.status().message());
    return;
  }
  e.validation_mse = r->sparse.test_mse;
  e.dense_validation_mse = r->dense.test_mse;
  e.flops_per_row = r->sparse.flops_per_row;
  e.weight_bytes_per_row = r->sparse.weight_bytes_per_row;
  e.over_budget = !Fits(e.flops_per_row, e.weight_bytes_per_row, options);
  e.warning.clear();
  if (e.experts > 0 && fit.rows / e.experts < e.active_units) {
    e.warning = absl::StrCat(e.experts, " experts on ", fit.rows, " rows: about ",
                             fit.rows / e.experts, " rows per expert for ", e.active_units,
                             " units each; its fit leans on the ridge");
  }
}

// Within budget and trained first, then by validation MSE.
bool Better(const SearchEntry& a, const SearchEntry& b) {
  if (a.over_budget != b.over_budget) return !a.over_budget;
  return a.validation_mse < b.validation_mse;
}

void MarkPareto(std::vector<SearchEntry>& entries, int64_t final_round) {
  auto eligible = [final_round](const SearchEntry& e) {
    return e.round == final_round && !e.over_budget && std::isfinite(e.validation_mse);
  };
  for (SearchEntry& p : entries) {
    p.pareto = eligible(p) && std::none_of(entries.begin(), entries.end(), [&](const SearchEntry& q) {
      return &q != &p && eligible(q) && q.flops_per_row <= p.flops_per_row &&
             q.weight_bytes_per_row <= p.weight_bytes_per_row &&
             q.validation_mse <= p.validation_mse &&
             (q.flops_per_row < p.flops_per_row || q.weight_bytes_per_row < p.weight_bytes_per_row ||
              q.validation_mse < p.validation_mse);
    });
  }
}

}  // namespace

absl::StatusOr<SearchResult> Search(const Dataset& train, const SearchOptions& options) {
  if (options.budget_flops <= 0 && options.budget_bytes <= 0) {
    return absl::InvalidArgumentError(
        "--search needs a budget: --budget_flops (FLOPs per row) or --budget_bytes (weight bytes "
        "per row)");
  }
  SearchResult result;
  ASSIGN_OR_RETURN(auto split, SplitHoldout(train, options.validation, options.base.seed));
  const Dataset& fit = split.first;
  const Dataset& validation = split.second;
  result.fit_rows = fit.rows;
  result.validation_rows = validation.rows;
  result.entries = Candidates(options, fit.rows, fit.d, fit.o);
  if (result.entries.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "no DSM fits a budget of ", options.budget_flops, " FLOPs and ", options.budget_bytes,
        " weight bytes per row (0 = none) at d=", fit.d, ", o=", fit.o,
        "; the smallest needs 2 units per expert and 2 experts"));
  }
  result.rounds = 1;
  while (result.rounds < options.rounds && (fit.rows >> result.rounds) >= kMinRoundRows) {
    ++result.rounds;
  }
  std::vector<size_t> alive(result.entries.size());
  std::iota(alive.begin(), alive.end(), 0);
  // One OpenMP thread per candidate fit: they are small, and a parallel
  // region's barriers cost more than a second thread gives back (48
  // candidates on 4,000 rows of a busy 2-core machine: 1.8 s, not 16.6 s).
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  for (int64_t round = 0; round < result.rounds; ++round) {
    const Dataset part = Head(fit, fit.rows >> (result.rounds - 1 - round));
    if (options.base.progress) {
      options.base.progress(absl::StrCat("search round ", round + 1, "/", result.rounds, ": ",
                                         alive.size(), " candidates on ", part.rows, " rows"));
    }
    for (size_t i : alive) {
      result.entries[i].round = round;
      TrainEntry(part, validation, options, result.entries[i]);
    }
    std::sort(alive.begin(), alive.end(),
              [&](size_t a, size_t b) { return Better(result.entries[a], result.entries[b]); });
    alive.resize(std::min(alive.size(), std::max(kFinalistsAtLeast, (alive.size() + 1) / 2)));
  }
  omp_set_num_threads(threads);
  const SearchEntry& best = result.entries[alive.front()];
  if (best.over_budget || !std::isfinite(best.validation_mse)) {
    return absl::InvalidArgumentError(
        "no candidate trained within the budget (measured FLOPs and bytes per row)");
  }
  result.chosen_options = OptionsFor(options.base, best);
  MarkPareto(result.entries, result.rounds - 1);
  const SearchEntry chosen = best;
  std::stable_sort(result.entries.begin(), result.entries.end(),
                   [](const SearchEntry& a, const SearchEntry& b) {
                     if (a.round != b.round) return a.round > b.round;
                     return a.flops_per_row < b.flops_per_row;
                   });
  for (size_t i = 0; i < result.entries.size(); ++i) {
    const SearchEntry& e = result.entries[i];
    if (e.round == chosen.round && e.router == chosen.router && e.experts == chosen.experts &&
        e.active_units == chosen.active_units && e.width == chosen.width) {
      result.chosen = i;
    }
  }
  return result;
}

std::string FormatSearchTable(const SearchResult& result, const SearchOptions& options) {
  std::string out = absl::StrFormat(
      "search: budget %s per row; %d candidates, %d round(s) of successive halving on %d fitting "
      "rows (validation %d rows)\n",
      options.budget_flops > 0 && options.budget_bytes > 0
          ? absl::StrCat(options.budget_flops, " FLOPs and ", options.budget_bytes, " weight bytes")
          : options.budget_flops > 0 ? absl::StrCat(options.budget_flops, " FLOPs")
                                     : absl::StrCat(options.budget_bytes, " weight bytes"),
      result.entries.size(), result.rounds, result.fit_rows, result.validation_rows);
  absl::StrAppendFormat(&out, "     %-7s %5s %6s %7s %10s %10s %12s %12s  %s\n", "router", "E", "k", "t",
                        "FLOPs/row", "bytes/row", "val MSE", "dense val", "rows");
  std::vector<std::string> warnings;
  for (size_t i = 0; i < result.entries.size(); ++i) {
    const SearchEntry& e = result.entries[i];
    const std::string mark = absl::StrCat(i == result.chosen ? ">" : " ", e.pareto ? "*" : " ",
                                          e.over_budget ? "!" : " ");
    absl::StrAppendFormat(&out, "  %s%-7s %5s %6d %7d %10d %10d %12.4e %12.4e  %d\n", mark,
                          RouterKindName(e.router),
                          e.experts > 0 ? absl::StrCat(e.experts) : std::string("-"),
                          e.active_units, e.width, e.flops_per_row, e.weight_bytes_per_row,
                          e.validation_mse, e.dense_validation_mse, e.rows);
    if (!e.warning.empty() && e.round + 1 == result.rounds) {
      warnings.push_back(absl::StrCat("  warning: ", RouterKindName(e.router), " E=", e.experts,
                                      " k=", e.active_units, ": ", e.warning, "\n"));
    }
  }
  absl::StrAppend(&out,
                  "  > chosen (lowest validation MSE in the last round), * Pareto front of the "
                  "last round (FLOPs, bytes, MSE), ! over budget as measured\n");
  for (const std::string& w : warnings) absl::StrAppend(&out, w);
  return out;
}

}  // namespace sparse
