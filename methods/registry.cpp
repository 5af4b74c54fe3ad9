// The method registry: every method file defines `MethodInfo <name>_method_info()`, declared
// and listed here in the order of the README's method table, with the reference rows last.
#include "methods/method.h"

namespace tb::methods {

MethodInfo feature_method_info();
MethodInfo head_method_info();
MethodInfo full_method_info();
MethodInfo icl_method_info();
MethodInfo prompt_method_info();
MethodInfo index_method_info();
MethodInfo softprompt_method_info();
MethodInfo prefix_method_info();
MethodInfo adapter_method_info();
MethodInfo lora_method_info();
MethodInfo rlhf_method_info();
MethodInfo majority_method_info();
MethodInfo lexicon_method_info();

const std::vector<MethodInfo>& registry() {
  static const std::vector<MethodInfo> list = {
      feature_method_info(),
      head_method_info(),
      full_method_info(),
      icl_method_info(),
      prompt_method_info(),
      index_method_info(),
      softprompt_method_info(),
      prefix_method_info(),
      adapter_method_info(),
      lora_method_info(),
      rlhf_method_info(),
      majority_method_info(),
      lexicon_method_info(),
  };
  return list;
}

}  // namespace tb::methods
