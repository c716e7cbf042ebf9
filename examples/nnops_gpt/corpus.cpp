// The grammar corpus and file corpora of nnops-gpt (see corpus.hpp).
#include "corpus.hpp"

#include <cmath>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>

namespace gpt {

namespace {

// A weighted choice among fixed strings; the weights sum to 1.
struct Choice {
  std::vector<std::string> words;
  std::vector<double> p;
};

Choice uniform(std::vector<std::string> words) {
  const double p = 1.0 / static_cast<double>(words.size());
  std::vector<double> ps(words.size(), p);
  return {std::move(words), std::move(ps)};
}

// The tables. Determiners tell the number of a noun phrase only partly ("the" serves both);
// the plural noun's "s" tells the rest, and the verb agrees with the subject's number.
const Choice kSingularDeterminer{{"the ", "a ", "one "}, {0.5, 0.3, 0.2}};
const Choice kPluralDeterminer{{"the ", "two ", "some "}, {0.5, 0.25, 0.25}};
const Choice kAdjective = uniform({"red ", "small ", "old ", "quiet ", "bright ", "green "});
const Choice kNoun = uniform({"cat", "dog", "bird", "frog", "horse", "robot", "sailor", "farmer"});
const Choice kVerb = uniform({"see", "like", "follow", "find", "help", "watch", "call", "paint"});
constexpr double kAdjectiveP = 0.4;
constexpr double kSubjectSingularP = 0.6, kObjectSingularP = 0.5;
constexpr double kNearP = 0.25, kBecauseP = 0.15;  // the optional clause; else none
constexpr double kSpaceEndP = 0.8;                 // ". " ends a sentence, else ".\n"

double entropy(const std::vector<double>& p) {
  double h = 0;
  for (double q : p) h -= q > 0 ? q * std::log(q) : 0.0;
  return h;
}

double mean_length(const Choice& c) {
  double l = 0;
  for (size_t i = 0; i < c.words.size(); ++i) l += c.p[i] * static_cast<double>(c.words[i].size());
  return l;
}

// Uniform double in [0, 1) from the top 53 bits (the same on every standard library).
double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
}

// Appends one choice's word; returns its log-probability.
double draw(const Choice& c, std::mt19937_64& rng, std::string& out) {
  double u = uniform01(rng);
  size_t i = 0;
  while (i + 1 < c.words.size() && u >= c.p[i]) u -= c.p[i++];
  out += c.words[i];
  return std::log(c.p[i]);
}

bool bernoulli(double p, std::mt19937_64& rng, double& logp) {
  const bool yes = uniform01(rng) < p;
  logp += std::log(yes ? p : 1 - p);
  return yes;
}

// [determiner] [adjective] noun[s]; returns the log-probability, sets singular.
double noun_phrase(double singular_p, std::mt19937_64& rng, std::string& out, bool& singular) {
  double logp = 0;
  singular = bernoulli(singular_p, rng, logp);
  logp += draw(singular ? kSingularDeterminer : kPluralDeterminer, rng, out);
  if (bernoulli(kAdjectiveP, rng, logp)) logp += draw(kAdjective, rng, out);
  logp += draw(kNoun, rng, out);
  if (!singular) out += 's';
  return logp;
}

// subject verb[s] object: the verb agrees with the subject.
double clause(std::mt19937_64& rng, std::string& out) {
  bool singular = false, object_singular = false;
  double logp = noun_phrase(kSubjectSingularP, rng, out, singular);
  out += ' ';
  logp += draw(kVerb, rng, out);
  if (singular) out += 's';
  out += ' ';
  return logp + noun_phrase(kObjectSingularP, rng, out, object_singular);
}

// clause [" near " object | " because " clause] ("." then " " or "\n").
double sentence(std::mt19937_64& rng, std::string& out) {
  double logp = clause(rng, out);
  const double u = uniform01(rng);
  bool unused = false;
  if (u < kNearP) {
    logp += std::log(kNearP);
    out += " near ";
    logp += noun_phrase(kObjectSingularP, rng, out, unused);
  } else if (u < kNearP + kBecauseP) {
    logp += std::log(kBecauseP);
    out += " because ";
    logp += clause(rng, out);
  } else {
    logp += std::log(1 - kNearP - kBecauseP);
  }
  out += bernoulli(kSpaceEndP, rng, logp) ? ". " : ".\n";
  return logp;
}

// Entropy (nats) and mean bytes of a noun phrase; the choices are independent given the number,
// and the string tells each of them (chain rule).
double noun_phrase_entropy(double singular_p) {
  return entropy({singular_p, 1 - singular_p}) + singular_p * entropy(kSingularDeterminer.p) +
         (1 - singular_p) * entropy(kPluralDeterminer.p) + entropy({kAdjectiveP, 1 - kAdjectiveP}) +
         kAdjectiveP * entropy(kAdjective.p) + entropy(kNoun.p);
}
double noun_phrase_bytes(double singular_p) {
  return singular_p * mean_length(kSingularDeterminer) +
         (1 - singular_p) * (mean_length(kPluralDeterminer) + 1) +
         kAdjectiveP * mean_length(kAdjective) + mean_length(kNoun);
}
double clause_entropy() {
  return noun_phrase_entropy(kSubjectSingularP) + entropy(kVerb.p) +
         noun_phrase_entropy(kObjectSingularP);
}
double clause_bytes() {
  return noun_phrase_bytes(kSubjectSingularP) + 1 + mean_length(kVerb) + kSubjectSingularP + 1 +
         noun_phrase_bytes(kObjectSingularP);
}

}  // namespace

