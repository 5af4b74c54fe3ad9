// `softprompt` — soft prompt tuning: the virtual-token hook (see softprompt.h) and the
// method, which trains the prompt (plus the classification head, or with
// --softprompt.objective lm only the prompt, as Lester et al.) on the frozen model.
#include "methods/softprompt.h"

#include <algorithm>
#include <memory>
#include <numeric>
#include <random>
#include <string>

#include "harness/base/errors.h"
#include "methods/saved.h"
#include "methods/trainer.h"

namespace tb::methods {

const Param& token_embeddings(const Model& model) { return model.token_embedding(); }

SoftPromptHooks::SoftPromptHooks(int64_t P, int64_t C) : P_(P), C_(C) {
  TB_CHECK(P >= 0 && C > 0, "soft prompt of " << P << " tokens of width " << C);
  // PEFT's name for the saved prompt; a zero-length prompt owns no parameter at all.
  if (P_ > 0) store_.declare("prompt_embeddings", {P_, C_}, /*decay=*/false);
  store_.allocate();
  store_.set_all_trainable(true);
  store_.allocate_grads();
}

float* SoftPromptHooks::prompt() { return P_ > 0 ? store_.at(0).data : nullptr; }

void SoftPromptHooks::init_from_vocab(const Model& model, uint64_t seed) {
  const Param& wte = token_embeddings(model);
  const int64_t V = wte.shape[0];
  TB_CHECK(wte.shape[1] == C_, "soft prompt width " << C_ << " differs from the model's " << wte.shape[1]);
  std::mt19937_64 gen(seed);
  std::vector<int32_t> ids(static_cast<size_t>(V));
  std::iota(ids.begin(), ids.end(), 0);
  // A partial Fisher–Yates shuffle gives distinct ids; beyond V rows the draw restarts.
  for (int64_t p = 0; p < P_; ++p) {
    const int64_t i = p % V;
    const int64_t j = i + static_cast<int64_t>(gen() % static_cast<uint64_t>(V - i));
    std::swap(ids[i], ids[j]);
    std::copy_n(wte.data + static_cast<int64_t>(ids[i]) * C_, C_, prompt() + p * C_);
  }
}

void SoftPromptHooks::init_from_tokens(const Model& model, const std::vector<int32_t>& ids) {
  const Param& wte = token_embeddings(model);
  const int64_t V = wte.shape[0];
  TB_CHECK(wte.shape[1] == C_, "soft prompt width " << C_ << " differs from the model's " << wte.shape[1]);
  if (ids.empty()) throw InputError("soft prompt: the initialisation text encodes to no tokens");
  for (int32_t id : ids)
    if (id < 0 || id >= V)
      throw InputError("soft prompt: initialisation token id " + std::to_string(id) +
                       " is outside the model's vocabulary of " + std::to_string(V));
  for (int64_t p = 0; p < P_; ++p)
    std::copy_n(wte.data + static_cast<int64_t>(ids[p % ids.size()]) * C_, C_, prompt() + p * C_);
}

int SoftPromptHooks::lowest_trainable_layer(int num_layers) const {
  return P_ > 0 && store_.at(0).trainable ? -1 : num_layers;
}

void SoftPromptHooks::virtual_tokens_forward(float* out, int64_t C) {
  TB_CHECK(C == C_, "soft prompt width " << C_ << " asked for width " << C);
  std::copy_n(store_.at(0).data, P_ * C_, out);
}

void SoftPromptHooks::virtual_tokens_backward(const float* dout, int64_t B, int64_t C) {
  TB_CHECK(C == C_, "soft prompt width " << C_ << " asked for width " << C);
  float* g = store_.at(0).grad;
  if (!g) return;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < P_ * C_; ++i) g[i] += dout[b * P_ * C_ + i];
}

namespace {

class SoftPromptMethod final : public HookedMethod<SoftPromptHooks> {
 public:
  void prepare(RunContext& ctx) override {
    const auto cfg = TrainConfig::from(ctx.options);
    const auto& mc = ctx.model.config();
    const int64_t P = ctx.options.integer("tokens");
    check_virtual_positions(P, mc, "--softprompt.tokens");
    ctx.model.params().set_all_trainable(false);
    ctx.model.params().allocate_grads();
    hooks_ = std::make_unique<SoftPromptHooks>(P, mc.hidden);
    const std::string init = ctx.options.str("init");
    if (init == "vocab") {
      hooks_->init_from_vocab(ctx.model, ctx.seed ^ 0x50f7ull);
    } else if (init == "text") {
      const std::string text = ctx.options.str("init-text");
      const auto ids = ctx.tokenizer.encode(text, SpecialTokens::as_text);
      if (ids.empty()) throw InputError("--softprompt.init-text encodes to no tokens");
      hooks_->init_from_tokens(ctx.model, ids);
      ctx.meter.details["init_text_tokens"] = ids.size();
    } else {
      throw InputError("--softprompt.init must be vocab or text, got '" + init + "'");
    }
    train(ctx, cfg);
    ctx.meter.details["virtual_tokens"] = P;
    ctx.meter.details["init"] = init;
  }

  // PEFT form: prompt tuning's prompt_embeddings (P, C).
  bool export_peft(const std::filesystem::path& dir) const override {
    PeftAdapter a;
    a.type = PeftType::prompt_tuning;
    a.num_virtual_tokens = hooks_->tokens();
    const Param& prompt = hooks_->store().at(0);
    a.embeddings.assign(prompt.data, prompt.data + prompt.numel());
    write_peft_adapter(dir, config_, a, "");
    if (trainer_->head()) write_head(dir, trainer_->head()->store());
    return true;
  }

};

}  // namespace

MethodInfo softprompt_method_info() {
  // Prompt tuning needs a far larger learning rate than finetuning (PEFT's examples use
  // 1e-2 to 3e-2): the prompt rows start at the scale of token embeddings and must move
  // by about as much.
  auto opts = training_option_specs(TrainDefaults{1e-2, 4, 16, 0.0, "head"});
  for (auto& o : opts)
    if (o.name == "lr") o.help += "; prompt tuning wants far more than finetuning (PEFT's examples: 1e-2 to 3e-2)";
  opts.insert(opts.begin(),
              {{"tokens", "16", "number P of virtual tokens prepended to every input (P x C trainable values)"},
               {"init", "vocab", "initialisation of the prompt: vocab (embeddings of P randomly drawn tokens, seeded) | "
                                 "text (embeddings of --softprompt.init-text, repeated or truncated to P)"},
               {"init-text", "Classify the following text:", "text whose token embeddings initialise the prompt with --softprompt.init text"}});
  return {"softprompt",
          "soft prompt tuning: P trainable virtual-token embeddings prepended to the input of the frozen model",
          opts,
          [] { return std::make_unique<SoftPromptMethod>(); },
          {tasks::OutputType::classify, tasks::OutputType::multiple_choice},
          {},
          true};
}

}  // namespace tb::methods
