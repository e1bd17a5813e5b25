// Predictions for any number of rows. The server refuses a request of more
// rows than its --max_batch_rows; PredictBatched (sparse-cli predict) splits
// an input into requests of at most that many rows, sends them one after
// another in order, and joins the answers into one response, as the Python
// client's predict does. WritePredictions stores the outputs as CSV or .npy.
// ParseRows and ReadRowsFile read input rows (predict's --inputs and --csv,
// bench's --rows).
#ifndef SPARSE_CLIENT_BATCHED_PREDICT_H_
#define SPARSE_CLIENT_BATCHED_PREDICT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "client/client.h"
#include "sparse/v1/inference.pb.h"

namespace sparse {

struct BatchedPredictOptions {
  int64_t version = 0;  // 0: the newest, pinned to what the first request got
  bool dense = false;   // PredictDense
  bool route = false;
  // Rows per request; 0 asks the server (GetModel's max_batch_rows; a server
  // that does not say gets the whole input in one request).
  int64_t max_rows = 0;
  // Called on the caller's thread after each request: rows answered, rows in all.
  std::function<void(int64_t done, int64_t total)> progress;
};

// Predicts `rows` rows of `inputs` (row-major) through `client` in requests
// of at most the row limit. Every request after the first names the version
// the first was answered by, so a version swapped in halfway does not mix
// models. The response holds every row's outputs (and route) in order; its
// cost is the requests' summed (batch_size: the largest, round trip: the
// wall time of all). The first failing request's error is returned, naming
// the rows it held when there were several requests.
absl::StatusOr<SparseClient::Call> PredictBatched(SparseClient& client, const std::string& model,
                                                  int64_t rows, absl::Span<const float> inputs,
                                                  const BatchedPredictOptions& options);

// Appends the answer for the rows after `into`'s (the same model, version
// and output width): outputs, route, costs summed.
void AppendResponse(const sparse::v1::PredictResponse& next, sparse::v1::PredictResponse* into);

// The bytes of a .npy file (NPY format 1.0) holding `values` as a
// little-endian float32 array of shape (rows, cols), C order.
std::string NpyBytes(absl::Span<const float> values, int64_t rows, int64_t cols);

// Writes predictions of `rows` rows, `cols` outputs each, to `path` by its
// extension: ".csv" (a header row "output_0,...", or "<path>_0,..." per
// path given, then one row per input, values that read back to the same
// float32) or ".npy" (one path only: an array (rows, cols)). `paths` holds
// each path's label and its rows x cols outputs.
absl::Status WritePredictions(const std::string& path, int64_t rows, int64_t cols,
                              const std::vector<std::pair<std::string, std::vector<float>>>& paths);

// Rows of numbers from "a,b;c,d" (`row_sep` ';') or CSV text (`row_sep`
// '\n', where a first line that is not numbers is a header and skipped).
// Every row must have as many values as the first; errors name `source`
// and the row.
absl::StatusOr<std::vector<std::vector<float>>> ParseRows(const std::string& text, char row_sep,
                                                          absl::string_view source);

// The rows of a file by its extension: ".npy" (a float32 or float64 array
// of shape (rows, cols) or (cols,), little-endian, C order) or otherwise CSV
// as ParseRows reads it. `flag` names the flag in errors (e.g. "--rows").
absl::StatusOr<std::vector<std::vector<float>>> ReadRowsFile(const std::string& path,
                                                             absl::string_view flag);

}  // namespace sparse

#endif  // SPARSE_CLIENT_BATCHED_PREDICT_H_
