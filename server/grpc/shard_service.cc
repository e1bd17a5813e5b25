#include "server/grpc/shard_service.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "common/client_text.h"
#include "server/grpc/raw_unary.h"

namespace sparse {

using sparse::v1::PartialRequest;
using sparse::v1::PartialResponse;

ShardService::ShardService(const ModelRepository* repository, InferenceCore* core, ShardSpec shard)
    : repository_(repository), core_(core), shard_(shard) {}

grpc::ServerUnaryReactor* ShardService::ComputePartial(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request,
                                                       grpc::ByteBuffer* response) {
  return ServeUnary<PartialRequest, PartialResponse>(
      context, request, response,
      [this, context](const PartialRequest& r, PartialResponse* out, UnaryDone done,
                      std::chrono::steady_clock::time_point received) {
        if (r.shard_index() != shard_.index || r.shard_count() != shard_.count) {
          done(absl::FailedPreconditionError(absl::StrCat(
              "this server is shard ", shard_.ToString(), "; the front asked for shard ",
              r.shard_index(), "/", r.shard_count(), " (check the front's --shard_targets order)")));
          return;
        }
        if (r.version() < 1) {
          done(absl::InvalidArgumentError("a shard call names its front's version (>= 1)"));
          return;
        }
        absl::StatusOr<std::shared_ptr<const Servable>> servable =
            repository_->Find(r.model(), r.version());
        if (!servable.ok()) {
          done(servable.status());
          return;
        }
        const Precision precision = static_cast<Precision>(r.precision());
        if ((*servable)->precision != precision) {
          done(absl::FailedPreconditionError(absl::StrCat(
              "model '", ClientText(r.model()), "' version ", r.version(), " serves at ",
              PrecisionName((*servable)->precision), " on this shard, the front at ",
              PrecisionName(precision), " (config.pbtxt is read by both: is it being changed?)")));
          return;
        }
        if (!r.model_sha256().empty() && r.model_sha256() != (*servable)->loaded.model_sha256) {
          done(absl::FailedPreconditionError(absl::StrCat(
              "model '", ClientText(r.model()), "' version ", r.version(),
              " holds other files on this shard than on the front (model.safetensors SHA-256 ",
              (*servable)->loaded.model_sha256, " here): front and shards must read one "
              "repository")));
          return;
        }
        (*servable)->MarkUsed();
        if (r.rows() == 0) {  // a front's keep-alive: the version stays retained
          done(absl::OkStatus());
          return;
        }
        // The core's request, its route and its answer live until the call is done.
        struct Call {
          Route given;
          InferRequest request;
          InferResponse answer;
        };
        auto call = std::make_shared<Call>();
        call->given.experts_per_row = r.experts_per_row();
        call->given.expert_ids.assign(r.expert_ids().begin(), r.expert_ids().end());
        call->given.keys_per_row = r.keys_per_row();
        call->given.bucket_keys.assign(r.bucket_keys().begin(), r.bucket_keys().end());
        InferRequest& q = call->request;
        q.model = r.model();
        q.version = r.version();
        q.rows = r.rows();
        q.inputs = absl::MakeConstSpan(r.inputs().data(), r.inputs().size());
        q.given_route = &call->given;
        q.return_route = r.keys_per_row() > 0;  // the misses
        BindToCall(context, received, &q);
        core_->Infer(q, &call->answer, [call, out, done = std::move(done)](absl::Status status) {
          if (status.ok()) {
            const InferResponse& a = call->answer;
            out->mutable_outputs()->Add(a.outputs.begin(), a.outputs.end());
            if (a.has_route && !a.route.bucket_missed.empty()) {
              out->set_bucket_missed(a.route.bucket_missed.data(), a.route.bucket_missed.size());
            }
            sparse::v1::Cost* cost = out->mutable_cost();
            cost->set_flops(a.cost.flops);
            cost->set_weight_bytes(a.cost.weight_bytes);
            cost->set_queue_ns(a.cost.queue_ns);
            cost->set_route_ns(a.cost.route_ns);
            cost->set_compute_ns(a.cost.compute_ns);
            cost->set_total_ns(a.cost.total_ns);
            cost->set_batch_size(a.cost.batch_rows);
          }
          done(status);
        });
      });
}

}  // namespace sparse
