#include "trainer/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "Eigen/Dense"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/dense_model.h"
#include "engine/dsm_model.h"
#include "engine/lsh_table_model.h"
#include "common/status_macros.h"
#include "model_store/kind_codec.h"
#include "trainer/linear_algebra.h"

namespace sparse {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kChunkRows = 4096;
// Fewest rows an expert slice is fitted on (at least one row held out).
constexpr int64_t kMinExpertRows = 10;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void Report(const TrainOptions& options, const std::string& line) {
  if (options.progress) options.progress(line);
}

// Reports "what i/n" about every tenth of the way.
void ReportEvery(const TrainOptions& options, absl::string_view what, int64_t i, int64_t n) {
  const int64_t step = std::max<int64_t>(1, n / 10);
  if ((i + 1) % step == 0 || i + 1 == n) Report(options, absl::StrCat(what, " ", i + 1, "/", n));
}

std::vector<float> ColumnMeans(const Dataset& data) {
  std::vector<double> sum(data.o, 0.0);
  for (int64_t r = 0; r < data.rows; ++r) {
    for (int64_t j = 0; j < data.o; ++j) sum[j] += data.y[r * data.o + j];
  }
  std::vector<float> mean(data.o);
  for (int64_t j = 0; j < data.o; ++j) mean[j] = static_cast<float>(sum[j] / data.rows);
  return mean;
}

// A network for `train` of the given width: sizes set, weights zero, a0 =
// the target means (fits are made on the centred targets).
DenseWeights NetworkShell(const Dataset& train, int64_t width, Activation activation) {
  DenseWeights w;
  w.input_dim = train.d;
  w.output_dim = train.o;
  w.width = width;
  w.activation = activation;
  w.bottom_weight.assign(width * train.d, 0.0f);
  w.bottom_bias.assign(width, 0.0f);
  w.top_weight.assign(train.o * width, 0.0f);
  w.top_bias = ColumnMeans(train);
  return w;
}

DsmWeights DsmShell(const Dataset& train, const TrainOptions& options, int64_t width,
                    int64_t experts) {
  DsmWeights w;
  w.router = options.router;
  w.num_blocks = options.blocks;
  w.num_experts = experts;
  w.active_units = options.active_units;
  w.network = NetworkShell(train, width, options.activation);
  return w;
}

// Targets minus the means in `means`.
std::vector<float> Centred(const Dataset& data, const std::vector<float>& means) {
  std::vector<float> c = data.y;
  for (int64_t r = 0; r < data.rows; ++r) {
    for (int64_t j = 0; j < data.o; ++j) c[r * data.o + j] -= means[j];
  }
  return c;
}

// `count` random hyperplanes w·x + b = 0, w ~ N(0, scale²·I), each through a
// training row drawn from `pool` (all rows when empty), so every hyperplane
// cuts through the data rather than missing it.
void HyperplanesThroughData(const Dataset& data, const std::vector<int64_t>& pool, int64_t count,
                            double scale, std::mt19937_64& rng, float* w, float* b) {
  std::normal_distribution<double> g(0.0, scale);
  const int64_t choices = pool.empty() ? data.rows : static_cast<int64_t>(pool.size());
  std::uniform_int_distribution<int64_t> pick(0, choices - 1);
  for (int64_t u = 0; u < count; ++u) {
    float* wu = w + u * data.d;
    for (int64_t i = 0; i < data.d; ++i) wu[i] = static_cast<float>(g(rng));
    const int64_t row = pool.empty() ? pick(rng) : pool[pick(rng)];
    double dot = 0;
    for (int64_t i = 0; i < data.d; ++i) dot += double{wu[i]} * data.x[row * data.d + i];
    b[u] = static_cast<float>(-dot);
  }
}

// Adds rows of h [n, p] / y [n, o] to the normal equations: the last tenth
// to `holdout` (for choosing the ridge), the rest to `fit`.
absl::Status AccumulateSplit(const float* h, const float* y, int64_t n, NormalEquations* fit,
                             NormalEquations* holdout) {
  const int64_t held = n / 10, kept = n - held;
  RETURN_IF_ERROR(Accumulate(h, y, kept, fit));
  if (held > 0) RETURN_IF_ERROR(Accumulate(h + kept * fit->p, y + kept * fit->o, held, holdout));
  return absl::OkStatus();
}

// Fits W [p, o] for targets y [n, o] from features that `features(r0, rows,
// h)` computes for rows [r0, r0 + rows). Closed-form ridge when p is at most
// closed_form_limit, Adam on minibatches otherwise. Sets *solver.
absl::StatusOr<std::vector<double>> FitLinear(
    const std::function<absl::Status(int64_t, int64_t, float*)>& features, int64_t n, int64_t p,
    const std::vector<float>& y, int64_t o, const TrainOptions& options, absl::string_view what,
    std::string* solver) {
  if (p <= options.closed_form_limit) {
    NormalEquations fit{.p = p, .o = o, .gram = {}, .rhs = {}}, holdout = fit;
    std::vector<float> h(std::min(n, kChunkRows) * p);
    const int64_t chunks = (n + kChunkRows - 1) / kChunkRows;
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t r0 = c * kChunkRows, rows = std::min(kChunkRows, n - r0);
      RETURN_IF_ERROR(features(r0, rows, h.data()));
      RETURN_IF_ERROR(AccumulateSplit(h.data(), y.data() + r0 * o, rows, &fit, &holdout));
      if (chunks > 4) ReportEvery(options, absl::StrCat(what, ": normal equations, chunk"), c, chunks);
    }
    Report(options, absl::StrCat(what, ": solving ", p, "x", p, " ridge system"));
    double chosen = 0;
    bool validated = false;
    ASSIGN_OR_RETURN(std::vector<double> w, SolveRidgeChoosingLambda(fit, holdout, n, options.ridge,
                                                                     &chosen, &validated));
    *solver = absl::StrCat("closed-form ridge regression (", p, " features, relative ridge ", chosen,
                           validated ? ", chosen on held-out rows" : "", ")");
    return w;
  }
  *solver = absl::StrCat("Adam (", options.epochs, " epochs, minibatch 256, learning rate ",
                         options.learning_rate, "; ", p, " features > closed_form_limit ",
                         options.closed_form_limit, ")");
  constexpr int64_t kBatch = 256;
  std::vector<float> w(p * o, 0.0f), m1(p * o, 0.0f), m2(p * o, 0.0f);
  std::vector<float> h(kBatch * p), pred(kBatch * o), grad(p * o);
  const int64_t batches = (n + kBatch - 1) / kBatch;
  std::vector<int64_t> order(batches);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(options.seed ^ 0xada);
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    std::shuffle(order.begin(), order.end(), rng);
    for (int64_t bi : order) {
      const int64_t r0 = bi * kBatch, rows = std::min(kBatch, n - r0);
      RETURN_IF_ERROR(features(r0, rows, h.data()));
      RETURN_IF_ERROR(Gemm(false, false, rows, o, p, h.data(), w.data(), pred.data()));
      for (int64_t i = 0; i < rows * o; ++i) pred[i] = (pred[i] - y[r0 * o + i]) / rows;
      RETURN_IF_ERROR(Gemm(true, false, p, o, rows, h.data(), pred.data(), grad.data()));
      ++step;
      const double c1 = 1 - std::pow(b1, step), c2 = 1 - std::pow(b2, step);
      for (int64_t i = 0; i < p * o; ++i) {
        m1[i] = static_cast<float>(b1 * m1[i] + (1 - b1) * grad[i]);
        m2[i] = static_cast<float>(b2 * m2[i] + (1 - b2) * grad[i] * grad[i]);
        w[i] -= static_cast<float>(options.learning_rate * (m1[i] / c1) /
                                   (std::sqrt(m2[i] / c2) + eps));
      }
    }
    ReportEvery(options, absl::StrCat(what, ": Adam epoch"), epoch, options.epochs);
  }
  return std::vector<double>(w.begin(), w.end());
}

