#include "trainer/dataset.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <regex>

#include <zlib.h>

#include "Eigen/Dense"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "model_store/file_util.h"

namespace sparse {
namespace {

// ---- Polynomials --------------------------------------------------------------

// Σ_m c_m Π_i u_i^{e_mi} over all monomials of total degree <= D.
class Polynomial {
 public:
  Polynomial(int64_t vars, int64_t degree, double abs_sum, std::mt19937_64& rng)
      : vars_(vars), degree_(degree) {
    std::vector<int> exponents(vars, 0);
    Enumerate(0, degree, exponents);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    double total = 0;
    for (Monomial& m : monomials_) {
      m.coefficient = u(rng);
      total += std::fabs(m.coefficient);
    }
    for (Monomial& m : monomials_) m.coefficient *= abs_sum / total;
  }
  double Evaluate(const double* u) const {
    // powers[i * (D+1) + p] = u_i^p
    thread_local std::vector<double> powers;
    powers.resize(vars_ * (degree_ + 1));
    for (int64_t i = 0; i < vars_; ++i) {
      double p = 1;
      for (int64_t e = 0; e <= degree_; ++e, p *= u[i]) powers[i * (degree_ + 1) + e] = p;
    }
    double y = 0;
    for (const Monomial& m : monomials_) {
      double term = m.coefficient;
      for (const auto& [var, exp] : m.factors) term *= powers[var * (degree_ + 1) + exp];
      y += term;
    }
    return y;
  }
  size_t size() const { return monomials_.size(); }

 private:
  struct Monomial {
    std::vector<std::pair<int64_t, int>> factors;  // (variable, exponent > 0)
    double coefficient = 0;
  };
  void Enumerate(int64_t var, int64_t left, std::vector<int>& exponents) {
    if (var == vars_) {
      Monomial m;
      for (int64_t i = 0; i < vars_; ++i) {
        if (exponents[i] > 0) m.factors.emplace_back(i, exponents[i]);
      }
      monomials_.push_back(std::move(m));
      return;
    }
    for (int e = 0; e <= left; ++e) {
      exponents[var] = e;
      Enumerate(var + 1, left - e, exponents);
    }
    exponents[var] = 0;
  }
  int64_t vars_, degree_;
  std::vector<Monomial> monomials_;
};

class PolynomialFunction : public TargetFunction {
 public:
  PolynomialFunction(const SyntheticSpec& spec, std::mt19937_64& rng)
      : d_(spec.d), poly_(spec.d, spec.degree, 1.0, rng), degree_(spec.degree) {}
  void Evaluate(const float* x, int64_t rows, float* y) const override {
    std::vector<double> u(d_);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < d_; ++i) u[i] = x[r * d_ + i];
      y[r] = static_cast<float>(poly_.Evaluate(u.data()));
    }
  }
  std::string Describe() const override {
    return absl::StrCat("random polynomial of degree ", degree_, " in d=", d_, " (",
                        poly_.size(), " monomials, sum |c| = 1)");
  }

 private:
  int64_t d_;
  Polynomial poly_;
  int64_t degree_;
};

class ManifoldFunction : public TargetFunction {
 public:
  ManifoldFunction(const SyntheticSpec& spec, std::mt19937_64& rng)
      : d_(spec.d), k_(spec.manifold_dim), degree_(spec.degree),
        poly_(spec.manifold_dim, spec.degree, 1.0 / static_cast<double>(spec.degree), rng) {
    // A: k orthonormal rows, from the QR factorisation of a Gaussian d x k.
    std::normal_distribution<double> g(0.0, 1.0);
    Eigen::MatrixXd m(d_, k_);
    for (int64_t i = 0; i < d_; ++i) {
      for (int64_t j = 0; j < k_; ++j) m(i, j) = g(rng);
    }
    Eigen::HouseholderQR<Eigen::MatrixXd> qr(m);
    const Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(d_, k_);
    a_.resize(k_ * d_);
    for (int64_t j = 0; j < k_; ++j) {
      for (int64_t i = 0; i < d_; ++i) a_[j * d_ + i] = q(i, j);
    }
  }
  void Evaluate(const float* x, int64_t rows, float* y) const override {
    std::vector<double> u(k_);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < k_; ++j) {
        double s = 0;
        for (int64_t i = 0; i < d_; ++i) s += a_[j * d_ + i] * x[r * d_ + i];
        u[j] = s;
      }
      y[r] = static_cast<float>(poly_.Evaluate(u.data()));
    }
  }
  std::string Describe() const override {
    return absl::StrCat("random polynomial p(Ax) of degree ", degree_, " on a ", k_,
                        "-dimensional subspace of d=", d_, " (sum |c| = 1/", degree_, ")");
  }

 private:
  int64_t d_, k_, degree_;
  Polynomial poly_;
  std::vector<double> a_;  // [k, d]
};