double Grammar::entropy_per_sentence() {
  return clause_entropy() + entropy({kNearP, kBecauseP, 1 - kNearP - kBecauseP}) +
         kNearP * noun_phrase_entropy(kObjectSingularP) + kBecauseP * clause_entropy() +
         entropy({kSpaceEndP, 1 - kSpaceEndP});
}

double Grammar::mean_sentence_bytes() {
  return clause_bytes() + kNearP * (6 + noun_phrase_bytes(kObjectSingularP)) +
         kBecauseP * (9 + clause_bytes()) + 2;
}

std::vector<uint8_t> Grammar::generate(uint64_t seed, int64_t bytes) {
  std::mt19937_64 rng(seed);
  std::string text;
  text.reserve(static_cast<size_t>(bytes) + 128);
  while (static_cast<int64_t>(text.size()) < bytes) sentence(rng, text);
  return std::vector<uint8_t>(text.begin(), text.begin() + bytes);
}

double Grammar::sample_log_probability(uint64_t seed, int64_t sentences, int64_t& bytes) {
  std::mt19937_64 rng(seed);
  std::string text;
  double logp = 0;
  for (int64_t s = 0; s < sentences; ++s) logp += sentence(rng, text);
  bytes = static_cast<int64_t>(text.size());
  return logp;
}

Corpus load_corpus(const std::string& path, uint64_t seed, int64_t bytes, int64_t context) {
  Corpus c;
  std::vector<uint8_t> all;
  if (path.empty()) {
    all = Grammar::generate(seed, bytes);
    c.entropy_floor = Grammar::entropy_rate();
    c.source = "grammar";
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read --data file '" + path + "'");
    all.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    c.source = path;
  }
  const auto split = static_cast<int64_t>(all.size()) * 9 / 10;
  // Both parts must hold at least one window of context + 1 bytes (inputs and next bytes).
  if (split < context + 1 || static_cast<int64_t>(all.size()) - split < context + 1) {
    throw std::runtime_error(c.source + " has " + std::to_string(all.size()) +
                             " bytes; with --context " + std::to_string(context) +
                             " it needs at least " + std::to_string(10 * (context + 1)) +
                             " (90% train, 10% held out)");
  }
  c.train.assign(all.begin(), all.begin() + split);
  c.heldout.assign(all.begin() + split, all.end());
  return c;
}

}  // namespace gpt
