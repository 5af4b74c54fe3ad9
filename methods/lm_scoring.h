// Language-model queries shared by the methods that change no weights (icl, prompt, index):
// prompt encoding as the model saw text in pretraining, answer candidates (verbalisers or
// choices), candidate log-likelihood scoring, prompt assembly with a stated truncation
// policy, pooled embeddings for retrieval, and the cost accounting of all of it.
//
// Truncation policy (assemble_prompt): blocks (demonstrations, retrieved chunks) are ordered
// farthest from the query first; while BOS + blocks + query + the longest answer exceed the
// context window, the first (farthest) block is dropped; when no block is left and the query
// alone is still too long, the query's text is left-truncated (its rightmost tokens kept,
// the template around it kept whole); only when the template itself does not fit are the
// rightmost tokens of the whole prompt kept.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "harness/core/model.h"
#include "harness/core/tokenizer.h"
#include "methods/method.h"
#include "tasks/task.h"

namespace tb::methods {

// How answers are spoken. classify: one verbaliser per label; multiple_choice/retrieval:
// the choice text, or its letter ("A", "B", ...) when `letters`.
struct AnswerSet {
  std::string name;                      // for records: "verbalisers", "good/bad", "letters"...
  std::vector<std::string> verbalisers;  // classify
  bool letters = false;                  // multiple_choice / retrieval
};

// The task's own answers: its verbalisers (classify) or the choice texts.
AnswerSet task_answers(const tasks::Task& task);

// The candidate continuations of an example, each with a leading space (the prompt ends
// with a cue such as "Sentiment:").
std::vector<std::string> answer_texts(const tasks::Example& ex, const AnswerSet& answers);

// The continuation of a demonstration: its gold answer under `answers`.
std::string gold_answer_text(const tasks::Example& ex, const AnswerSet& answers);

// Token ids of a prompt: BOS (when the model config has one — pretraining puts a separator
// before every document) followed by encode(text). The one BOS rule of every LM-scored or
// LM-trained prompt: icl, prompt, index, rlhf and the trainer's lm objective alike.
std::vector<int32_t> encode_prompt(const Model& model, const Tokenizer& tok, std::string_view text);
// encode_prompt cut to at most max_len tokens: BOS stays, the text's last tokens are kept.
std::vector<int32_t> encode_prompt_capped(const Model& model, const Tokenizer& tok, std::string_view text,
                                          int64_t max_len);
// Drops `n` tokens from the front of an encode_prompt sequence, after its BOS (if any).
void drop_prompt_front(const Model& model, std::vector<int32_t>& ids, int64_t n);

// A query prompt split around its text, so truncation can shorten the text and keep the
// template. A template without exactly one {text} puts the whole prompt in `prefix`.
struct PromptParts {
  std::string prefix, text, suffix;
  std::string whole() const { return prefix + text + suffix; }
};
PromptParts split_prompt(const tasks::Task& task, const tasks::Example& ex, std::string_view tmpl);

struct Assembled {
  std::vector<int32_t> tokens;
  int64_t blocks_kept = 0;
  int64_t blocks_dropped = 0;
  bool text_truncated = false;  // the query text (or, failing that, the template) was cut
};

// Joins blocks (farthest from the query first), each followed by `sep`, then the query,
// under the truncation policy above, leaving room for `reserve` answer tokens.
Assembled assemble_prompt(const Model& model, const Tokenizer& tok,
                          const std::vector<std::string>& blocks, const PromptParts& query,
                          std::string_view sep, int64_t reserve);

// Assembled prompts and encoded answers of a set of examples, ready for score_candidates,
// with the truncation counts of the policy above.
struct PromptSet {
  std::vector<std::vector<int32_t>> contexts;
  std::vector<std::vector<std::vector<int32_t>>> candidates;
  int64_t truncated = 0;        // prompts shortened in any way
  int64_t blocks_dropped = 0;
  int64_t blocks_kept = 0;
  int64_t texts_cut = 0;        // prompts whose query text was left-truncated
  // Adds ex rendered with `tmpl` after `blocks` (farthest first, each followed by "\n\n"),
  // answers under `answers`; returns the assembly (which blocks survived).
  Assembled add(const Model& model, const Tokenizer& tok, const tasks::Task& task, const tasks::Example& ex,
                std::string_view tmpl, const AnswerSet& answers, const std::vector<std::string>& blocks = {});
  nlohmann::json counts() const;  // the counts above, for meter.details
};

// Running cost of the model queries of one phase.
struct LmCost {
  int64_t tokens = 0;               // tokens run through the model
  double flops = 0.0;               // matmul FLOPs the model executed (Model::flop_count)
  int64_t kv_bytes = 0;             // largest K/V footprint of one batch (L·B·T·2·NKV·hs·4)
  int64_t activation_bytes = 0;     // largest activation footprint of one forward
  int64_t weight_bytes = 0;         // the model's parameters (fp32)
  int64_t truncated = 0;            // requests tb::score had to left-truncate
  void add_forward(const Model& model, const std::vector<int64_t>& lengths, int64_t T);
  // Adds tokens/flops to the meter's train (prepare) or eval side and raises its memory.
  void charge(Meter& meter, bool prepare) const;
};

// Log-likelihood (sum of token log-probs) of every candidate after its context:
// result[i][c] for contexts[i] and candidates[i][c]. The first token of every candidate
// comes from one batched forward over the contexts (so K single-token verbalisers cost one
// forward, not K); the rest of multi-token candidates from tb::score with the first token
// appended to the context. Contexts + candidates must fit the context window.
std::vector<std::vector<double>> score_candidates(
    Model& model, const std::vector<std::vector<int32_t>>& contexts,
    const std::vector<std::vector<std::vector<int32_t>>>& candidates, int64_t batch, LmCost& cost);

// Index of the largest value (ties: the lowest index); -1 for an empty vector.
int argmax(const std::vector<double>& v);
// log-softmax of candidate log-likelihoods (the distribution over candidates).
std::vector<double> log_normalise(const std::vector<double>& v);

// Pooled hidden states of token sequences, L2-normalised: (N,C); `layer` as in
// Model::hidden_state (0 = token embeddings, n_layer = after the final norm; -1 = n_layer).
// Sequences are batched by length; an empty sequence is an InputError naming its index.
std::vector<float> embed_sequences(Model& model, const std::vector<std::vector<int32_t>>& seqs,
                                   Pool pool, int64_t batch, LmCost& cost, int layer = -1);
// The same for texts: encode(text) capped at max_tokens (the first ones kept; at least one
// token: an empty text embeds the BOS/EOS token).
std::vector<float> embed_texts(Model& model, const Tokenizer& tok, const std::vector<std::string>& texts,
                               Pool pool, int64_t max_tokens, int64_t batch, LmCost& cost, int layer = -1);

// "mean" | "last"; InputError naming `option` otherwise.
Pool parse_pool(const std::string& s, const std::string& option);

}  // namespace tb::methods
