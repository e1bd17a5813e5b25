// Datasets for sparse-train: the paper's synthetic Lipschitz functions
// (section 5, appendix D) sampled on U[-1,1]^d, and users' own data from CSV
// or NumPy .npy files. Everything is seeded and reproducible.
#ifndef SPARSE_TRAINER_DATASET_H_
#define SPARSE_TRAINER_DATASET_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sparse {

// rows x d inputs and rows x o targets, row-major float32.
struct Dataset {
  int64_t rows = 0;
  int64_t d = 0;
  int64_t o = 0;
  std::vector<float> x;
  std::vector<float> y;
};

enum class SyntheticKind {
  kPolynomial,   // random degree-D polynomial, Σ|coefficients| = 1
  kHypercube,    // multilinear interpolation of random ±1 corner values
  kReluNet,      // random 3-layer ReLU network
  kManifold,     // p(Ax), A in R^{k×d} with orthonormal rows, Σ|c| = 1/D
};
absl::StatusOr<SyntheticKind> ParseSyntheticKind(absl::string_view name);
absl::string_view SyntheticKindName(SyntheticKind kind);

struct SyntheticSpec {
  SyntheticKind kind = SyntheticKind::kPolynomial;
  int64_t d = 8;
  int64_t degree = 4;          // D (polynomial, manifold)
  int64_t manifold_dim = 8;    // k (manifold)
  int64_t relu_width = 64;     // hidden width of both layers (relu_net)
  uint64_t seed = 1;           // draws the function
};

// A target function drawn once from its spec. Thread-compatible.
class TargetFunction {
 public:
  virtual ~TargetFunction() = default;
  // Errors on dimensions out of range (e.g. hypercube with d > 20).
  static absl::StatusOr<std::unique_ptr<TargetFunction>> Create(const SyntheticSpec& spec);
  // y[r] = f(x[r]) for rows x d inputs.
  virtual void Evaluate(const float* x, int64_t rows, float* y) const = 0;
  virtual std::string Describe() const = 0;
};

// `rows` inputs from U[-1,1]^d (seeded) and their targets f(x); o = 1.
Dataset SampleDataset(const TargetFunction& f, int64_t d, int64_t rows, uint64_t seed);

struct CsvOptions {
  int64_t outputs = 1;  // the last `outputs` columns are targets
  // ',', ';' or '\t'; 0 sniffs it from the first line that is not a comment
  // or blank: a tab if it holds one, else ';' if it holds one (so "1,5;2,5"
  // is two fields with decimal commas, refused as such), else ','.
  char separator = 0;
};

// "','", "';'" or "tab", as messages name a separator.
std::string SeparatorName(char separator);
// ',' ';' or '\t' from what --csv_separator accepts: ",", ";", "tab" or a tab.
absl::StatusOr<char> ParseSeparator(absl::string_view text);

// Reads a CSV of numbers, one row per line: the last `outputs` columns are
// targets, the rest inputs. Lines starting with '#' (after blanks) are
// comments and skipped, as are blank lines. A first line without a single
// number is a header. Errors name the line and the separator in use (and
// whether it was sniffed): wrong column count, non-numeric or non-finite
// values, no data rows.
absl::StatusOr<Dataset> ReadCsv(const std::string& path, const CsvOptions& options);

// Reads inputs [n, d] and targets [n] or [n, o] from two .npy files
// (little-endian float32 or float64, C order).
absl::StatusOr<Dataset> ReadNpy(const std::string& x_path, const std::string& y_path);

// Reads an IDX pair, the format of MNIST and Fashion-MNIST: images [n, h, w]
// of unsigned bytes (magic 0x00000803) and labels [n] of unsigned bytes
// (0x00000801), each gzip-compressed or not. Inputs are the pixels / 255
// (d = h·w), targets one-hot over `classes` (o = classes; 0 = the largest
// label + 1). Errors name the file and what was expected: a wrong magic, a
// count that differs between the files, a file cut short or with bytes
// after its data, a corrupt gzip stream, a label >= classes, an image over
// 2^20 pixels, a FIFO or device (refused without blocking).
absl::StatusOr<Dataset> ReadIdx(const std::string& images_path, const std::string& labels_path,
                                int64_t classes = 0);

// Splits off the last `fraction` of a seeded shuffle as a test set.
absl::StatusOr<std::pair<Dataset, Dataset>> SplitHoldout(const Dataset& data, double fraction,
                                                         uint64_t seed);

}  // namespace sparse

#endif  // SPARSE_TRAINER_DATASET_H_