class HypercubeFunction : public TargetFunction {
 public:
  HypercubeFunction(const SyntheticSpec& spec, std::mt19937_64& rng) : d_(spec.d) {
    corners_.resize(size_t{1} << d_);
    std::bernoulli_distribution coin(0.5);
    // Bit i of the corner index set means y_i = +1.
    for (double& v : corners_) v = coin(rng) ? 1.0 : -1.0;
  }
  void Evaluate(const float* x, int64_t rows, float* y) const override {
    std::vector<double> v;
    for (int64_t r = 0; r < rows; ++r) {
      // Multilinear interpolation, one dimension at a time: Σ_y v_y Π (1 + y_i x_i)/2.
      v = corners_;
      size_t n = v.size();
      for (int64_t i = d_ - 1; i >= 0; --i) {
        const double xi = x[r * d_ + i];
        n /= 2;
        for (size_t c = 0; c < n; ++c) {
          v[c] = v[c] * (1 - xi) / 2 + v[c + n] * (1 + xi) / 2;
        }
      }
      y[r] = static_cast<float>(v[0]);
    }
  }
  std::string Describe() const override {
    return absl::StrCat("random hypercube function in d=", d_, " (", corners_.size(),
                        " corners with values +-1)");
  }

 private:
  int64_t d_;
  std::vector<double> corners_;  // index bit i: y_i = +1
};

class ReluNetFunction : public TargetFunction {
 public:
  ReluNetFunction(const SyntheticSpec& spec, std::mt19937_64& rng)
      : d_(spec.d), w_(spec.relu_width) {
    auto layer = [&rng](int64_t in, int64_t out, std::vector<double>& weight,
                        std::vector<double>& bias) {
      std::normal_distribution<double> g(0.0, std::sqrt(2.0 / static_cast<double>(in)));
      std::normal_distribution<double> b(0.0, 0.1);
      weight.resize(out * in);
      for (double& v : weight) v = g(rng);
      bias.resize(out);
      for (double& v : bias) v = b(rng);
    };
    layer(d_, w_, w1_, b1_);
    layer(w_, w_, w2_, b2_);
    layer(w_, 1, w3_, b3_);
  }
  void Evaluate(const float* x, int64_t rows, float* y) const override {
    std::vector<double> h1(w_), h2(w_);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < w_; ++j) {
        double s = b1_[j];
        for (int64_t i = 0; i < d_; ++i) s += w1_[j * d_ + i] * x[r * d_ + i];
        h1[j] = std::max(s, 0.0);
      }
      for (int64_t j = 0; j < w_; ++j) {
        double s = b2_[j];
        for (int64_t i = 0; i < w_; ++i) s += w2_[j * w_ + i] * h1[i];
        h2[j] = std::max(s, 0.0);
      }
      double s = b3_[0];
      for (int64_t i = 0; i < w_; ++i) s += w3_[i] * h2[i];
      y[r] = static_cast<float>(s);
    }
  }
  std::string Describe() const override {
    return absl::StrCat("random 3-layer ReLU network ", d_, " -> ", w_, " -> ", w_, " -> 1");
  }

 private:
  int64_t d_, w_;
  std::vector<double> w1_, b1_, w2_, b2_, w3_, b3_;
};

absl::Status CheckRange(absl::string_view name, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be in [", lo, ", ", hi, "], got ", v));
  }
  return absl::OkStatus();
}

