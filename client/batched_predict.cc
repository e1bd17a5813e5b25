#include "client/batched_predict.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace sparse {

void AppendResponse(const sparse::v1::PredictResponse& next, sparse::v1::PredictResponse* into) {
  into->set_rows(into->rows() + next.rows());
  into->mutable_outputs()->Add(next.outputs().begin(), next.outputs().end());
  if (next.has_route()) {
    const sparse::v1::Route& r = next.route();
    sparse::v1::Route* route = into->mutable_route();
    route->set_keys_per_row(r.keys_per_row());
    route->set_experts_per_row(r.experts_per_row());
    route->mutable_bucket_keys()->Add(r.bucket_keys().begin(), r.bucket_keys().end());
    route->mutable_bucket_missed()->Add(r.bucket_missed().begin(), r.bucket_missed().end());
    route->mutable_expert_ids()->Add(r.expert_ids().begin(), r.expert_ids().end());
  }
  const sparse::v1::Cost& c = next.cost();
  sparse::v1::Cost* cost = into->mutable_cost();
  cost->set_flops(cost->flops() + c.flops());
  cost->set_dense_flops(cost->dense_flops() + c.dense_flops());
  cost->set_queue_ns(cost->queue_ns() + c.queue_ns());
  cost->set_route_ns(cost->route_ns() + c.route_ns());
  cost->set_compute_ns(cost->compute_ns() + c.compute_ns());
  cost->set_total_ns(cost->total_ns() + c.total_ns());
  cost->set_batch_size(std::max(cost->batch_size(), c.batch_size()));
  cost->set_weight_bytes(cost->weight_bytes() + c.weight_bytes());
  cost->set_shards(std::max(cost->shards(), c.shards()));
  cost->set_fanout_ns(cost->fanout_ns() + c.fanout_ns());
  cost->set_major_faults(cost->major_faults() + c.major_faults());
}

absl::StatusOr<SparseClient::Call> PredictBatched(SparseClient& client, const std::string& model,
                                                  int64_t rows, absl::Span<const float> inputs,
                                                  const BatchedPredictOptions& options) {
  if (rows <= 0 || inputs.size() % rows != 0) {
    return absl::InvalidArgumentError(absl::StrCat("expected rows x d input values, got ",
                                                   inputs.size(), " values for ", rows, " rows"));
  }
  int64_t limit = options.max_rows;
  if (limit <= 0 && rows > 1) {
    ASSIGN_OR_RETURN(const sparse::v1::ModelStatus status, client.GetModel(model));
    limit = status.max_batch_rows();  // 0 from a server that does not say
  }
  if (limit <= 0) limit = rows;
  const size_t width = inputs.size() / rows;
  const auto start = std::chrono::steady_clock::now();
  SparseClient::Call all;
  int64_t version = options.version;
  for (int64_t first = 0; first < rows; first += limit) {
    const int64_t n = std::min(limit, rows - first);
    absl::StatusOr<SparseClient::Call> call = client.Predict(
        model, version, n, inputs.subspan(first * width, n * width), options.dense, options.route);
    if (!call.ok()) {
      if (limit >= rows) return call.status();
      return absl::Status(call.status().code(),
                          absl::StrCat("rows ", first, "..", first + n - 1, " of ", rows, " (",
                                       limit, " per request): ", call.status().message()));
    }
    if (first == 0) {
      all.response = std::move(call->response);
      version = all.response.version();  // the rest from the same version
    } else {
      AppendResponse(call->response, &all.response);
    }
    if (options.progress) options.progress(first + n, rows);
  }
  all.round_trip_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now() - start).count();
  return all;
}

std::string NpyBytes(absl::Span<const float> values, int64_t rows, int64_t cols) {
  static_assert(std::endian::native == std::endian::little, "the .npy writer writes '<f4' as is");
  std::string header = absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", rows,
                                    ", ", cols, "), }");
  // Magic (6) + version (2) + header length (2) + header, padded with
  // spaces and ended by '\n' to a multiple of 64 bytes (the spec's alignment).
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  return out;
}

