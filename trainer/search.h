// sparse-train --search: picks a DSM (router, experts E, units per expert k)
// for a data set under a cost budget per row, by successive halving on a
// validation split of the training rows (issue 31, "a trainer that picks a
// good model").
//
// Candidates: for each router (lsh, hash, kmeans) and each E = 2, 4, ...
// (at most one expert per 8 fitting rows), the two widest k = 2^j whose
// FLOPs per row (DESIGN.md §1) fit the budget; for topk, t = 2k, 4k, ...,
// 16k with the widest such k. Round r of R trains every candidate still in
// on the first n / 2^(R-1-r) fitting rows and keeps the better half by
// validation MSE; the last round uses every fitting row. A candidate whose
// measured FLOPs or weight bytes per row exceed the budget is dropped.
#ifndef SPARSE_TRAINER_SEARCH_H_
#define SPARSE_TRAINER_SEARCH_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/dataset.h"
#include "trainer/trainer.h"

namespace sparse {

struct SearchOptions {
  int64_t budget_flops = 0;  // FLOPs per row; 0 = no FLOPs budget
  int64_t budget_bytes = 0;  // FP32 weight bytes read per row; 0 = none
  double validation = 0.2;   // fraction of the training rows held out to choose
  int64_t rounds = 3;        // successive-halving rounds (fewer on few rows)
  // Everything the search does not choose (activation, ridge, precision,
  // seed, dense twin width ...); kind must be kDsm, blocks 1.
  TrainOptions base = {};
};

struct SearchEntry {
  RouterKind router = RouterKind::kLsh;
  int64_t experts = 0;       // 0 for topk
  int64_t active_units = 0;  // k
  int64_t width = 0;         // t: E·k, or topk's width
  int64_t round = 0;         // the last round it was trained in (0-based)
  int64_t rows = 0;          // fitting rows in that round
  double validation_mse = 0;
  double dense_validation_mse = 0;  // its dense twin, same rows
  int64_t flops_per_row = 0;        // measured by the engine
  int64_t weight_bytes_per_row = 0;
  bool over_budget = false;  // measured cost above the budget: never chosen
  bool pareto = false;       // final round: no other is as cheap and better
  std::string warning = "";  // e.g. experts with fewer rows than units
};

struct SearchResult {
  std::vector<SearchEntry> entries;  // every candidate, final round first
  size_t chosen = 0;                 // index into entries
  int64_t rounds = 0;
  int64_t fit_rows = 0, validation_rows = 0;
  TrainOptions chosen_options;       // base with the chosen router, E, k
};

// Errors: INVALID_ARGUMENT for no budget, a budget no candidate fits, or
// too few rows to split; training errors otherwise. `base.progress` gets a
// line per round.
absl::StatusOr<SearchResult> Search(const Dataset& train, const SearchOptions& options);

// The table sparse-train prints: one line per candidate (router, E, k, t,
// FLOPs and bytes per row, validation MSE of the model and of its dense
// twin, the round it reached), '*' on the Pareto front, '>' on the chosen
// one, then the warnings.
std::string FormatSearchTable(const SearchResult& result, const SearchOptions& options);

}  // namespace sparse

#endif  // SPARSE_TRAINER_SEARCH_H_