// C(vars + degree, degree) monomials must stay evaluable: at most a million.
absl::Status CheckMonomials(int64_t vars, int64_t degree) {
  double count = 1;
  for (int64_t i = 1; i <= degree; ++i) count = count * static_cast<double>(vars + i) / i;
  if (count > 1e6) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a degree-", degree, " polynomial in ", vars, " variables has ", count,
        " monomials; the limit is 1e6 (lower the degree or the dimension)"));
  }
  return absl::OkStatus();
}

// ---- Files ----------------------------------------------------------------------

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

absl::StatusOr<NpyArray> ParseNpy(const std::string& path) {
  ASSIGN_OR_RETURN(FileContents file, FileContents::Read(path, path));
  const absl::string_view bytes(reinterpret_cast<const char*>(file.bytes().data()),
                                file.bytes().size());
  auto bad = [&path](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  if (bytes.size() < 10 || bytes.substr(0, 6) != "\x93NUMPY") {
    return bad("not a .npy file (missing the \\x93NUMPY magic)");
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return bad("truncated header");
    uint32_t n = 0;
    std::memcpy(&n, bytes.data() + 8, 4);
    header_len = n;
    header_start = 12;
  } else {
    return bad(absl::StrCat("unsupported .npy version ", major));
  }
  if (header_start + header_len > bytes.size()) return bad("truncated header");
  const std::string header(bytes.substr(header_start, header_len));
  // The header is a Python dict literal with exactly these three keys.
  std::smatch m;
  if (!std::regex_search(header, m, std::regex(R"('descr'\s*:\s*'([<>|=])([fi])(\d+)')"))) {
    return bad("header has no 'descr'");
  }
  const char order = m[1].str()[0];
  const char type = m[2].str()[0];
  // A digit run too long for an int (a damaged header) is no valid size.
  int size = 0;
  if (!absl::SimpleAtoi(m[3].str(), &size)) size = 0;
  if (order == '>' || type != 'f' || (size != 4 && size != 8)) {
    return bad(absl::StrCat("dtype must be little-endian float32 or float64, got '", m[1].str(),
                            m[2].str(), m[3].str(), "'"));
  }
  if (!std::regex_search(header, m, std::regex(R"('fortran_order'\s*:\s*(True|False))")) ||
      m[1].str() != "False") {
    return bad("only C-order arrays are supported (fortran_order must be False)");
  }
  if (!std::regex_search(header, m, std::regex(R"('shape'\s*:\s*\(([^)]*)\))"))) {
    return bad("header has no 'shape'");
  }
  NpyArray array;
  int64_t elements = 1;
  for (absl::string_view part : absl::StrSplit(m[1].str(), ',', absl::SkipWhitespace())) {
    int64_t dim = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &dim) || dim < 0 ||
        __builtin_mul_overflow(elements, dim, &elements)) {
      return bad(absl::StrCat("bad shape '(", m[1].str(), ")'"));
    }
    array.shape.push_back(dim);
  }
  const size_t data_start = header_start + header_len;
  size_t need = 0;
  if (__builtin_mul_overflow(static_cast<size_t>(elements), static_cast<size_t>(size), &need) ||
      bytes.size() - data_start != need) {
    return bad(absl::StrCat("data has ", bytes.size() - data_start, " bytes, shape (",
                            m[1].str(), ") needs ", elements, " x ", size));
  }
  array.values.resize(elements);
  for (int64_t i = 0; i < elements; ++i) {
    double v = 0;
    if (size == 4) {
      float f;
      std::memcpy(&f, bytes.data() + data_start + 4 * i, 4);
      v = f;
    } else {
      std::memcpy(&v, bytes.data() + data_start + 8 * i, 8);
    }
    if (!std::isfinite(v) || std::fabs(v) > 3.4e38) {
      return bad(absl::StrCat("element ", i, " is not a finite float32 (", v, ")"));
    }
    array.values[i] = static_cast<float>(v);
  }
  return array;
}

}  // namespace

absl::StatusOr<SyntheticKind> ParseSyntheticKind(absl::string_view name) {
  if (name == "polynomial") return SyntheticKind::kPolynomial;
  if (name == "hypercube") return SyntheticKind::kHypercube;
  if (name == "relu_net") return SyntheticKind::kReluNet;
  if (name == "manifold") return SyntheticKind::kManifold;
  return absl::InvalidArgumentError(absl::StrCat(
      "synthetic function must be polynomial, hypercube, relu_net or manifold; got '", name, "'"));
}

