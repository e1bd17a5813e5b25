// The dense network y = A·σ(Bx + c) + a0 in a tensor file
// (docs/checkpoint-format.md, kind = "dense"): metadata input_dim,
// output_dim, width and activation; tensors bottom.weight, bottom.bias,
// top.weight and top.bias, the two matrices at F32, BF16 or I8. The dense
// twin's file holds this network alone; a DSM's holds it and a router.
#ifndef SPARSE_MODEL_STORE_KINDS_DENSE_CODEC_H_
#define SPARSE_MODEL_STORE_KINDS_DENSE_CODEC_H_

#include "absl/status/statusor.h"
#include "engine/weights.h"
#include "model_store/tensor_io.h"

namespace sparse {

// Adds the network's metadata and tensors to `out` (matrices at the
// writer's precision). `w` must outlive `out`.
void EncodeNetwork(const DenseWeights& w, TensorWriter* out);

// Reads the network. With `units`, only those hidden units (rows of B and
// c, columns of A): width is then their count. With `router_only`, only
// the dimensions and a0 (a front's share); the other tensors are skipped.
absl::StatusOr<DenseWeights> DecodeNetwork(MetadataReader& meta, TensorReader& tensors,
                                           const Selection* units = nullptr,
                                           bool router_only = false);

}  // namespace sparse

#endif  // SPARSE_MODEL_STORE_KINDS_DENSE_CODEC_H_