// Writes W [p, o] (fitted for units first..first+p) into A [o, t].
void StoreTop(const std::vector<double>& w, int64_t p, int64_t o, int64_t t, int64_t first,
              std::vector<float>* top) {
  for (int64_t u = 0; u < p; ++u) {
    for (int64_t j = 0; j < o; ++j) (*top)[j * t + first + u] = static_cast<float>(w[u * o + j]);
  }
}

// ---- Dense ------------------------------------------------------------------

absl::StatusOr<DenseWeights> FitDense(const Dataset& train, int64_t width,
                                      const TrainOptions& options, std::string* solver) {
  std::mt19937_64 rng(options.seed ^ 0xde05e);
  DenseWeights w = NetworkShell(train, width, options.activation);
  HyperplanesThroughData(train, {}, width, 1.0 / std::sqrt(double(train.d)), rng,
                         w.bottom_weight.data(), w.bottom_bias.data());
  const std::vector<float> centred = Centred(train, w.top_bias);
  const bool relu = options.activation == Activation::kRelu;
  auto features = [&](int64_t r0, int64_t rows, float* h) {
    return RandomFeatures(train.x.data() + r0 * train.d, rows, train.d, w.bottom_weight.data(),
                          w.bottom_bias.data(), width, relu, h);
  };
  ASSIGN_OR_RETURN(std::vector<double> top,
                   FitLinear(features, train.rows, width, centred, train.o, options,
                             absl::StrCat("dense (width ", width, ")"), solver));
  StoreTop(top, width, train.o, width, 0, &w.top_weight);
  return w;
}

// ---- LSH table --------------------------------------------------------------

