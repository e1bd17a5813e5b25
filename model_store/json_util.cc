#include "model_store/json_util.h"

#include "absl/strings/str_cat.h"

namespace sparse {

using Json = nlohmann::json;

absl::StatusOr<Json> ParseJsonBounded(absl::string_view text, int max_depth) {
  bool too_deep = false;
  // The callback sees each container's depth as it opens (0 for the root);
  // returning false discards it, so a too-deep value is never built and the
  // parse goes on (iteratively) only to find where the text ends.
  const Json::parser_callback_t bound = [&too_deep, max_depth](int depth,
                                                               Json::parse_event_t event,
                                                               Json& /*parsed*/) {
    if ((event == Json::parse_event_t::object_start ||
         event == Json::parse_event_t::array_start) &&
        depth >= max_depth) {
      too_deep = true;
      return false;
    }
    return true;
  };
  Json parsed = Json::parse(text.begin(), text.end(), bound, /*allow_exceptions=*/false);
  if (too_deep) {
    return absl::InvalidArgumentError(
        absl::StrCat("nests arrays or objects deeper than ", max_depth, " levels"));
  }
  if (parsed.is_discarded()) return absl::InvalidArgumentError("is not valid JSON");
  return parsed;
}

std::string DescribeJson(const Json& value) {
  if (value.is_number_integer() || value.is_number_unsigned() || value.is_number_float() ||
      value.is_boolean() || value.is_null()) {
    return absl::StrCat(value.type_name(), " ", value.dump());  // one scalar: never deep
  }
  if (value.is_string()) {
    const std::string& s = value.get_ref<const std::string&>();
    constexpr size_t kShown = 32;
    return absl::StrCat("string of ", s.size(), " bytes",
                        s.size() <= kShown ? absl::StrCat(" '", s, "'") : "");
  }
  return absl::StrCat(value.type_name(), " of ", value.size(), " elements");
}

}  // namespace sparse