absl::Status WritePredictions(const std::string& path, int64_t rows, int64_t cols,
                              const std::vector<std::pair<std::string, std::vector<float>>>& paths) {
  const bool npy = absl::EndsWith(path, ".npy"), csv = absl::EndsWith(path, ".csv");
  if (!npy && !csv) {
    return absl::InvalidArgumentError(
        absl::StrCat("--output: expected a file name ending in .csv or .npy, got '", path, "'"));
  }
  if (npy && paths.size() != 1) {
    return absl::InvalidArgumentError(
        "--output=*.npy holds one path's predictions; drop --both, or write .csv");
  }
  for (const auto& [label, values] : paths) {
    if (static_cast<int64_t>(values.size()) != rows * cols) {
      return absl::InternalError(absl::StrCat(label, ": expected ", rows * cols,
                                              " output values, got ", values.size()));
    }
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::NotFoundError(absl::StrCat("--output: cannot write '", path, "'"));
  if (npy) {
    out << NpyBytes(paths.front().second, rows, cols);
  } else {
    std::vector<std::string> header;
    for (const auto& [label, values] : paths) {
      for (int64_t j = 0; j < cols; ++j) {
        header.push_back(absl::StrCat(paths.size() == 1 ? "output" : label, "_", j));
      }
    }
    out << absl::StrJoin(header, ",") << '\n';
    std::string line;
    for (int64_t r = 0; r < rows; ++r) {
      line.clear();
      for (const auto& [label, values] : paths) {
        for (int64_t j = 0; j < cols; ++j) {
          if (!line.empty()) line.push_back(',');
          // 9 significant digits read back to the same float32.
          absl::StrAppendFormat(&line, "%.9g", values[r * cols + j]);
        }
      }
      out << line << '\n';
    }
  }
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("--output: writing '", path, "' failed"));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<float>>> ParseRows(const std::string& text, char row_sep,
                                                          absl::string_view source) {
  std::vector<std::vector<float>> rows;
  int64_t line = 0;
  for (absl::string_view row : absl::StrSplit(text, row_sep)) {
    ++line;
    row = absl::StripAsciiWhitespace(row);
    if (row.empty()) continue;
    std::vector<float> values;
    bool numeric = true;
    for (absl::string_view field : absl::StrSplit(row, ',')) {
      float v = 0;
      if (!absl::SimpleAtof(absl::StripAsciiWhitespace(field), &v)) {
        numeric = false;
        break;
      }
      values.push_back(v);
    }
    if (!numeric) {
      if (rows.empty() && row_sep == '\n') continue;  // a CSV header
      return absl::InvalidArgumentError(
          absl::StrCat(source, " row ", line, ": expected numbers, got '", row, "'"));
    }
    if (!rows.empty() && values.size() != rows.front().size()) {
      return absl::InvalidArgumentError(absl::StrCat(source, " row ", line, ": expected ",
                                                     rows.front().size(), " values, got ",
                                                     values.size()));
    }
    rows.push_back(std::move(values));
  }
  if (rows.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": no input rows"));
  return rows;
}

namespace {

// The rows of a .npy file's bytes (NPY 1.0, 2.0 or 3.0).
absl::StatusOr<std::vector<std::vector<float>>> ParseNpyRows(const std::string& bytes,
                                                             const std::string& source) {
  auto bad = [&source](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", why));
  };
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) {
    return bad("not a .npy file (missing the \\x93NUMPY magic)");
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  if (major < 1 || major > 3) return bad(absl::StrCat("unsupported .npy version ", major));
  const size_t len_bytes = major == 1 ? 2 : 4;
  if (bytes.size() < 8 + len_bytes) return bad("truncated header");
  size_t header_len = 0;
  for (size_t i = 0; i < len_bytes; ++i) {
    header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
  }
  const size_t data_start = 8 + len_bytes + header_len;
  if (bytes.size() < data_start) return bad("truncated header");
  const std::string header = bytes.substr(8 + len_bytes, header_len);
  size_t width = 0;
  if (absl::StrContains(header, "'<f4'")) {
    width = 4;
  } else if (absl::StrContains(header, "'<f8'")) {
    width = 8;
  } else {
    return bad(absl::StrCat("expected a float32 or float64 array ('<f4' or '<f8'), got the "
                            "header ", absl::StripAsciiWhitespace(header)));
  }
  if (absl::StrContains(header, "'fortran_order': True")) return bad("expected C order, got Fortran");
  const size_t open = header.find("'shape': (");
  const size_t close = open == std::string::npos ? open : header.find(')', open);
  if (close == std::string::npos) return bad("the header has no shape");
  std::vector<int64_t> shape;
  for (absl::string_view dim : absl::StrSplit(header.substr(open + 10, close - open - 10), ',',
                                              absl::SkipWhitespace())) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(dim), &n) || n < 0) {
      return bad(absl::StrCat("bad shape in the header: ", header.substr(open, close - open + 1)));
    }
    shape.push_back(n);
  }
  if (shape.empty() || shape.size() > 2) {
    return bad(absl::StrCat("expected a 1-D or 2-D array, got ", shape.size(), " dimensions"));
  }
  const int64_t rows = shape.size() == 2 ? shape[0] : 1, cols = shape.back();
  if (rows == 0 || cols == 0) return bad("no input rows");
  if (bytes.size() - data_start < static_cast<size_t>(rows * cols) * width) {
    return bad(absl::StrCat("expected ", rows * cols * static_cast<int64_t>(width),
                            " bytes of data, got ", bytes.size() - data_start));
  }
  std::vector<std::vector<float>> out(static_cast<size_t>(rows), std::vector<float>(cols));
  const char* p = bytes.data() + data_start;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c, p += width) {
      if (width == 4) {
        std::memcpy(&out[r][c], p, 4);
      } else {
        double v;
        std::memcpy(&v, p, 8);
        out[r][c] = static_cast<float>(v);
      }
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::vector<float>>> ReadRowsFile(const std::string& path,
                                                             absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, ": cannot open '", path, "'"));
  std::string bytes(std::istreambuf_iterator<char>(in), {});
  const std::string source = absl::StrCat(flag, " ", path);
  if (absl::EndsWith(path, ".npy")) return ParseNpyRows(bytes, source);
  return ParseRows(bytes, '\n', source);
}

}  // namespace sparse
