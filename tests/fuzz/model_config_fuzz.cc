// Fuzzes config.pbtxt parsing and validation (ParseModelConfig), today's
// form and Triton's schema (corpus: triton, triton_refused): any text gets a
// config or an error naming the line or the field, never a crash.
#include <cstdint>
#include <string>

#include "model_store/model_repository.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::StatusOr<sparse::v1::ModelConfig> config =
      sparse::ParseModelConfig(absl::string_view(reinterpret_cast<const char*>(data), size),
                               "mymodel");
  if (config.ok()) {
    // What the repository derives from a valid config stays in range.
    const auto& b = config->dynamic_batching();
    if (b.max_batch_rows() < 0 || b.max_queue_delay_us() < 0 || b.max_queue_size() < 0) __builtin_trap();
    if (config->declared_input_dim() < 0 || config->declared_output_dim() < 0 ||
        config->priority_levels() > sparse::kMaxPriorityLevels ||
        config->default_priority_level() > config->priority_levels()) {
      __builtin_trap();
    }
    // Limits the core schedules by stay in range (a DELAY has its bound).
    const auto& l = config->limits();
    if (l.max_in_flight() < 0 || l.worker_weight() > sparse::kMaxWorkerWeight ||
        config->instance_count() < 0 ||
        (l.over_limit() == sparse::v1::Limits::DELAY &&
         (l.max_delay_us() < 1 || l.max_delay_us() > sparse::kMaxDelayUs))) {
      __builtin_trap();
    }
  }
  return 0;
}
