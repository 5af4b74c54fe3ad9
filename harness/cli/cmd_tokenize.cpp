// `tunebench tokenize --model DIR --text "..." [--json] [--tokens] [--special-as-text]`:
// encodes a text with the tokenizer of a model directory (tokenizer.json, vocab.json +
// merges.txt, or encoder.json + vocab.bpe; no weights needed) and prints the ids, so that
// tokenisation can be compared with other tools id for id.
#include <boost/program_options.hpp>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "harness/cli/commands.h"
#include "harness/base/errors.h"
#include "harness/core/tokenizer.h"

namespace tb::cli {

namespace po = boost::program_options;

int cmd_tokenize(const Args& args) {
  po::options_description opts("options");
  // clang-format off
  opts.add_options()
      ("help,h", "print this help")
      ("model", po::value<std::string>(), "model directory holding the tokenizer files")
      ("text", po::value<std::string>(), "text to encode (bytes are taken as given)")
      ("json", "print {\"ids\": [...]} (and \"tokens\" with --tokens)")
      ("tokens", "also print each token in vocabulary form")
      ("special-as-text", "encode special tokens such as <|endoftext|> as ordinary text");
  // clang-format on
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: tunebench tokenize --model DIR --text \"...\" [--json] [--tokens]\n\n"
              << "Encode TEXT with the byte-level BPE tokenizer in DIR and print the ids,\n"
              << "space-separated (with --tokens: one \"id<TAB>token\" line each).\n\n"
              << opts;
    return 0;
  }
  po::notify(vm);
  if (!vm.count("model")) throw InputError("missing --model DIR");
  if (!vm.count("text")) throw InputError("missing --text");

  const Tokenizer tok = Tokenizer::from_dir(vm["model"].as<std::string>());
  const SpecialTokens special =
      vm.count("special-as-text") ? SpecialTokens::as_text : SpecialTokens::parse;
  const std::vector<int32_t> ids = tok.encode(vm["text"].as<std::string>(), special);
  const bool with_tokens = vm.count("tokens") > 0;

  if (vm.count("json")) {
    nlohmann::json out;
    out["ids"] = ids;
    if (with_tokens) {
      out["tokens"] = nlohmann::json::array();
      // Token strings may hold invalid UTF-8 only for added tokens; vocabulary-form
      // tokens are always valid, so replace rather than fail on the rare bad one.
      for (int32_t id : ids) out["tokens"].push_back(tok.token_of(id));
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else if (with_tokens) {
    for (int32_t id : ids) std::cout << id << "\t" << tok.token_of(id) << "\n";
  } else {
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
    std::cout << "\n";
  }
  return 0;
}

}  // namespace tb::cli