absl::string_view SyntheticKindName(SyntheticKind kind) {
  switch (kind) {
    case SyntheticKind::kPolynomial: return "polynomial";
    case SyntheticKind::kHypercube: return "hypercube";
    case SyntheticKind::kReluNet: return "relu_net";
    case SyntheticKind::kManifold: return "manifold";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<TargetFunction>> TargetFunction::Create(const SyntheticSpec& spec) {
  std::mt19937_64 rng(spec.seed);
  switch (spec.kind) {
    case SyntheticKind::kPolynomial:
      RETURN_IF_ERROR(CheckRange("d", spec.d, 1, 64));
      RETURN_IF_ERROR(CheckRange("degree", spec.degree, 1, 8));
      RETURN_IF_ERROR(CheckMonomials(spec.d, spec.degree));
      return std::unique_ptr<TargetFunction>(new PolynomialFunction(spec, rng));
    case SyntheticKind::kManifold:
      RETURN_IF_ERROR(CheckRange("d", spec.d, 1, 4096));
      RETURN_IF_ERROR(CheckRange("manifold_dim", spec.manifold_dim, 1, std::min<int64_t>(spec.d, 64)));
      RETURN_IF_ERROR(CheckRange("degree", spec.degree, 1, 8));
      RETURN_IF_ERROR(CheckMonomials(spec.manifold_dim, spec.degree));
      return std::unique_ptr<TargetFunction>(new ManifoldFunction(spec, rng));
    case SyntheticKind::kHypercube:
      RETURN_IF_ERROR(CheckRange("d", spec.d, 1, 20));
      return std::unique_ptr<TargetFunction>(new HypercubeFunction(spec, rng));
    case SyntheticKind::kReluNet:
      RETURN_IF_ERROR(CheckRange("d", spec.d, 1, 4096));
      RETURN_IF_ERROR(CheckRange("relu_width", spec.relu_width, 1, 4096));
      return std::unique_ptr<TargetFunction>(new ReluNetFunction(spec, rng));
  }
  return absl::InvalidArgumentError("unknown synthetic function");
}

Dataset SampleDataset(const TargetFunction& f, int64_t d, int64_t rows, uint64_t seed) {
  Dataset data;
  data.rows = rows;
  data.d = d;
  data.o = 1;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  data.x.resize(rows * d);
  for (float& v : data.x) v = u(rng);
  data.y.resize(rows);
  f.Evaluate(data.x.data(), rows, data.y.data());
  return data;
}

std::string SeparatorName(char separator) {
  if (separator == '\t') return "tab";
  return absl::StrCat("'", std::string(1, separator), "'");
}

absl::StatusOr<char> ParseSeparator(absl::string_view text) {
  if (text == "," || text == ";" || text == "\t") return text[0];
  if (absl::AsciiStrToLower(text) == "tab") return '\t';
  return absl::InvalidArgumentError(
      absl::StrCat("the CSV separator must be ',', ';' or 'tab', got '", text, "'"));
}

namespace {

// Rows of one CSV file, fed a line at a time. Keeps what messages name: the
// file, the separator and whether it was sniffed or given.
class CsvParser {
 public:
  CsvParser(const std::string& path, const CsvOptions& options)
      : path_(path), separator_(options.separator) {
    data_.o = options.outputs;
    if (separator_ != 0) origin_ = "from --csv_separator";
  }

  absl::Status Add(absl::string_view line, int64_t line_no) {
    const absl::string_view content = absl::StripAsciiWhitespace(line);
    if (content.empty() || content[0] == '#') return absl::OkStatus();
    if (separator_ == 0) {
      separator_ = absl::StrContains(line, '\t') ? '\t' : absl::StrContains(line, ';') ? ';' : ',';
      origin_ = absl::StrCat("sniffed from line ", line_no);
    }
    const std::vector<absl::string_view> fields = absl::StrSplit(line, separator_);
    values_.clear();
    bool numeric = true, any_number = false, decimal_comma = false;
    for (absl::string_view field : fields) {
      float v = 0;
      if (absl::SimpleAtof(absl::StripAsciiWhitespace(field), &v)) {
        any_number = true;
        values_.push_back(v);
      } else {
        numeric = false;
        decimal_comma = decimal_comma || absl::StrContains(field, ',');
      }
    }
    const int64_t count = static_cast<int64_t>(fields.size());
    if (!numeric) {
      // Only a first line without a single number is a header; a first line
      // with some numbers is a malformed row and reported as one.
      if (columns_ < 0 && !any_number) {
        columns_ = count;
        return absl::OkStatus();
      }
      return Error(line_no, absl::StrCat("expected numbers, got '", line, "'",
                                         decimal_comma ? " (decimal commas are not read: write "
                                                         "1.5, not 1,5)"
                                                       : ""));
    }
    if (columns_ < 0) columns_ = count;
    if (count != columns_) {
      return Error(line_no, absl::StrCat("expected ", columns_, " columns, got ", count));
    }
    return AddRow(line_no);
  }

  absl::StatusOr<Dataset> Finish() && {
    if (data_.rows == 0) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": no data rows"));
    }
    return std::move(data_);
  }

 private:
  absl::Status AddRow(int64_t line_no) {
    if (columns_ <= data_.o) {
      return Error(line_no, absl::StrCat(columns_, " columns leave no inputs beside ", data_.o,
                                         " target column(s)"));
    }
    for (size_t i = 0; i < values_.size(); ++i) {
      if (!std::isfinite(values_[i])) {
        return Error(line_no, absl::StrCat("column ", i + 1, " is not a finite number"));
      }
    }
    data_.d = columns_ - data_.o;
    data_.x.insert(data_.x.end(), values_.begin(), values_.begin() + data_.d);
    data_.y.insert(data_.y.end(), values_.begin() + data_.d, values_.end());
    ++data_.rows;
    return absl::OkStatus();
  }

  absl::Status Error(int64_t line_no, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ":", line_no, ": ", what, " (separator ",
                                                   SeparatorName(separator_), " ", origin_,
                                                   ")"));
  }

  const std::string path_;
  char separator_;
  std::string origin_;  // "from --csv_separator" or "sniffed from line N"
  int64_t columns_ = -1;
  std::vector<float> values_;
  Dataset data_;
};

}  // namespace