absl::StatusOr<LshTableWeights> FitLsh(const Dataset& train, const TrainOptions& options,
                                       std::string* solver) {
  const int64_t d = train.d, o = train.o, s = options.tables, m = options.hashes;
  std::mt19937_64 rng(options.seed ^ 0x15b);
  LshTableWeights w;
  w.input_dim = d;
  w.output_dim = o;
  w.num_tables = s;
  w.num_hashes = m;
  w.degree = options.lsh_degree;
  w.family = options.family;
  w.projection.resize(s * m * d);
  w.offset.resize(s * m);
  w.alpha.assign(s, 1.0f / static_cast<float>(s));
  if (options.family == HashFamily::kHyperplane) {
    HyperplanesThroughData(train, {}, s * m, 1.0, rng, w.projection.data(), w.offset.data());
  } else {
    std::normal_distribution<float> g(0.0f, 1.0f);
    for (float& v : w.projection) v = g(rng);
    float width = options.bucket_width;
    if (width <= 0) {
      // Default: the standard deviation of a projection over the data.
      double sum = 0, sq = 0;
      const int64_t sample = std::min<int64_t>(train.rows, 4096);
      for (int64_t r = 0; r < sample; ++r) {
        double z = 0;
        for (int64_t i = 0; i < d; ++i) z += double{w.projection[i]} * train.x[r * d + i];
        sum += z;
        sq += z * z;
      }
      width = static_cast<float>(std::sqrt(std::max(sq / sample - (sum / sample) * (sum / sample), 1e-12)));
    }
    w.bucket_width = width;
    std::uniform_real_distribution<float> u(0.0f, width);
    for (float& v : w.offset) v = u(rng);
  }
  const int64_t per = w.ValuesPerBucket();
  const int64_t min_rows = options.min_bucket_rows > 0 ? options.min_bucket_rows
                                                       : (w.degree == 0 ? 1 : d + 2);

  // Keys come from the engine itself, so training buckets are exactly the
  // buckets the server will look up.
  w.tables.assign(s, LshTableWeights::Table{{}, {}, std::vector<float>(per, 0.0f)});
  ASSIGN_OR_RETURN(std::unique_ptr<LshTableModel> hasher, LshTableModel::Create(w));
  Route route;
  std::vector<float> unused(train.rows * o);
  PredictStats stats;
  RETURN_IF_ERROR(hasher->Predict(train.x, train.rows, absl::MakeSpan(unused), &stats, &route));

  // Fits one bucket (or the fallback) from the rows in `rows`.
  auto fit = [&](const std::vector<int64_t>& rows, float* out) -> absl::Status {
    if (w.degree == 0) {
      std::vector<double> sum(o, 0.0);
      for (int64_t r : rows) {
        for (int64_t j = 0; j < o; ++j) sum[j] += train.y[r * o + j];
      }
      for (int64_t j = 0; j < o; ++j) out[j] = static_cast<float>(sum[j] / rows.size());
      return absl::OkStatus();
    }
    // Affine fit on [x, 1]; one row in ten is held out to choose the ridge.
    NormalEquations fit{.p = d + 1, .o = o, .gram = {}, .rhs = {}}, holdout = fit;
    std::vector<double> z(d + 1);
    for (size_t i = 0; i < rows.size(); ++i) {
      const int64_t r = rows[i];
      NormalEquations& eq = i % 10 == 9 ? holdout : fit;
      if (eq.gram.empty()) {
        eq.gram.assign((d + 1) * (d + 1), 0.0);
        eq.rhs.assign((d + 1) * o, 0.0);
      }
      for (int64_t a = 0; a < d; ++a) z[a] = train.x[r * d + a];
      z[d] = 1.0;
      for (int64_t a = 0; a <= d; ++a) {
        for (int64_t b = 0; b <= d; ++b) eq.gram[a * (d + 1) + b] += z[a] * z[b];
        for (int64_t j = 0; j < o; ++j) eq.rhs[a * o + j] += z[a] * train.y[r * o + j];
      }
    }
    double chosen = 0;
    bool validated = false;
    ASSIGN_OR_RETURN(std::vector<double> coef,
                     SolveRidgeChoosingLambda(fit, holdout, static_cast<int64_t>(rows.size()),
                                              options.ridge, &chosen, &validated));
    // Bucket layout: o rows of d+1 (bias last).
    for (int64_t j = 0; j < o; ++j) {
      for (int64_t a = 0; a <= d; ++a) out[j * (d + 1) + a] = static_cast<float>(coef[a * o + j]);
    }
    return absl::OkStatus();
  };

  std::vector<int64_t> all(train.rows);
  std::iota(all.begin(), all.end(), 0);
  std::vector<float> fallback(per);
  RETURN_IF_ERROR(fit(all, fallback.data()));
  int64_t stored = 0, fallback_rows = 0;
  for (int64_t i = 0; i < s; ++i) {
    std::vector<std::pair<uint64_t, int64_t>> keyed(train.rows);
    for (int64_t r = 0; r < train.rows; ++r) keyed[r] = {route.bucket_keys[r * s + i], r};
    std::sort(keyed.begin(), keyed.end());
    LshTableWeights::Table& table = w.tables[i];
    table.fallback = fallback;
    std::vector<int64_t> rows;
    for (size_t a = 0; a < keyed.size();) {
      size_t b = a;
      rows.clear();
      while (b < keyed.size() && keyed[b].first == keyed[a].first) rows.push_back(keyed[b++].second);
      if (static_cast<int64_t>(rows.size()) >= min_rows) {
        table.keys.push_back(keyed[a].first);
        table.values.resize(table.values.size() + per);
        RETURN_IF_ERROR(fit(rows, table.values.data() + table.values.size() - per));
      } else {
        fallback_rows += static_cast<int64_t>(rows.size());
      }
      a = b;
    }
    stored += static_cast<int64_t>(table.keys.size());
    ReportEvery(options, "lsh_table: tables fitted", i, s);
  }
  *solver = absl::StrFormat(
      "%s per bucket; %d stored buckets (%.0f per table of %s), min %d rows per bucket, "
      "%.2f%% of training lookups fell back",
      w.degree == 0 ? "mean target" : "ridge-regression affine map", stored,
      static_cast<double>(stored) / s,
      w.family == HashFamily::kHyperplane ? absl::StrCat(uint64_t{1} << std::min<int64_t>(m, 63), " possible")
                                          : std::string("unbounded"),
      min_rows, 100.0 * fallback_rows / (static_cast<double>(train.rows) * s));
  return w;
}

