// The sparse model kinds (DESIGN.md §2; docs/checkpoint-format.md has one
// section per kind). A kind is its weights (engine/weights.h), its engine
// model (engine/) and its codec, model_store/kinds/<kind>_codec.cc: a
// KindCodec (model_store/kind_codec.h) that defines CodecFor<its weights>.
// Generic code finds a kind's codec through the registry (CodecOf,
// FindCodec), which is built from SparseWeights.
//
// Adding a kind: its weights in SparseWeights and its CodecFor line below.
#ifndef SPARSE_MODEL_STORE_KINDS_KINDS_H_
#define SPARSE_MODEL_STORE_KINDS_KINDS_H_

#include <variant>

#include "engine/weights.h"

namespace sparse {

// The weights of a sparse model of any kind, in the registry's order (the
// order in which errors list the kinds).
using SparseWeights = std::variant<LshTableWeights, DsmWeights>;

class KindCodec;
// The codec of the kind whose weights are `Weights`: one immutable object
// that lives as long as the process. Each kind's codec file defines its
// specialization.
template <typename Weights>
const KindCodec& CodecFor();
template <>
const KindCodec& CodecFor<LshTableWeights>();  // kinds/lsh_table_codec.cc
template <>
const KindCodec& CodecFor<DsmWeights>();  // kinds/dsm_codec.cc

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_KINDS_KINDS_H_
