// Validation of the hardware profile JSON; see profile_json.h.
#include "harness/runner/profile_json.h"

#include "harness/base/errors.h"

namespace tb::runner {

using nlohmann::json;

void validate_profile_json(const json& j, const std::string& where) {
  auto bad = [&](const std::string& field, const std::string& what) -> void {
    throw FormatError(where + ": " + field + ": " + what);
  };
  if (!j.is_object()) bad("(top level)", "must be a JSON object");
  for (const char* s : {"machine", "model"})
    if (!j.contains(s) || !j[s].is_object()) bad(s, "missing or not an object");
  const auto& m = j["machine"];
  for (const char* k : {"cpu", "isa", "onednn_version"})
    if (!m.contains(k) || !m[k].is_string()) bad(std::string("machine.") + k, "missing or not a string");
  if (!m.contains("threads") || !m["threads"].is_number_integer()) bad("machine.threads", "missing or not an integer");
  if (!m.contains("peak_gflop_per_s") || !m["peak_gflop_per_s"].is_object()) bad("machine.peak_gflop_per_s", "missing or not an object");
  for (const char* k : {"f32", "bf16"}) {
    const auto& p = m["peak_gflop_per_s"];
    if (!p.contains(k) || !(p[k].is_number() || p[k].is_null()))
      bad(std::string("machine.peak_gflop_per_s.") + k, "missing or not a number or null");
  }
  if (!j.contains("cases") || !j["cases"].is_array()) bad("cases", "missing or not an array");
  for (std::size_t i = 0; i < j["cases"].size(); ++i) {
    const auto& c = j["cases"][i];
    const std::string at = "cases[" + std::to_string(i) + "]";
    if (!c.is_object()) bad(at, "must be an object");
    for (const char* k : {"kind", "name", "precision"})
      if (!c.contains(k) || !c[k].is_string()) bad(at + "." + k, "missing or not a string");
    const auto kind = c["kind"].get<std::string>();
    if (kind != "op" && kind != "train" && kind != "infer") bad(at + ".kind", "'" + kind + "' is not op, train or infer");
    if (!c.contains("method") || !(c["method"].is_string() || c["method"].is_null())) bad(at + ".method", "missing or not a string or null");
    if (!c.contains("shape") || !c["shape"].is_object()) bad(at + ".shape", "missing or not an object");
    if (!c.contains("tokens_per_s") || !c["tokens_per_s"].is_number()) bad(at + ".tokens_per_s", "missing or not a number");
    for (const char* k : {"gflop_per_s", "peak_fraction"})
      if (!c.contains(k) || !(c[k].is_number() || c[k].is_null())) bad(at + "." + k, "missing or not a number or null");
  }
}

}  // namespace tb::runner