// ---- DSM --------------------------------------------------------------------

// Lloyd's k-means with k-means++ seeding on at most 16384 rows.
std::vector<float> KMeans(const Dataset& train, int64_t clusters, std::mt19937_64& rng) {
  const int64_t d = train.d;
  const int64_t n = std::min<int64_t>(train.rows, 16384);
  std::vector<int64_t> sample(train.rows);
  std::iota(sample.begin(), sample.end(), 0);
  std::shuffle(sample.begin(), sample.end(), rng);
  sample.resize(n);
  auto dist2 = [&](int64_t row, const float* c) {
    double s = 0;
    for (int64_t i = 0; i < d; ++i) {
      const double diff = double{train.x[row * d + i]} - c[i];
      s += diff * diff;
    }
    return s;
  };
  std::vector<float> centroids(clusters * d);
  std::vector<double> best(n, INFINITY);
  std::uniform_int_distribution<int64_t> first(0, n - 1);
  std::copy_n(train.x.begin() + sample[first(rng)] * d, d, centroids.begin());
  for (int64_t c = 1; c < clusters; ++c) {
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      best[i] = std::min(best[i], dist2(sample[i], centroids.data() + (c - 1) * d));
      total += best[i];
    }
    std::uniform_real_distribution<double> u(0.0, total);
    double target = u(rng);
    int64_t pick = n - 1;
    for (int64_t i = 0; i < n; ++i) {
      target -= best[i];
      if (target <= 0) {
        pick = i;
        break;
      }
    }
    std::copy_n(train.x.begin() + sample[pick] * d, d, centroids.begin() + c * d);
  }
  std::vector<int64_t> assign(n, 0);
  for (int iter = 0; iter < 25; ++iter) {
    bool changed = false;
    for (int64_t i = 0; i < n; ++i) {
      int64_t arg = 0;
      double bd = INFINITY;
      for (int64_t c = 0; c < clusters; ++c) {
        const double dd = dist2(sample[i], centroids.data() + c * d);
        if (dd < bd) {
          bd = dd;
          arg = c;
        }
      }
      changed |= assign[i] != arg;
      assign[i] = arg;
    }
    std::vector<double> sum(clusters * d, 0.0);
    std::vector<int64_t> count(clusters, 0);
    for (int64_t i = 0; i < n; ++i) {
      ++count[assign[i]];
      for (int64_t j = 0; j < d; ++j) sum[assign[i] * d + j] += train.x[sample[i] * d + j];
    }
    for (int64_t c = 0; c < clusters; ++c) {
      if (count[c] == 0) continue;  // keep an empty cluster's centroid
      for (int64_t j = 0; j < d; ++j) centroids[c * d + j] = static_cast<float>(sum[c * d + j] / count[c]);
    }
    if (!changed && iter > 0) break;
  }
  return centroids;
}