absl::StatusOr<Dataset> ReadCsv(const std::string& path, const CsvOptions& options) {
  if (options.outputs < 1) return absl::InvalidArgumentError("outputs must be >= 1");
  if (options.separator != 0) RETURN_IF_ERROR(ParseSeparator(std::string(1, options.separator)).status());
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  CsvParser parser(path, options);
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no == 1 && line.compare(0, 3, "\xEF\xBB\xBF") == 0) line.erase(0, 3);  // UTF-8 BOM
    RETURN_IF_ERROR(parser.Add(line, line_no));
  }
  return std::move(parser).Finish();
}

namespace {

// An IDX file's header and its data, read through zlib (gzip or plain).
struct IdxFile {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

// The bytes of an IDX file read whole (FileContents: a FIFO, device or
// directory is refused without blocking), handed out in order, inflated
// on the way when they are gzip's.
class IdxBytes {
 public:
  explicit IdxBytes(FileContents file) : file_(std::move(file)) {
    const absl::Span<const uint8_t> b = file_.bytes();
    gzip_ = b.size() >= 2 && b[0] == 0x1f && b[1] == 0x8b;
    if (gzip_) {
      stream_.next_in = const_cast<Bytef*>(b.data());
      stream_.avail_in = static_cast<uInt>(std::min<size_t>(b.size(), ~uInt{0}));
      initialized_ = inflateInit2(&stream_, 16 + MAX_WBITS) == Z_OK;  // gzip's header and trailer
      ok_ = initialized_;
    }
  }
  ~IdxBytes() {
    if (initialized_) inflateEnd(&stream_);
  }
  IdxBytes(const IdxBytes&) = delete;
  IdxBytes& operator=(const IdxBytes&) = delete;

