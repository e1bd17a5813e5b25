// The plain-value helpers of engine/weights.h:
//  - HashFamilyName / ActivationName / RouterKindName and their Parse
//    functions round-trip every enum value under the names the checkpoint
//    metadata uses (docs/checkpoint-format.md), and Parse refuses any other
//    name with INVALID_ARGUMENT quoting it.
//  - LshTableFlopsPerRow, DsmFlopsPerRow and DenseFlopsPerRow equal the
//    table "FLOPs each path reports" of docs/checkpoint-format.md, computed
//    here from the shapes the test chose (not from the code's own fields).
#include "engine/weights.h"

#include <cstdint>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/matchers.h"
#include "tests/testing/random_models.h"

namespace sparse {
namespace {

using ::sparse::testing::DsmShape;
using ::sparse::testing::LshShape;
using ::sparse::testing::RandomDense;
using ::sparse::testing::RandomDsm;
using ::sparse::testing::RandomLshTable;
using ::testing::HasSubstr;

TEST(WeightsNamesTest, HashFamilyRoundTripsUnderItsCheckpointName) {
  EXPECT_EQ(HashFamilyName(HashFamily::kHyperplane), "hyperplane");
  EXPECT_EQ(HashFamilyName(HashFamily::kEuclidean), "euclidean");
  for (HashFamily family : {HashFamily::kHyperplane, HashFamily::kEuclidean}) {
    ASSERT_OK_AND_ASSIGN(const HashFamily parsed, ParseHashFamily(HashFamilyName(family)));
    EXPECT_EQ(parsed, family) << HashFamilyName(family);
  }
}

TEST(WeightsNamesTest, ActivationRoundTripsUnderItsCheckpointName) {
  EXPECT_EQ(ActivationName(Activation::kRelu), "relu");
  EXPECT_EQ(ActivationName(Activation::kIdentity), "identity");
  for (Activation activation : {Activation::kRelu, Activation::kIdentity}) {
    ASSERT_OK_AND_ASSIGN(const Activation parsed, ParseActivation(ActivationName(activation)));
    EXPECT_EQ(parsed, activation) << ActivationName(activation);
  }
}

TEST(WeightsNamesTest, RouterKindRoundTripsUnderItsCheckpointName) {
  EXPECT_EQ(RouterKindName(RouterKind::kLsh), "lsh");
  EXPECT_EQ(RouterKindName(RouterKind::kHash), "hash");
  EXPECT_EQ(RouterKindName(RouterKind::kKmeans), "kmeans");
  EXPECT_EQ(RouterKindName(RouterKind::kTopk), "topk");
  for (RouterKind router :
       {RouterKind::kLsh, RouterKind::kHash, RouterKind::kKmeans, RouterKind::kTopk}) {
    ASSERT_OK_AND_ASSIGN(const RouterKind parsed, ParseRouterKind(RouterKindName(router)));
    EXPECT_EQ(parsed, router) << RouterKindName(router);
  }
}

// Parse refuses `name` with INVALID_ARGUMENT quoting it.
template <typename T>
void ExpectUnknownNameRefused(absl::StatusOr<T> (*parse)(absl::string_view),
                              const std::string& name) {
  const absl::StatusOr<T> parsed = parse(name);
  ASSERT_FALSE(parsed.ok()) << "accepted '" << name << "'";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("'" + name + "'"));
}

TEST(WeightsNamesTest, ParseRefusesAnUnknownNameQuotingIt) {
  // Misspellings, other case, surrounding space and the empty name.
  for (const std::string name : {"gaussian", "Hyperplane", " euclidean", "", "relu"}) {
    SCOPED_TRACE(name);
    ExpectUnknownNameRefused(&ParseHashFamily, name);
  }
  for (const std::string name : {"gelu", "ReLU", "relu ", "", "lsh"}) {
    SCOPED_TRACE(name);
    ExpectUnknownNameRefused(&ParseActivation, name);
  }
  for (const std::string name : {"random", "LSH", "top-k", "", "relu", "unknown"}) {
    SCOPED_TRACE(name);
    ExpectUnknownNameRefused(&ParseRouterKind, name);
  }
}

TEST(WeightsNamesTest, ParseErrorsListTheAcceptedNames) {
  const std::string family(ParseHashFamily("x").status().message());
  EXPECT_THAT(family, HasSubstr("hyperplane"));
  EXPECT_THAT(family, HasSubstr("euclidean"));
  const std::string activation(ParseActivation("x").status().message());
  EXPECT_THAT(activation, HasSubstr("relu"));
  EXPECT_THAT(activation, HasSubstr("identity"));
  const std::string router(ParseRouterKind("x").status().message());
  for (const char* name : {"lsh", "hash", "kmeans", "topk"}) EXPECT_THAT(router, HasSubstr(name));
}

// docs/checkpoint-format.md, "FLOPs each path reports", per input row.
int64_t DocLshFlops(int64_t d, int64_t o, int64_t s, int64_t m, int64_t degree) {
  return degree == 0 ? 2 * s * m * d + s * o : 2 * s * m * d + s * 2 * o * (d + 1);
}
int64_t DocDenseFlops(int64_t d, int64_t t, int64_t o) { return 2 * t * d + 2 * t * o; }

int64_t Log2(int64_t power_of_two) {
  int64_t r = 0;
  while ((int64_t{1} << r) != power_of_two) ++r;
  return r;
}

TEST(FlopsPerRowTest, LshTableMatchesTheDocumentedFormula) {
  struct Case {
    int64_t d, o, s, m, degree;
    HashFamily family;
  };
  const std::vector<Case> cases = {
      {8, 1, 4, 6, 0, HashFamily::kHyperplane},
      {8, 1, 4, 6, 1, HashFamily::kHyperplane},
      {3, 2, 1, 1, 0, HashFamily::kEuclidean},
      {5, 3, 2, 7, 1, HashFamily::kEuclidean},
      {16, 4, 3, 10, 1, HashFamily::kHyperplane},
  };
  for (const Case& c : cases) {
    LshShape shape;
    shape.d = c.d;
    shape.o = c.o;
    shape.s = c.s;
    shape.m = c.m;
    shape.degree = c.degree;
    shape.family = c.family;
    shape.sample_rows = 64;
    const LshTableWeights w = RandomLshTable(shape, 7);
    ASSERT_OK(w.Validate());
    SCOPED_TRACE(::testing::Message() << "d=" << c.d << " o=" << c.o << " s=" << c.s
                                    << " m=" << c.m << " degree=" << c.degree);
    EXPECT_EQ(LshTableFlopsPerRow(w), DocLshFlops(c.d, c.o, c.s, c.m, c.degree));
  }
  // One worked by hand: d=8, o=1, s=4, m=6, Δ=0 is 2·4·6·8 + 4·1 = 388;
  // with Δ=1 the lookup is 4·2·1·9 = 72, so 384 + 72 = 456.
  EXPECT_EQ(DocLshFlops(8, 1, 4, 6, 0), 388);
  EXPECT_EQ(DocLshFlops(8, 1, 4, 6, 1), 456);
}

TEST(FlopsPerRowTest, DenseMatchesTheDocumentedFormula) {
  struct Case {
    int64_t d, t, o;
  };
  for (const Case& c : std::vector<Case>{{8, 64, 2}, {1, 1, 1}, {5, 7, 3}, {32, 128, 1}}) {
    for (Activation activation : {Activation::kRelu, Activation::kIdentity}) {
      const DenseWeights w = RandomDense(c.d, c.t, c.o, activation, 3);
      ASSERT_OK(w.Validate());
      EXPECT_EQ(DenseFlopsPerRow(w), DocDenseFlops(c.d, c.t, c.o))
          << "d=" << c.d << " t=" << c.t << " o=" << c.o;
    }
  }
  EXPECT_EQ(DocDenseFlops(8, 64, 2), 1024 + 256);
}

TEST(FlopsPerRowTest, DsmMatchesTheDocumentedFormulaForEveryRouter) {
  struct Case {
    int64_t d, o, blocks, experts, k;
  };
  const std::vector<Case> cases = {
      {8, 1, 1, 8, 16},
      {8, 2, 2, 4, 8},
      {5, 3, 3, 2, 4},
      {4, 1, 1, 16, 2},
  };
  for (const Case& c : cases) {
    for (RouterKind router :
         {RouterKind::kLsh, RouterKind::kHash, RouterKind::kKmeans, RouterKind::kTopk}) {
      DsmShape shape;
      shape.d = c.d;
      shape.o = c.o;
      shape.blocks = c.blocks;
      shape.experts = c.experts;
      shape.active_units = c.k;
      shape.router = router;
      shape.activation = Activation::kRelu;
      shape.topk_block_units = c.experts * c.k;  // the same width for topk
      const DsmWeights w = RandomDsm(shape, 11);
      ASSERT_OK(w.Validate());

      const int64_t d = c.d, o = c.o, L = c.blocks, E = c.experts, k = c.k;
      const int64_t t = L * E * k;
      int64_t expected = 0;
      switch (router) {
        case RouterKind::kLsh:
          expected = L * (2 * Log2(E) * d + 2 * k * d + 2 * k * o);
          break;
        case RouterKind::kHash:
          expected = L * (2 * k * d + 2 * k * o);
          break;
        case RouterKind::kKmeans:
          expected = L * (2 * E * d + 2 * k * d + 2 * k * o);
          break;
        case RouterKind::kTopk:
          expected = 2 * t * d + L * 2 * k * o;
          break;
      }
      EXPECT_EQ(DsmFlopsPerRow(w), expected)
          << "router=" << RouterKindName(router) << " d=" << d << " o=" << o << " L=" << L
          << " E=" << E << " k=" << k;
    }
  }
}

TEST(FlopsPerRowTest, DsmCostsLessThanItsDenseNetworkWhenSparse) {
  // What the FLOP figures are for: a routed DSM with k << t reports far
  // fewer FLOPs than the same network run densely.
  DsmShape shape;
  shape.d = 8;
  shape.o = 1;
  shape.blocks = 1;
  shape.experts = 16;
  shape.active_units = 4;
  shape.router = RouterKind::kLsh;
  const DsmWeights w = RandomDsm(shape, 5);
  ASSERT_OK(w.Validate());
  EXPECT_LT(DsmFlopsPerRow(w), DenseFlopsPerRow(w.network));
  // lsh: 2·4·8 + 2·4·8 + 2·4·1 = 136; dense t=64: 2·64·8 + 2·64·1 = 1152.
  EXPECT_EQ(DsmFlopsPerRow(w), 136);
  EXPECT_EQ(DenseFlopsPerRow(w.network), 1152);
}

}  // namespace
}  // namespace sparse