absl::StatusOr<DsmWeights> FitTopk(const Dataset& train, const TrainOptions& options,
                                   std::string* solver) {
  const int64_t d = train.d, o = train.o, t = options.topk_width, L = options.blocks;
  const int64_t k = options.active_units;
  DsmWeights w = DsmShell(train, options, t, /*experts=*/0);
  DenseWeights& net = w.network;
  std::mt19937_64 rng(options.seed ^ 0x70b);
  HyperplanesThroughData(train, {}, t, 1.0 / std::sqrt(double(d)), rng, net.bottom_weight.data(),
                         net.bottom_bias.data());
  RETURN_IF_ERROR(w.Validate());
  const std::vector<float> centred = Centred(train, net.top_bias);
  const int64_t block_units = t / L;
  const bool relu = options.activation == Activation::kRelu;
  // Masked features: the k largest pre-activations of each block, σ applied.
  auto features = [&](int64_t r0, int64_t rows, float* h) -> absl::Status {
    RETURN_IF_ERROR(RandomFeatures(train.x.data() + r0 * d, rows, d, net.bottom_weight.data(),
                                   net.bottom_bias.data(), t, /*relu=*/false, h));
    std::vector<int64_t> index(block_units);
    for (int64_t r = 0; r < rows; ++r) {
      float* z = h + r * t;
      for (int64_t l = 0; l < L; ++l) {
        std::iota(index.begin(), index.end(), l * block_units);
        std::nth_element(index.begin(), index.begin() + k - 1, index.end(), [z](int64_t a, int64_t b) {
          return z[a] > z[b] || (z[a] == z[b] && a < b);
        });
        for (int64_t i = k; i < block_units; ++i) z[index[i]] = 0.0f;
        for (int64_t i = 0; i < k; ++i) {
          if (relu && z[index[i]] < 0.0f) z[index[i]] = 0.0f;
        }
      }
    }
    return absl::OkStatus();
  };
  ASSIGN_OR_RETURN(std::vector<double> top,
                   FitLinear(features, train.rows, t, centred, o, options, "dsm topk", solver));
  StoreTop(top, t, o, t, 0, &net.top_weight);
  return w;
}

absl::StatusOr<DsmWeights> FitRouted(const Dataset& train, const TrainOptions& options,
                                     std::string* solver) {
  const int64_t d = train.d, o = train.o, L = options.blocks, E = options.experts;
  const int64_t k = options.active_units, t = L * E * k;
  DsmWeights w = DsmShell(train, options, t, E);
  DenseWeights& net = w.network;
  std::mt19937_64 rng(options.seed ^ 0xd5a);
  switch (options.router) {
    case RouterKind::kLsh: {
      if (E < 1 || (E & (E - 1)) != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the lsh router needs a power-of-two number of experts, got ", E));
      }
      const int64_t bits = L * w.RouterBits();
      w.router_weight.resize(bits * d);
      w.router_bias.resize(bits);
      HyperplanesThroughData(train, {}, bits, 1.0, rng, w.router_weight.data(), w.router_bias.data());
      break;
    }
    case RouterKind::kKmeans:
      for (int64_t l = 0; l < L; ++l) {
        Report(options, absl::StrCat("dsm kmeans: clustering block ", l + 1, "/", L, " into ", E,
                                     " centroids"));
        std::vector<float> c = KMeans(train, E, rng);
        w.router_weight.insert(w.router_weight.end(), c.begin(), c.end());
      }
      break;
    case RouterKind::kHash:
      w.hash_seed = options.seed * 0x9E3779B97F4A7C15ull + 1;
      break;
    case RouterKind::kTopk:
      return absl::InternalError("FitRouted called for topk");
  }
  // Provisional bottom layer so the engine can route; routing does not
  // depend on it.
  std::normal_distribution<float> g(0.0f, static_cast<float>(1.0 / std::sqrt(double(d))));
  for (float& v : net.bottom_weight) v = g(rng);
  RETURN_IF_ERROR(w.Validate());
  Report(options, absl::StrCat("dsm ", RouterKindName(options.router), ": routing ", train.rows,
                               " rows to ", L, " x ", E, " experts"));
  std::vector<int32_t> experts;
  {
    ASSIGN_OR_RETURN(std::unique_ptr<DsmModel> router, DsmModel::Create(w));
    Route route;
    std::vector<float> unused(train.rows * o);
    PredictStats stats;
    RETURN_IF_ERROR(router->Predict(train.x, train.rows, absl::MakeSpan(unused), &stats, &route));
    experts = std::move(route.expert_ids);
  }
  // Rows of each (block, expert); each expert's units cut through its rows.
  std::vector<std::vector<int64_t>> members(L * E);
  for (int64_t r = 0; r < train.rows; ++r) {
    for (int64_t l = 0; l < L; ++l) members[l * E + experts[r * L + l]].push_back(r);
  }
  for (int64_t slice = 0; slice < L * E; ++slice) {
    HyperplanesThroughData(train, members[slice], k, 1.0 / std::sqrt(double(d)), rng,
                           net.bottom_weight.data() + slice * k * d,
                           net.bottom_bias.data() + slice * k);
  }
  const bool relu = options.activation == Activation::kRelu;
  // block_out[l]: block l's current contribution for every row; blocks are
  // fitted by backfitting on the residual (one pass when L = 1).
  std::vector<std::vector<float>> block_out(L, std::vector<float>(train.rows * o, 0.0f));
  const int passes = L == 1 ? 1 : 3;
  int64_t empty = 0, validated = 0;
  double max_ridge = options.ridge;
  for (int pass = 0; pass < passes; ++pass) {
    for (int64_t l = 0; l < L; ++l) {
      for (int64_t e = 0; e < E; ++e) {
        const int64_t slice = l * E + e;
        const std::vector<int64_t>& rows = members[slice];
        if (static_cast<int64_t>(rows.size()) < kMinExpertRows) {
          // Too few rows to fit, or even to hold one out: the expert keeps
          // zero top weights and its rows get the other blocks' output + a0.
          // (Its units all pass through these few rows, so its features
          // vanish there and any ridge relative to them is meaningless.)
          if (pass == 0) ++empty;
          continue;
        }
        const int64_t n = static_cast<int64_t>(rows.size());
        std::vector<float> xs(n * d), target(n * o);
        for (int64_t i = 0; i < n; ++i) {
          const int64_t r = rows[i];
          std::copy_n(train.x.begin() + r * d, d, xs.begin() + i * d);
          for (int64_t j = 0; j < o; ++j) {
            float v = train.y[r * o + j] - net.top_bias[j];
            for (int64_t other = 0; other < L; ++other) {
              if (other != l) v -= block_out[other][r * o + j];
            }
            target[i * o + j] = v;
          }
        }
        std::vector<float> h(n * k);
        RETURN_IF_ERROR(RandomFeatures(xs.data(), n, d, net.bottom_weight.data() + slice * k * d,
                                       net.bottom_bias.data() + slice * k, k, relu, h.data()));
        NormalEquations fit{.p = k, .o = o, .gram = {}, .rhs = {}}, holdout = fit;
        RETURN_IF_ERROR(AccumulateSplit(h.data(), target.data(), n, &fit, &holdout));
        double chosen = 0;
        bool was_validated = false;
        ASSIGN_OR_RETURN(std::vector<double> top,
                         SolveRidgeChoosingLambda(fit, holdout, n, options.ridge, &chosen,
                                                  &was_validated));
        if (pass == 0 && was_validated) {
          ++validated;
          max_ridge = std::max(max_ridge, chosen);
        }
        StoreTop(top, k, o, t, slice * k, &net.top_weight);
        std::vector<float> wf(top.begin(), top.end()), pred(n * o);
        RETURN_IF_ERROR(Gemm(false, false, n, o, k, h.data(), wf.data(), pred.data()));
        for (int64_t i = 0; i < n; ++i) {
          std::copy_n(pred.begin() + i * o, o, block_out[l].begin() + rows[i] * o);
        }
        ReportEvery(options, absl::StrCat("dsm: experts fitted (block ", l + 1, ", pass ",
                                          pass + 1, "/", passes, ")"),
                    e, E);
      }
    }
  }
  *solver = absl::StrCat("closed-form ridge regression per expert slice (", k,
                         " features each, relative ridge ", options.ridge, ")",
                         passes > 1 ? absl::StrCat(", ", passes, " backfitting passes over ", L,
                                                   " blocks")
                                    : std::string(),
                         validated > 0
                             ? absl::StrCat("; ", validated, " experts with under ",
                                            kWellDetermined, " rows per unit chose their ridge "
                                            "on held-out rows (largest ", max_ridge, ")")
                             : std::string(),
                         empty > 0 ? absl::StrCat("; ", empty, " experts got fewer than ",
                                                  kMinExpertRows, " training rows and stay zero")
                                   : std::string());
  return w;
}

