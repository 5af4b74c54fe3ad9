// Shared fixture of the method tests: a small separable classification task written as a
// user task (TSV + spec), a byte-level BPE trained on it, and a tiny random model of either
// family, so every training method can be exercised end to end in well under a second.
#pragma once

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "harness/core/model.h"
#include "harness/core/tokenizer.h"
#include "methods/method.h"
#include "tasks/registry.h"

namespace tb::testing {

struct MethodFixture {
  std::filesystem::path dir;
  std::unique_ptr<tasks::Registry> registry;
  std::shared_ptr<const tasks::Task> task;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<Model> model;
  methods::Meter meter;
  std::vector<tasks::Example> train, dev, test;

  // n examples; the label is carried by the last word ("good"/"bad" synonyms).
  explicit MethodFixture(Family family, int n = 200, uint64_t seed = 0) {
    dir = std::filesystem::temp_directory_path() / ("tb_method_fixture_" + std::to_string(::getpid()) + "_" +
                                                    std::to_string(reinterpret_cast<uintptr_t>(this)));
    std::filesystem::create_directories(dir);
    const std::vector<std::string> subj = {"the film", "this movie", "the plot", "the acting", "the story", "our trip",
                                           "the meal", "the book"};
    const std::vector<std::string> verb = {"was", "seemed", "felt", "is", "looked"};
    const std::vector<std::string> pos = {"great", "good", "wonderful", "excellent"};
    const std::vector<std::string> neg = {"awful", "bad", "terrible", "boring"};
    std::mt19937 g(1234);
    std::ofstream tsv(dir / "sep.tsv");
    tsv << "sentence\tlabel\n";
    std::vector<std::string> texts;
    for (int i = 0; i < n; ++i) {
      const int label = i % 2;
      // A unique id first, the sentiment word last (where last-token pooling reads it).
      // The draws are sequenced (the operands of one + chain are not: GCC and clang drew them in
      // different orders and so built different data); the order is the one GCC used.
      const std::string word = label ? pos[g() % pos.size()] : neg[g() % neg.size()];
      const std::string& v = verb[g() % verb.size()];
      const std::string& sb = subj[g() % subj.size()];
      const std::string s = std::to_string(i) + " " + sb + " " + v + " really " + word;
      tsv << s << "\t" << label << "\n";
      texts.push_back(s);
    }
    tsv.close();
    std::ofstream ini(dir / "sep.ini");
    ini << "name = sep\nversion = 1\ndescription = separable test task\noutput_type = classify\n\n[data]\n"
        << "train = sep.tsv:train\ndev = sep.tsv:dev\ntest = sep.tsv:test\nformat = tsv\ntext_field = sentence\n"
        << "label_field = label\nhash_split = 60/20/20\n\n[labels]\nnames = negative, positive\nvalues = 0, 1\n"
        << "verbalisers = bad, good\n\n[prompt]\ntemplate = {text}. It was\n\n[metrics]\nnames = accuracy\n";
    ini.close();
    registry = std::make_unique<tasks::Registry>(tasks::Registry::from_dir(dir));
    task = registry->load("sep");
    train = task->split("train");
    dev = task->split("dev");
    test = task->split("test");
    texts.push_back("It was good. It was bad.");
    tok = std::make_unique<Tokenizer>(Tokenizer::train(texts, 300, {"<|endoftext|>"}));
    ModelConfig c;
    c.family = family;
    c.model_type = family == Family::gpt2 ? "gpt2" : "llama";
    c.vocab_size = tok->vocab_size();
    c.hidden = 32;
    c.n_layer = 2;
    c.n_head = 4;
    c.n_kv_head = family == Family::gpt2 ? 4 : 2;
    c.head_dim = 8;
    c.intermediate = 64;
    c.max_positions = 64;
    c.qkv_bias = family == Family::gpt2;
    model = std::make_unique<Model>(c);
    model->init_random(seed, 0.1f);
  }
  ~MethodFixture() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  methods::RunContext context(const methods::MethodInfo& info, std::map<std::string, std::string> overrides,
                              uint64_t seed = 0) {
    std::map<std::string, std::string> values;
    for (const auto& o : info.options) values[o.name] = o.default_value;
    for (auto& [k, v] : overrides) values[k] = v;
    return methods::RunContext{*model, *tok, *task, seed, methods::Options(info.name, values), meter, 0,
                               dir / "cache", "test-model", train, dev};
  }
};

}  // namespace tb::testing
