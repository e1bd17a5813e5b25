#include "server/model_repository.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace sparse {

namespace fs = std::filesystem;

absl::StatusOr<std::unique_ptr<ModelRepository>> ModelRepository::Load(
    const std::string& root, std::vector<std::string>* errors) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    return absl::NotFoundError(absl::StrCat("model repository ", root, " is not a directory"));
  }
  auto repo = std::unique_ptr<ModelRepository>(new ModelRepository());
  auto report = [errors](std::string line) {
    if (errors != nullptr) errors->push_back(std::move(line));
  };
  // Iterators advance with error codes (never throwing), and each
  // directory has its own: an unreadable model is reported and skipped
  // without hiding the others.
  fs::directory_iterator model_it(root, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", root, ": ", ec.message()));
  for (; model_it != fs::directory_iterator(); model_it.increment(ec)) {
    if (ec) return absl::InternalError(absl::StrCat("cannot list ", root, ": ", ec.message()));
    const fs::directory_entry& model_dir = *model_it;
    const std::string name = model_dir.path().filename().string();
    std::error_code model_ec;
    if (name.empty() || name[0] == '.' || !model_dir.is_directory(model_ec)) continue;
    Versions versions;
    fs::directory_iterator version_it(model_dir.path(), model_ec);
    if (model_ec) report(absl::StrCat(name, ": cannot list: ", model_ec.message()));
    for (; !model_ec && version_it != fs::directory_iterator(); version_it.increment(model_ec)) {
      const fs::directory_entry& version_dir = *version_it;
      const std::string entry = version_dir.path().filename().string();
      int64_t version = 0;
      std::error_code entry_ec;
      if (!absl::SimpleAtoi(entry, &version) || version < 1 || !version_dir.is_directory(entry_ec)) {
        continue;  // not a version: temp dirs, config.pbtxt, stray files
      }
      absl::StatusOr<LoadedModel> loaded = LoadCheckpoint(version_dir.path().string());
      if (!loaded.ok()) {
        report(absl::StrCat(name, " version ", version, ": ", loaded.status().message()));
        continue;
      }
      auto servable = std::make_shared<Servable>();
      servable->model = name;
      servable->version = version;
      servable->loaded = *std::move(loaded);
      versions.emplace(version, std::move(servable));
    }
    if (model_ec) report(absl::StrCat(name, ": listing stopped: ", model_ec.message()));
    if (!versions.empty()) repo->models_.emplace(name, std::move(versions));
  }
  return repo;
}

absl::StatusOr<std::shared_ptr<const Servable>> ModelRepository::Find(absl::string_view model,
                                                                      int64_t version) const {
  auto it = models_.find(std::string(model));
  if (it == models_.end()) {
    std::vector<std::string> names;
    for (const auto& [name, unused] : models_) names.push_back(name);
    return absl::NotFoundError(absl::StrCat("model '", model, "' is not loaded (loaded: ",
                                            names.empty() ? "none" : absl::StrJoin(names, ", "),
                                            ")"));
  }
  const Versions& versions = it->second;
  if (version == 0) return versions.rbegin()->second;
  auto v = versions.find(version);
  if (v == versions.end()) {
    std::vector<int64_t> loaded;
    for (const auto& [number, unused] : versions) loaded.push_back(number);
    return absl::NotFoundError(absl::StrCat("model '", model, "' has no version ", version,
                                            " (loaded: ", absl::StrJoin(loaded, ", "), ")"));
  }
  return v->second;
}

}  // namespace sparse