// ---- Evaluation ---------------------------------------------------------------

bool LooksLikeClasses(const Dataset& data) {
  if (data.o == 1) {
    std::vector<char> seen(101, 0);
    int distinct = 0;
    for (float v : data.y) {
      if (v < 0 || v > 100 || v != std::floor(v)) return false;
      if (!seen[static_cast<int>(v)]) {
        seen[static_cast<int>(v)] = 1;
        ++distinct;
      }
    }
    return distinct >= 2;
  }
  for (int64_t r = 0; r < data.rows; ++r) {
    int ones = 0;
    for (int64_t j = 0; j < data.o; ++j) {
      const float v = data.y[r * data.o + j];
      if (v == 1.0f) ++ones;
      else if (v != 0.0f) return false;
    }
    if (ones != 1) return false;
  }
  return true;
}

double MeanSquaredError(const std::vector<float>& pred, const Dataset& data) {
  double sq = 0;
  for (size_t i = 0; i < pred.size(); ++i) {
    const double e = double{pred[i]} - data.y[i];
    sq += e * e;
  }
  return sq / static_cast<double>(pred.size());
}

absl::StatusOr<std::vector<float>> PredictAll(const Model& model, const Dataset& data) {
  std::vector<float> y(data.rows * data.o);
  for (int64_t r = 0; r < data.rows; r += kChunkRows) {
    const int64_t n = std::min(kChunkRows, data.rows - r);
    PredictStats stats;
    RETURN_IF_ERROR(model.Predict(absl::MakeConstSpan(data.x).subspan(r * data.d, n * data.d), n,
                                  absl::MakeSpan(y).subspan(r * data.o, n * data.o), &stats,
                                  nullptr));
  }
  return y;
}

