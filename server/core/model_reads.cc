#include "server/core/model_reads.h"

#include <algorithm>

#include "common/status_macros.h"
#include "model_store/model_repository.h"
#include "model_store/model_state.h"
#include "model_store/weight_cache.h"
#include "server/core/inference_core.h"

namespace sparse {

const std::string& ModelHandle::model() const { return servable_->model; }
int64_t ModelHandle::version() const { return servable_->version; }
bool ModelHandle::has_dense() const { return servable_->loaded.dense != nullptr; }

const ModelInfo& ModelHandle::info() const {
  return dense_ ? servable_->loaded.dense->info() : servable_->loaded.sparse->info();
}

ModelHandle ModelHandle::Path(bool dense) const { return ModelHandle(servable_, dense, scheduling_); }

namespace {

int64_t MappedBytes(const LoadedModel& m) {
  return m.sparse->info().mapped_bytes + (m.dense != nullptr ? m.dense->info().mapped_bytes : 0);
}

// The residency of a version's mapped weights now (mincore), both paths;
// per expert slice of a routed DSM's sparse path.
struct MappedResidency {
  int64_t resident_bytes = 0;
  int64_t experts = 0;
  int64_t expert_bytes = 0;
  std::vector<int64_t> expert_resident_bytes;
};

MappedResidency MeasureResidency(const LoadedModel& m) {
  MappedResidency out;
  if (MappedBytes(m) == 0) return out;  // copied in: no system call
  WeightResidency sparse = m.sparse->Residency();
  out.resident_bytes = sparse.resident_bytes;
  if (m.dense != nullptr && m.dense->info().mapped_bytes > 0) {
    out.resident_bytes += m.dense->Residency().resident_bytes;
  }
  // Parts are expert slices only for a routed DSM (a topk router's one part
  // is all of B): the router's counts say how many blocks and experts.
  const RoutingCounts routing = m.sparse->Routing();
  if (routing.experts > 0 &&
      static_cast<int64_t>(sparse.part_resident_bytes.size()) == routing.blocks * routing.experts) {
    out.experts = routing.experts;
    out.expert_bytes = sparse.part_bytes;
    out.expert_resident_bytes = std::move(sparse.part_resident_bytes);
  }
  return out;
}

}  // namespace

VersionStatus ToVersionStatus(std::shared_ptr<const Servable> servable, ModelReads reads) {
  const LoadedModel& m = servable->loaded;
  VersionStatus v;
  v.version = servable->version;
  v.sparse = m.sparse->info();
  if (m.dense != nullptr) v.dense = m.dense->info();
  v.dense_cost_only = m.dense_cost_only;
  v.precision = servable->precision;
  v.resident_bytes = ResidentBytes(*servable);
  v.mapped_bytes = MappedBytes(m);
  if (m.weight_cache != nullptr) {
    v.weight_cache_file = m.weight_cache->name();
    v.weight_verify = std::string(WeightVerifyName(m.weight_cache->verify()));
  }
  if (reads == ModelReads::kResidency) {
    MappedResidency r = MeasureResidency(m);
    v.mapped_resident_bytes = r.resident_bytes;
    v.experts = r.experts;
    v.expert_bytes = r.expert_bytes;
    v.expert_resident_bytes = std::move(r.expert_resident_bytes);
  }
  v.model_sha256 = m.model_sha256;
  if (servable->part.role == ModelPart::Role::kFront) v.shards = servable->part.shard.count;
  if (servable->part.role == ModelPart::Role::kShard) v.shard = servable->part.shard.ToString();
  v.info = m.info;
  v.handle = ModelHandle(std::move(servable), false, nullptr);
  return v;
}

ModelStatus ToModelStatus(const std::string& name, const ModelState& state, ModelReads reads) {
  ModelStatus out;
  out.name = name;
  for (const auto& [number, servable] : state.versions) {
    out.versions.push_back(ToVersionStatus(servable, reads));
  }
  for (const auto& [number, failure] : state.failures) out.failures[number] = failure.error;
  out.config_error = state.config_error;
  out.config = state.config;
  return out;
}


// InferenceCore's reads (server/core/inference_core.h).

absl::StatusOr<ModelHandle> InferenceCore::Resolve(absl::string_view model,
                                                   int64_t version) const {
  auto scheduling = std::make_shared<Scheduling>();
  ASSIGN_OR_RETURN(std::shared_ptr<const Servable> servable,
                   repository_->Find(model, version, scheduling.get()));
  return ModelHandle(std::move(servable), false, std::move(scheduling));
}

std::vector<ModelStatus> InferenceCore::Models(ModelReads reads) const {
  std::vector<ModelStatus> out;
  for (const auto& [name, state] : *repository_->snapshot()) {
    out.push_back(ToModelStatus(name, state, reads));
  }
  return out;
}

absl::StatusOr<ModelStatus> InferenceCore::Model(absl::string_view model,
                                                 ModelReads reads) const {
  const std::shared_ptr<const RepositorySnapshot> snapshot = repository_->snapshot();
  auto it = snapshot->find(std::string(model));
  // Find() words the error (and lists what is loaded).
  if (it == snapshot->end()) return repository_->Find(model, 0).status();
  return ToModelStatus(it->first, it->second, reads);
}

size_t InferenceCore::ServingVersions() const {
  return sparse::ServingVersions(*repository_->snapshot());
}

int64_t InferenceCore::WidestInput(absl::string_view model) const {
  const std::shared_ptr<const RepositorySnapshot> snapshot = repository_->snapshot();
  auto it = snapshot->find(std::string(model));
  int64_t widest = 0;
  if (it == snapshot->end()) return widest;
  for (const auto& [number, servable] : it->second.versions) {
    widest = std::max(widest, servable->loaded.sparse->info().input_dim);
  }
  return widest;
}

std::vector<std::string> InferenceCore::ModelDirectories(std::error_code* ec) const {
  return repository_->ModelDirectories(ec);
}

std::map<std::string, std::string> InferenceCore::NotServed() const {
  return repository_->NotServed();
}

std::vector<VersionRouting> InferenceCore::Routing() const {
  std::vector<VersionRouting> out;
  for (const auto& [name, state] : *repository_->snapshot()) {
    for (const auto& [number, servable] : state.versions) {
      VersionRouting v;
      v.model = name;
      v.version = number;
      v.kind = servable->loaded.sparse->info().kind;
      v.precision = servable->precision;
      v.resident_bytes = ResidentBytes(*servable);
      v.mapped_bytes = MappedBytes(servable->loaded);
      MappedResidency r = MeasureResidency(servable->loaded);
      v.mapped_resident_bytes = r.resident_bytes;
      v.expert_bytes = r.expert_bytes;
      v.expert_resident_bytes = std::move(r.expert_resident_bytes);
      v.since_warmup = servable->loaded.sparse->Routing();
      const RoutingCounts& base = servable->warmup_routing;
      for (size_t i = 0; i < v.since_warmup.expert_rows.size() && i < base.expert_rows.size();
           ++i) {
        v.since_warmup.expert_rows[i] -= base.expert_rows[i];
      }
      v.since_warmup.lookups -= base.lookups;
      v.since_warmup.misses -= base.misses;
      out.push_back(std::move(v));
    }
  }
  return out;
}

}  // namespace sparse