  // Reads exactly `size` bytes; false when the data ends (or is not valid
  // gzip) first.
  bool Read(void* out, int64_t size) {
    if (!gzip_) {
      const absl::Span<const uint8_t> b = file_.bytes();
      if (static_cast<uint64_t>(size) > b.size() - offset_) return false;
      std::memcpy(out, b.data() + offset_, size);
      offset_ += size;
      return true;
    }
    auto* bytes = static_cast<Bytef*>(out);
    while (size > 0 && ok_) {
      const uInt chunk = static_cast<uInt>(std::min<int64_t>(size, 1 << 30));
      stream_.next_out = bytes;
      stream_.avail_out = chunk;
      const int result = inflate(&stream_, Z_NO_FLUSH);
      const uInt got = chunk - stream_.avail_out;
      bytes += got;
      size -= got;
      if (result == Z_STREAM_END) ended_ = true;
      if ((result != Z_OK && result != Z_STREAM_END) || (got == 0 && size > 0)) ok_ = false;
      if (ended_ && size > 0) return false;
    }
    return size == 0;
  }
  // Whether data remains after what was read.
  bool More() {
    char extra;
    return gzip_ ? !ended_ && Read(&extra, 1) : offset_ < file_.bytes().size();
  }
  // Why a gzip stream stopped early ("" when it did not).
  std::string Error() const {
    return gzip_ && !ok_ && stream_.msg != nullptr ? stream_.msg : "";
  }

 private:
  FileContents file_;
  bool gzip_ = false;
  bool initialized_ = false;  // inflateInit2 succeeded: inflateEnd owed
  bool ok_ = true;
  bool ended_ = false;
  uint64_t offset_ = 0;
  z_stream stream_{};
};

absl::StatusOr<IdxFile> ReadIdxFile(const std::string& path, int expected_dims,
                                    int64_t max_values) {
  ASSIGN_OR_RETURN(FileContents contents, FileContents::Read(path, path));
  IdxBytes file(std::move(contents));
  auto read = [&file](void* out, int64_t size) { return file.Read(out, size); };
  IdxFile idx;
  absl::Status status = [&]() -> absl::Status {
    uint8_t magic[4];
    if (!read(magic, 4)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not an IDX file (shorter than its 4-byte magic)"));
    }
    if (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] != expected_dims) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: magic 0x%02x%02x%02x%02x is not an IDX file of unsigned bytes with %d "
          "dimension(s) (0x000008%02x)%s",
          path, magic[0], magic[1], magic[2], magic[3], expected_dims, expected_dims,
          expected_dims == 3 ? ": give the images file first, then the labels" : ""));
    }
    int64_t values = 1;
    for (int i = 0; i < expected_dims; ++i) {
      uint8_t b[4];
      if (!read(b, 4)) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": cut short in its header"));
      }
      const int64_t dim = int64_t{b[0]} << 24 | int64_t{b[1]} << 16 | int64_t{b[2]} << 8 | b[3];
      if (dim < 1) return absl::InvalidArgumentError(absl::StrCat(path, ": dimension ", i, " is 0"));
      idx.dims.push_back(dim);
      if (dim > max_values / values) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": dimensions ", absl::StrJoin(idx.dims, " x "), " hold more than ", max_values,
            " values, the most sparse-train reads"));
      }
      values *= dim;
    }
    // Grown as the data arrives: a header cannot make a short file
    // allocate what it promises.
    for (int64_t have = 0; have < values;) {
      const int64_t chunk = std::min<int64_t>(values - have, 1 << 20);
      idx.data.resize(have + chunk);
      if (!read(idx.data.data() + have, chunk)) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": cut short: its header (", absl::StrJoin(idx.dims, " x "), ") promises ",
            values, " bytes of data"));
      }
      have += chunk;
    }
    if (file.More()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": bytes after the ", values, " its header (", absl::StrJoin(idx.dims, " x "),
          ") promises"));
    }
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    const std::string gzip_error = file.Error();
    if (gzip_error.empty()) return status;
    return absl::InvalidArgumentError(
        absl::StrCat(status.message(), " (the gzip stream is corrupt: ", gzip_error, ")"));
  }
  return idx;
}

}  // namespace