// Each row's route, as one vector per row (expert ids or bucket keys); empty
// for models without a route (topk, dense).
absl::StatusOr<std::vector<std::vector<uint64_t>>> RoutesOf(const Model& model,
                                                             const Dataset& data) {
  std::vector<std::vector<uint64_t>> routes;
  std::vector<float> y(kChunkRows * data.o);
  for (int64_t r = 0; r < data.rows; r += kChunkRows) {
    const int64_t n = std::min(kChunkRows, data.rows - r);
    PredictStats stats;
    Route route;
    RETURN_IF_ERROR(model.Predict(absl::MakeConstSpan(data.x).subspan(r * data.d, n * data.d), n,
                                  absl::MakeSpan(y).subspan(0, n * data.o), &stats, &route));
    for (int64_t i = 0; i < n; ++i) {
      std::vector<uint64_t> row;
      for (int64_t j = 0; j < route.experts_per_row; ++j) {
        row.push_back(static_cast<uint64_t>(route.expert_ids[i * route.experts_per_row + j]));
      }
      for (int64_t j = 0; j < route.keys_per_row; ++j) {
        row.push_back(route.bucket_keys[i * route.keys_per_row + j]);
      }
      routes.push_back(std::move(row));
    }
  }
  return routes;
}

double Accuracy(const std::vector<float>& pred, const Dataset& data) {
  int64_t correct = 0;
  for (int64_t r = 0; r < data.rows; ++r) {
    if (data.o == 1) {
      correct += std::lround(pred[r]) == std::lround(data.y[r]);
    } else {
      const float* p = pred.data() + r * data.o;
      const float* t = data.y.data() + r * data.o;
      correct += std::max_element(p, p + data.o) - p == std::max_element(t, t + data.o) - t;
    }
  }
  return static_cast<double>(correct) / data.rows;
}

absl::Status Evaluate(const Model& model, const Dataset& train, const Dataset& test,
                      ModelMetrics* metrics) {
  ASSIGN_OR_RETURN(metrics->train_mse, EvaluateMse(model, train));
  ASSIGN_OR_RETURN(std::vector<float> pred, PredictAll(model, test));
  metrics->test_mse = MeanSquaredError(pred, test);
  metrics->classification = LooksLikeClasses(train);
  if (metrics->classification) metrics->test_accuracy = Accuracy(pred, test);
  metrics->parameters = model.info().parameters;
  metrics->flops_per_row = model.info().flops_per_row;
  metrics->weight_bytes_per_row = model.info().weight_bytes_per_row;
  metrics->description = model.info().description;
  return absl::OkStatus();
}

// Test accuracy of both paths served at BF16 and at INT8, from the weights
// as the checkpoint stores them at `storage`, and the test rows whose route
// differs from `fp32`'s. Sets the checkpoint's tensor precision.
absl::Status EvaluateReduced(const Model& fp32, const Dataset& test, Precision storage,
                             TrainResult* result) {
  Checkpoint& c = result->checkpoint;
  c.tensor_precision = storage;
  DenseWeights dense = *c.dense;
  RoundToStorage(storage, &dense);
  SparseWeights stored = c.sparse;
  const KindCodec& codec = CodecOf(stored);
  codec.RoundToStorage(storage, &stored);
  ASSIGN_OR_RETURN(const std::vector<std::vector<uint64_t>> fp32_routes, RoutesOf(fp32, test));
  const bool classification = result->sparse.classification;
  for (Precision p : {Precision::kBf16, Precision::kInt8}) {
    ASSIGN_OR_RETURN(std::unique_ptr<Model> sparse, codec.CreateModel(stored, p, CopyIn()));
    ASSIGN_OR_RETURN(std::unique_ptr<DenseModel> twin, DenseModel::Create(dense, p));
    for (const auto& [model, metrics] :
         {std::pair<const Model*, ModelMetrics*>{sparse.get(), &result->sparse},
          {twin.get(), &result->dense}}) {
      PrecisionMetrics& m = metrics->at[p];
      m.weight_bytes_per_row = model->info().weight_bytes_per_row;
      ASSIGN_OR_RETURN(std::vector<float> pred, PredictAll(*model, test));
      m.test_mse = MeanSquaredError(pred, test);
      if (classification) m.test_accuracy = Accuracy(pred, test);
    }
    ASSIGN_OR_RETURN(const std::vector<std::vector<uint64_t>> routes, RoutesOf(*sparse, test));
    int64_t changed = 0;
    for (size_t r = 0; r < routes.size(); ++r) changed += routes[r] != fp32_routes[r];
    result->sparse.at[p].routes_changed =
        routes.empty() ? 0.0 : static_cast<double>(changed) / static_cast<double>(routes.size());
  }
  return absl::OkStatus();
}

