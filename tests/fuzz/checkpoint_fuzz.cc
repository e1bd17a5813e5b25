// Fuzzes the checkpoint reader end to end: a version directory (manifest,
// model.safetensors, dense.safetensors) built from the input, read, fully
// validated and turned into engine models by LoadCheckpoint, which must
// return an error or a model and never crash, leak or hang.
//
// Input: one mode byte, then up to three parts separated by "\n--8<--\n":
// the model file, the dense file and the manifest. Mode bit 0 set: the
// manifest part is written as is (fuzzing the manifest parser); clear: a
// correct manifest (sizes and SHA-256 of the two files) is written instead,
// so the fuzzer gets past the checksums into the safetensors header, the
// tensor table, the metadata and the model shapes.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "model_store/checkpoint.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void Write(const std::string& path, absl::string_view bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const std::string dir = sparse::fuzz::ScratchDir("checkpoint");
  const bool raw_manifest = (data[0] & 1) != 0;
  const std::vector<absl::string_view> parts = absl::StrSplit(
      absl::string_view(reinterpret_cast<const char*>(data) + 1, size - 1), "\n--8<--\n");
  const absl::string_view model = parts.size() > 0 ? parts[0] : "";
  const absl::string_view dense = parts.size() > 1 ? parts[1] : "";
  std::filesystem::remove(dir + "/" + sparse::kDenseFile);
  Write(dir + "/" + sparse::kModelFile, model);
  std::map<std::string, std::string> files = {{sparse::kModelFile, std::string(model)}};
  if (parts.size() > 1) {
    Write(dir + "/" + sparse::kDenseFile, dense);
    files[sparse::kDenseFile] = std::string(dense);
  }
  Write(dir + "/" + sparse::kManifestFile,
        raw_manifest ? (parts.size() > 2 ? parts[2] : "") : sparse::ManifestJson(files));
  absl::StatusOr<sparse::LoadedModel> loaded = sparse::LoadCheckpoint(dir);
  if (loaded.ok()) sparse::fuzz::PredictOnce(*loaded);
  return 0;
}
