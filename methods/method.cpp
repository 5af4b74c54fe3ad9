// Typed access to a method's options (values arrive as text from flags or a suite file) and
// lookup in the method registry; see method.h.
#include "methods/method.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "harness/base/errors.h"

namespace tb::methods {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    const auto comma = s.find(',', start);
    const auto item = trim(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

bool parse_int(const std::string& text, int64_t& out) {
  const auto t = trim(text);
  if (t.empty()) return false;
  const char* first = t.data() + (t[0] == '+' ? 1 : 0);
  const auto [end, ec] = std::from_chars(first, t.data() + t.size(), out);
  return ec == std::errc() && end == t.data() + t.size();
}

}  // namespace

const std::string& Options::raw(const std::string& name) const {
  const auto it = values_.find(name);
  if (it == values_.end())
    throw InputError("option --" + method_ + "." + name + " is not set (it has no default)");
  return it->second;
}

std::string Options::str(const std::string& name) const { return raw(name); }

int64_t Options::integer(const std::string& name) const {
  int64_t v = 0;
  if (!parse_int(raw(name), v))
    throw InputError("option --" + method_ + "." + name + ": '" + raw(name) + "' is not an integer");
  return v;
}

double Options::number(const std::string& name) const {
  const auto t = trim(raw(name));
  char* end = nullptr;
  const double v = t.empty() ? NAN : std::strtod(t.c_str(), &end);
  if (t.empty() || end != t.c_str() + t.size() || !std::isfinite(v))
    throw InputError("option --" + method_ + "." + name + ": '" + raw(name) + "' is not a finite number");
  return v;
}

bool Options::flag(const std::string& name) const {
  const auto t = trim(raw(name));
  if (t == "true" || t == "1" || t == "yes" || t == "on") return true;
  if (t == "false" || t == "0" || t == "no" || t == "off") return false;
  throw InputError("option --" + method_ + "." + name + ": '" + raw(name) +
                   "' is not a boolean (true/false, 1/0, yes/no, on/off)");
}

std::vector<int64_t> Options::int_list(const std::string& name) const {
  std::vector<int64_t> out;
  for (const auto& item : split_commas(raw(name))) {
    int64_t v = 0;
    if (!parse_int(item, v))
      throw InputError("option --" + method_ + "." + name + ": '" + item + "' in '" + raw(name) +
                       "' is not an integer");
    out.push_back(v);
  }
  return out;
}

std::vector<std::string> Options::str_list(const std::string& name) const { return split_commas(raw(name)); }

const MethodInfo& find(const std::string& name) {
  for (const auto& m : registry())
    if (m.name == name) return m;
  std::string known;
  for (const auto& m : registry()) known += (known.empty() ? "" : ", ") + m.name;
  throw InputError("unknown method '" + name + "' (known: " + known + ")");
}

void meter_training(Meter& meter, TrainLoop& loop, const std::string& label) {
  loop.on_unit = [&meter](const UnitCost& u) { meter.phase("train").add_unit(u); };
  if (meter.progress)
    loop.progress = [&meter, label](int64_t step, int64_t total, double loss) { meter.progress(label, step, total, loss); };
}

void record_training(Meter& meter, const TrainLoop& loop) {
  meter.steps += loop.steps();
  meter.loss_curve.insert(meter.loss_curve.end(), loop.loss_curve().begin(), loop.loss_curve().end());
  if (loop.diverged()) {
    meter.status = "diverged";
    meter.status_message = loop.message();
  }
}

}  // namespace tb::methods