// Model sizes implied by the options, checked before anything is allocated:
// at most 2^31 floats (8 GiB) in any weight matrix.
absl::Status CheckSizes(const Dataset& train, const TrainOptions& o) {
  constexpr int64_t kMaxFloats = int64_t{1} << 31;
  auto product = [](std::initializer_list<int64_t> factors, int64_t* out) {
    int64_t p = 1;
    for (int64_t f : factors) {
      if (f < 0 || __builtin_mul_overflow(p, f, &p)) return false;
    }
    *out = p;
    return true;
  };
  int64_t width = 0, floats = 0;
  if (o.kind == ModelKind::kDsm) {
    const bool ok = o.router == RouterKind::kTopk ? product({o.topk_width}, &width)
                                                  : product({o.blocks, o.experts, o.active_units}, &width);
    if (!ok || !product({width, train.d}, &floats) || floats > kMaxFloats) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the DSM would have blocks x experts x active_units (or topk_width) x d above 2^31 "
          "weights; got blocks=", o.blocks, " experts=", o.experts, " active_units=",
          o.active_units, " topk_width=", o.topk_width, " d=", train.d));
    }
  } else if (!product({o.tables, o.hashes, train.d}, &floats) || floats > kMaxFloats) {
    return absl::InvalidArgumentError(absl::StrCat("tables x hashes x d is above 2^31: tables=",
                                                   o.tables, " hashes=", o.hashes, " d=", train.d));
  }
  if (!product({o.dense_width, train.d}, &floats) || floats > kMaxFloats) {
    return absl::InvalidArgumentError(absl::StrCat("dense_width x d is above 2^31: dense_width=",
                                                   o.dense_width, " d=", train.d));
  }
  return absl::OkStatus();
}

absl::Status CheckData(const Dataset& train, const Dataset& test) {
  if (train.rows < 2) return absl::InvalidArgumentError("the training set needs at least 2 rows");
  if (test.rows < 1) return absl::InvalidArgumentError("the test set is empty");
  if (train.d != test.d || train.o != test.o) {
    return absl::InvalidArgumentError(absl::StrCat(
        "train has ", train.d, " inputs and ", train.o, " targets but test has ", test.d, " and ",
        test.o));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<double> EvaluateMse(const Model& model, const Dataset& data) {
  ASSIGN_OR_RETURN(std::vector<float> pred, PredictAll(model, data));
  return MeanSquaredError(pred, data);
}

absl::StatusOr<TrainResult> Train(const Dataset& train, const Dataset& test,
                                  const TrainOptions& options) {
  RETURN_IF_ERROR(CheckData(train, test));
  RETURN_IF_ERROR(CheckSizes(train, options));
  TrainResult result;
  const auto start = Clock::now();
  std::unique_ptr<Model> sparse;
  int64_t activated = 0;
  if (options.kind == ModelKind::kLshTable) {
    ASSIGN_OR_RETURN(LshTableWeights lsh, FitLsh(train, options, &result.sparse.solver));
    activated = options.tables * (options.lsh_degree == 0 ? 1 : train.d + 1);
    ASSIGN_OR_RETURN(sparse, LshTableModel::Create(lsh));
    result.checkpoint.sparse = std::move(lsh);
  } else if (options.kind == ModelKind::kDsm) {
    absl::StatusOr<DsmWeights> dsm = options.router == RouterKind::kTopk
                                         ? FitTopk(train, options, &result.sparse.solver)
                                         : FitRouted(train, options, &result.sparse.solver);
    RETURN_IF_ERROR(dsm.status());
    activated = options.blocks * options.active_units;
    ASSIGN_OR_RETURN(sparse, DsmModel::Create(*dsm));
    result.checkpoint.sparse = *std::move(dsm);
  } else {
    return absl::InvalidArgumentError("the sparse model kind must be lsh_table or dsm");
  }
  result.sparse.activated_units = activated;
  const int64_t width = options.dense_width > 0 ? options.dense_width : activated;
  Report(options, absl::StrCat("dense twin: width ", width));
  ASSIGN_OR_RETURN(DenseWeights dense_weights, FitDense(train, width, options, &result.dense.solver));
  result.dense.activated_units = width;
  ASSIGN_OR_RETURN(std::unique_ptr<DenseModel> dense, DenseModel::Create(dense_weights));
  result.checkpoint.dense = std::move(dense_weights);
  result.train_seconds = Seconds(start);

  Report(options, absl::StrCat("evaluating on ", train.rows, " train and ", test.rows, " test rows"));
  const auto eval_start = Clock::now();
  RETURN_IF_ERROR(Evaluate(*sparse, train, test, &result.sparse));
  RETURN_IF_ERROR(Evaluate(*dense, train, test, &result.dense));
  RETURN_IF_ERROR(EvaluateReduced(*sparse, test, options.precision, &result));
  result.eval_seconds = Seconds(eval_start);
  return result;
}

}  // namespace sparse