absl::StatusOr<Dataset> ReadIdx(const std::string& images_path, const std::string& labels_path,
                                int64_t classes) {
  constexpr int64_t kMaxPixels = 1 << 20, kMaxValues = int64_t{1} << 32;
  ASSIGN_OR_RETURN(IdxFile images, ReadIdxFile(images_path, 3, kMaxValues));
  ASSIGN_OR_RETURN(IdxFile labels, ReadIdxFile(labels_path, 1, kMaxValues));
  const int64_t n = images.dims[0], d = images.dims[1] * images.dims[2];
  if (d > kMaxPixels) {
    return absl::InvalidArgumentError(absl::StrCat(images_path, ": images of ", images.dims[1], " x ",
                                                   images.dims[2], " pixels; at most ", kMaxPixels));
  }
  if (labels.dims[0] != n) {
    return absl::InvalidArgumentError(absl::StrCat(labels_path, ": ", labels.dims[0],
                                                   " labels for the ", n, " images of ",
                                                   images_path));
  }
  const int64_t largest = *std::max_element(labels.data.begin(), labels.data.end());
  if (classes <= 0) classes = std::max<int64_t>(2, largest + 1);
  if (largest >= classes) {
    return absl::InvalidArgumentError(absl::StrCat(
        labels_path, ": label ", largest, " is not one of the ", classes, " classes 0 to ",
        classes - 1, " (those of the training file)"));
  }
  if (n * std::max(d, classes) > kMaxValues) {
    return absl::InvalidArgumentError(absl::StrCat(images_path, ": ", n, " images hold more than ",
                                                   kMaxValues, " values"));
  }
  Dataset data;
  data.rows = n;
  data.d = d;
  data.o = classes;
  data.x.resize(n * d);
  for (int64_t i = 0; i < n * d; ++i) data.x[i] = images.data[i] / 255.0f;
  data.y.assign(n * classes, 0.0f);
  for (int64_t r = 0; r < n; ++r) data.y[r * classes + labels.data[r]] = 1.0f;
  return data;
}

absl::StatusOr<Dataset> ReadNpy(const std::string& x_path, const std::string& y_path) {
  ASSIGN_OR_RETURN(NpyArray x, ParseNpy(x_path));
  ASSIGN_OR_RETURN(NpyArray y, ParseNpy(y_path));
  if (x.shape.size() != 2 || x.shape[0] < 1 || x.shape[1] < 1) {
    return absl::InvalidArgumentError(absl::StrCat(x_path, ": inputs must have shape (n, d)"));
  }
  if (y.shape.empty() || y.shape.size() > 2 || y.shape[0] != x.shape[0] ||
      (y.shape.size() == 2 && y.shape[1] < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        y_path, ": targets must have shape (", x.shape[0], ",) or (", x.shape[0], ", o)"));
  }
  Dataset data;
  data.rows = x.shape[0];
  data.d = x.shape[1];
  data.o = y.shape.size() == 2 ? y.shape[1] : 1;
  data.x = std::move(x.values);
  data.y = std::move(y.values);
  return data;
}

absl::StatusOr<std::pair<Dataset, Dataset>> SplitHoldout(const Dataset& data, double fraction,
                                                         uint64_t seed) {
  if (!(fraction > 0 && fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("holdout fraction must be in (0, 1), got ", fraction));
  }
  const int64_t test_rows = static_cast<int64_t>(std::llround(fraction * data.rows));
  if (test_rows < 1 || test_rows >= data.rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a holdout of ", fraction, " of ", data.rows, " rows leaves an empty train or test set"));
  }
  std::vector<int64_t> order(data.rows);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  std::pair<Dataset, Dataset> out;
  for (Dataset* part : {&out.first, &out.second}) {
    part->d = data.d;
    part->o = data.o;
  }
  for (int64_t i = 0; i < data.rows; ++i) {
    Dataset& part = i < data.rows - test_rows ? out.first : out.second;
    const int64_t r = order[i];
    part.x.insert(part.x.end(), data.x.begin() + r * data.d, data.x.begin() + (r + 1) * data.d);
    part.y.insert(part.y.end(), data.y.begin() + r * data.o, data.y.begin() + (r + 1) * data.o);
    ++part.rows;
  }
  return out;
}

}  // namespace sparse
