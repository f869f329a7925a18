"""Offline metrics of a model's output against its references, as fmeval defines them.

Every metric scores one (output, references) pair in [0, 1], higher is better; several references
(the target split on a delimiter, `<OR>` by default) are each scored and the best one counts, as in
fmeval. `score_batch(names, outputs, references)` scores many pairs at once, one float array per
metric, NaN where a score is missing (no reference, or a metric undefined on that text).

Definitions (fmeval's, BEDROCK.md):
- N(t) normalization: lowercase, drop every ASCII punctuation character, drop the articles
  a/an/the, collapse whitespace (SQuAD/QuAC's protocol). fmeval splits words on spaces only,
  Quarry on any whitespace, as SQuAD does: they differ only on tabs/newlines next to an article.
- factual_knowledge: 1 if the lowercased reference is a substring of the lowercased output;
  factual_knowledge_quasi_exact: the same on N() of both.
- exact_match: strip(output) == strip(reference); quasi_exact_match: N(output) == N(reference).
- precision/recall/f1: over the SETS of words of N() (fmeval's, from nltk.metrics.scores);
  squad_f1: SQuAD's F1 over the MULTISETS of words of N().
- rouge1/rouge2/rougeL: rouge-score's F-measure with the Porter stemmer (what fmeval computes
  through HuggingFace evaluate).
- meteor: nltk's single_meteor_score with WordNet synonyms, on nltk's word tokens. WordNet is read
  from Debian's `wordnet-base` (WORDNET_DIR). fmeval tokenizes with nltk's trained English Punkt
  model, which must be downloaded; Quarry splits sentences with an untrained Punkt tokenizer, which
  differs only around abbreviations ("Mr. Smith" gives "Mr", "." instead of "Mr.").
- bleu: sacrebleu's sentence BLEU (exponential smoothing, effective order), divided by 100 so that
  it lies in [0, 1] like every other metric.
- classification_accuracy: 1 if the predicted label equals the reference label (both lowercased
  and stripped); the predicted label is the first word of the output that is a valid label, else
  "unknown". fmeval strips only whitespace from the words; Quarry also strips punctuation around a
  word, so that "Positive." is read as "positive". Balanced accuracy and per-class precision/recall
  are corpus-level (`classification_summary`).
- type_token_ratio: distinct words / words of the output (lowercased \\w+ words); mtld: McCarthy &
  Jarvis's MTLD (threshold 0.72, mean of the forward and backward passes), which unlike the ratio
  does not fall as texts get longer; missing when every word of the text is distinct (undefined).
- semantic_similarity: cosine of the output's and the reference's embedding vectors (the caller
  fetches the vectors from an embedding model; `cosine_similarity` computes the score).
"""
from __future__ import annotations

import io
import math
import os
import re
import string
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Literal, Sequence

import numpy as np

DEFAULT_DELIMITER = "<OR>"
UNKNOWN_LABEL = "unknown"
MTLD_THRESHOLD = 0.72
# Where Debian's wordnet-base installs WordNet 3.0 (apt-get install wordnet-base).
WORDNET_DIR = os.environ.get("QUARRY_WORDNET_DIR", "/usr/share/wordnet")

_ARTICLES = frozenset({"a", "an", "the"})
_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)
_WORD_RE = re.compile(r"\w+")


# --- text ----------------------------------------------------------------------------------------
def normalize(text: str) -> str:
    """N(t): lowercase, no punctuation, no articles, single spaces (SQuAD/QuAC, as fmeval)."""
    words = text.lower().translate(_DROP_PUNCTUATION).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def split_references(target: str | None, delimiter: str | None = DEFAULT_DELIMITER) -> list[str]:
    """The references in a target string: split on the delimiter (None: the whole string)."""
    if target is None:
        return []
    return target.split(delimiter) if delimiter else [target]


# --- one pair, one reference (fmeval's definitions) ------------------------------------------------
def exact_match(output: str, reference: str) -> float:
    return float(output.strip() == reference.strip())


def quasi_exact_match(output: str, reference: str) -> float:
    return float(normalize(output) == normalize(reference))


def exact_inclusion(output: str, reference: str) -> float:
    """factual_knowledge: the lowercased reference occurs in the lowercased output."""
    return float(reference.lower() in output.lower())


def quasi_exact_inclusion(output: str, reference: str) -> float:
    """factual_knowledge_quasi_exact: N(reference) occurs in N(output)."""
    return float(normalize(reference) in normalize(output))


def _set_overlap(output: str, reference: str) -> tuple[float, float]:
    out, ref = set(normalize(output).split()), set(normalize(reference).split())
    common = len(out & ref)
    # nltk's precision/recall are None on an empty set; fmeval turns None into 0.
    return (common / len(out) if out else 0.0), (common / len(ref) if ref else 0.0)


def word_precision(output: str, reference: str) -> float:
    """Share of the output's distinct normalized words found in the reference."""
    return _set_overlap(output, reference)[0]


def word_recall(output: str, reference: str) -> float:
    """Share of the reference's distinct normalized words found in the output."""
    return _set_overlap(output, reference)[1]


def word_f1(output: str, reference: str) -> float:
    """Harmonic mean of word_precision and word_recall (0 when either is 0), as fmeval."""
    p, r = _set_overlap(output, reference)
    return 0.0 if p == 0 or r == 0 else 2 * p * r / (p + r)


def squad_f1(output: str, reference: str) -> float:
    """SQuAD's F1: overlap of the normalized word multisets; two empty texts score 1."""
    out, ref = normalize(output).split(), normalize(reference).split()
    if not out or not ref:
        return float(out == ref)
    common = sum((Counter(out) & Counter(ref)).values())
    if common == 0:
        return 0.0
    p, r = common / len(out), common / len(ref)
    return 2 * p * r / (p + r)


def best_of(score: Callable[[str, str], float], output: str, references: Sequence[str]) -> float:
    """The best score over several references (NaN when there are none)."""
    return max((score(output, r) for r in references), default=math.nan)


# --- ROUGE (rouge-score) ---------------------------------------------------------------------------
class _CachedStemmer:
    """nltk's Porter stemmer with a cache: texts repeat words, and stemming dominates ROUGE's cost."""

    def __init__(self) -> None:
        from nltk.stem.porter import PorterStemmer

        self.stem = lru_cache(maxsize=500_000)(PorterStemmer().stem)


@lru_cache(maxsize=1)
def _stemmer() -> _CachedStemmer:
    return _CachedStemmer()


class _RougeTokenizer:
    """rouge-score's default tokenizer (lowercase, alphanumeric runs, Porter stems of words longer
    than 3 characters), with the stems cached: the same tokens as DefaultTokenizer(use_stemmer=True)."""

    def tokenize(self, text: str) -> list[str]:
        from rouge_score import tokenize

        return tokenize.tokenize(text, _stemmer())


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@lru_cache(maxsize=8)
def _rouge_scorer(types: tuple[str, ...]):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(types), tokenizer=_RougeTokenizer())


def rouge(output: str, reference: str, types: Sequence[str] = ROUGE_TYPES) -> dict[str, float]:
    """ROUGE F-measures of one pair (Porter stemmer), by type."""
    scores = _rouge_scorer(tuple(types)).score(reference, output)
    return {t: scores[t].fmeasure for t in types}


# --- METEOR (nltk + WordNet) -----------------------------------------------------------------------
# WordNet 3.0's lexicographer files, in the order of their numbers (the `lexnames` file that nltk
# reads, which Debian's wordnet-base does not ship). Fixed since WordNet 2.0.
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
    "adj.ppl"
).split()
_SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class WordNetUnavailable(RuntimeError):
    """METEOR's WordNet data is not installed."""


def wordnet_available(root: str = WORDNET_DIR) -> bool:
    """Whether WordNet's database files are where METEOR reads them."""
    return os.path.exists(os.path.join(root, "data.noun"))


@lru_cache(maxsize=2)
def _wordnet(root: str = WORDNET_DIR):
    """nltk's WordNet reader over a WordNet 3.0 database directory (Debian's wordnet-base)."""
    if not wordnet_available(root):
        raise WordNetUnavailable(f"METEOR needs WordNet 3.0 in {root}: install Debian's wordnet-base "
                                 "(apt-get install wordnet-base) or set QUARRY_WORDNET_DIR")
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    # nltk only opens files under its data path.
    if root not in nltk.data.path:
        nltk.data.path.append(root)

    class _Reader(WordNetCorpusReader):
        def open(self, file):
            if file == "lexnames":
                return io.StringIO("".join(f"{i:02d}\t{name}\t{_SYNTACTIC_CATEGORY[name.split('.')[0]]}\n"
                                           for i, name in enumerate(_LEXNAMES)))
            return super().open(file)

        def map_wn(self, version="wordnet"):
            # The map to another WordNet version only serves the multilingual (OMW) data: unused.
            return None

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not used
        reader = _Reader(root, None)
    # METEOR looks up the synsets of every unmatched word of every pair: cache them.
    reader.synsets = lru_cache(maxsize=500_000)(reader.synsets)
    return reader


@lru_cache(maxsize=1)
def _word_tokenizers():
    from nltk.tokenize.destructive import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def word_tokenize(text: str) -> list[str]:
    """nltk's word_tokenize without its downloaded Punkt model (untrained sentence splitter)."""
    sentences, words = _word_tokenizers()
    return [w for s in sentences.tokenize(text) for w in words.tokenize(s)]


def meteor(output: str, reference: str) -> float:
    """nltk's METEOR (alpha 0.9, beta 3, gamma 0.5) with exact, Porter-stem and WordNet matches."""
    from nltk.translate.meteor_score import single_meteor_score

    return float(single_meteor_score(word_tokenize(reference), word_tokenize(output),
                                     stemmer=_stemmer(), wordnet=_wordnet()))


# --- BLEU (sacrebleu) ------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _bleu():
    from sacrebleu.metrics import BLEU

    return BLEU(effective_order=True)


def bleu(output: str, reference: str) -> float:
    """sacrebleu's sentence BLEU of one pair, in [0, 1]."""
    return _bleu().sentence_score(output, [reference]).score / 100.0


# --- classification --------------------------------------------------------------------------------
def _label(text: str) -> str:
    return text.strip().lower()


def classify(output: str, labels: Iterable[str]) -> str:
    """The first word of the output that is a valid label (lowercased), else "unknown"."""
    valid = {_label(x) for x in labels}
    for word in output.split():
        word = word.strip().strip(string.punctuation).lower()
        if word in valid:
            return word
    return UNKNOWN_LABEL


@dataclass(frozen=True)
class ClassificationCounts:
    """Corpus-level classification scores computed from (true, predicted) labels."""

    accuracy: float | None
    balanced_accuracy: float | None
    # label -> (precision or None when never predicted, recall or None when absent, support)
    per_class: dict[str, tuple[float | None, float | None, int]]
    unknown: int


def classification_summary(y_true: Sequence[str], y_pred: Sequence[str]) -> ClassificationCounts:
    """Accuracy, balanced accuracy (mean recall over the labels present in y_true, as sklearn) and
    per-class precision/recall over the labels of y_true and y_pred ("unknown" is never a class)."""
    true = np.array([_label(t) for t in y_true], dtype=object)
    pred = np.array([_label(p) for p in y_pred], dtype=object)
    if len(true) == 0:
        return ClassificationCounts(None, None, {}, 0)
    labels = sorted((set(true.tolist()) | set(pred.tolist())) - {UNKNOWN_LABEL})
    per_class: dict[str, tuple[float | None, float | None, int]] = {}
    recalls = []
    for label in labels:
        is_true, is_pred = true == label, pred == label
        tp = int(np.sum(is_true & is_pred))
        support, predicted = int(is_true.sum()), int(is_pred.sum())
        recall = tp / support if support else None
        per_class[label] = (tp / predicted if predicted else None, recall, support)
        if recall is not None:
            recalls.append(recall)
    return ClassificationCounts(
        accuracy=float(np.mean(true == pred)),
        balanced_accuracy=float(np.mean(recalls)) if recalls else None,
        per_class=per_class,
        unknown=int(np.sum(pred == UNKNOWN_LABEL)),
    )


# --- vocabulary richness ---------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def type_token_ratio(output: str) -> float:
    """Distinct words / words; NaN for a text without words."""
    words = _words(output)
    return len(set(words)) / len(words) if words else math.nan


def _mtld_factors(words: Sequence[str], threshold: float) -> float:
    factors, types, count = 0.0, set(), 0
    for word in words:
        count += 1
        types.add(word)
        if len(types) / count <= threshold:
            factors, types, count = factors + 1, set(), 0
    if count:
        factors += (1 - len(types) / count) / (1 - threshold)
    return factors


def mtld(output: str, threshold: float = MTLD_THRESHOLD) -> float:
    """MTLD (McCarthy & Jarvis 2010): mean words per factor (a run whose TTR falls to the threshold,
    the remainder counted pro rata), mean of forward and backward passes; NaN when undefined."""
    words = _words(output)
    passes = [_mtld_factors(words, threshold), _mtld_factors(words[::-1], threshold)]
    values = [len(words) / f for f in passes if f > 0]
    return float(np.mean(values)) if len(values) == 2 else math.nan


# --- semantic similarity ---------------------------------------------------------------------------
def cosine_similarity(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float]) -> np.ndarray:
    """Row-wise cosine of two (n, d) arrays (or of two vectors); NaN where a vector is zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    dot = np.sum(a * b, axis=-1)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), np.nan)


def best_cosine(output: np.ndarray | Sequence[float], references: Sequence[np.ndarray | Sequence[float]]) -> float:
    """semantic_similarity of one record: the best cosine over its references' vectors."""
    if not len(references):
        return math.nan
    scores = cosine_similarity(np.asarray(references, dtype=np.float64), np.asarray(output, dtype=np.float64))
    return float(np.nanmax(scores)) if not np.all(np.isnan(scores)) else math.nan


# --- the catalogue ---------------------------------------------------------------------------------
Need = Literal["reference", "labels", "wordnet", "embeddings"]


@dataclass(frozen=True)
class Metric:
    """A metric the config may name."""

    name: str
    kind: Literal["binary", "continuous"]
    # What it needs besides the output: a reference, the valid labels, WordNet, embedding vectors.
    needs: frozenset[str]
    description: str
    # (output, reference) -> score; None where the metric is not computed pair by pair here.
    pair: Callable[[str, str], float] | None = None
    # output -> score, for metrics of the output alone.
    single: Callable[[str], float] | None = None
    higher_is_better: bool = True


_REF = frozenset({"reference"})
CATALOGUE: dict[str, Metric] = {m.name: m for m in [
    Metric("exact_match", "binary", _REF, "strip(output) == strip(reference)", pair=exact_match),
    Metric("quasi_exact_match", "binary", _REF, "N(output) == N(reference)", pair=quasi_exact_match),
    Metric("factual_knowledge", "binary", _REF, "lowercased reference contained in the lowercased output",
           pair=exact_inclusion),
    Metric("factual_knowledge_quasi_exact", "binary", _REF, "N(reference) contained in N(output)",
           pair=quasi_exact_inclusion),
    Metric("precision", "continuous", _REF, "share of the output's distinct N() words in the reference",
           pair=word_precision),
    Metric("recall", "continuous", _REF, "share of the reference's distinct N() words in the output",
           pair=word_recall),
    Metric("f1", "continuous", _REF, "F1 of precision and recall over N() word sets (fmeval)", pair=word_f1),
    Metric("squad_f1", "continuous", _REF, "F1 over N() word multisets (SQuAD)", pair=squad_f1),
    Metric("rouge1", "continuous", _REF, "ROUGE-1 F-measure, Porter stemmer (rouge-score)"),
    Metric("rouge2", "continuous", _REF, "ROUGE-2 F-measure, Porter stemmer (rouge-score)"),
    Metric("rougeL", "continuous", _REF, "ROUGE-L F-measure, Porter stemmer (rouge-score)"),
    Metric("meteor", "continuous", frozenset({"reference", "wordnet"}),
           "METEOR with stem and WordNet synonym matches (nltk)", pair=meteor),
    Metric("bleu", "continuous", _REF, "sentence BLEU / 100 (sacrebleu)", pair=bleu),
    Metric("classification_accuracy", "binary", frozenset({"reference", "labels"}),
           "first valid label in the output equals the reference label"),
    Metric("type_token_ratio", "continuous", frozenset(), "distinct words / words of the output",
           single=type_token_ratio),
    Metric("mtld", "continuous", frozenset(), "MTLD lexical diversity of the output (length-robust)",
           single=mtld),
    Metric("semantic_similarity", "continuous", frozenset({"reference", "embeddings"}),
           "cosine of output and reference embeddings (best reference)"),
]}

# fmeval's score names, accepted for ours.
ALIASES = {
    "exact_match_score": "exact_match",
    "quasi_exact_match_score": "quasi_exact_match",
    "f1_score": "f1",
    "precision_over_words": "precision",
    "recall_over_words": "recall",
    "classification_accuracy_score": "classification_accuracy",
    "rouge": "rouge2",  # fmeval's default ROUGE type
    "vocabulary_richness": "mtld",
}

PRESETS: dict[str, tuple[str, ...]] = {
    "qa": ("f1", "exact_match", "quasi_exact_match", "precision", "recall", "factual_knowledge",
           "factual_knowledge_quasi_exact"),
    "summarization": ("rougeL", "rouge1", "rouge2", "meteor", "bleu"),
    "classification": ("classification_accuracy",),
    "generation": ("meteor", "rougeL", "bleu", "type_token_ratio", "mtld"),
}
# The default primary metric of each preset: the first of its metrics.
PRESET_PRIMARY = {task: names[0] for task, names in PRESETS.items()}


class UnknownMetric(ValueError):
    """A metric name that is neither in the catalogue nor an alias."""


def catalogue_names() -> list[str]:
    """Every name a config may use: the catalogue's and the aliases."""
    return sorted(CATALOGUE) + sorted(ALIASES)


def resolve(name: str) -> Metric:
    """The catalogue's metric for a name or an fmeval alias (UnknownMetric otherwise)."""
    metric = CATALOGUE.get(ALIASES.get(name, name))
    if metric is None:
        raise UnknownMetric(f"unknown metric {name!r}; known: {', '.join(sorted(CATALOGUE))} "
                            f"(or fmeval's {', '.join(sorted(ALIASES))})")
    return metric


# --- batch scoring ---------------------------------------------------------------------------------
def score_batch(names: Sequence[str], outputs: Sequence[str], references: Sequence[Sequence[str]], *,
                labels: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Score n (output, references) pairs on each named metric: name -> float64 array of n, NaN
    where missing. `labels` are the valid labels (classification_accuracy); semantic_similarity is
    not computed here (see `cosine_similarity`)."""
    n = len(outputs)
    if len(references) != n:
        raise ValueError("outputs and references differ in length")
    metrics = [resolve(name) for name in names]
    result: dict[str, np.ndarray] = {}
    rouge_types = tuple(m.name for m in metrics if m.name in ROUGE_TYPES)
    if rouge_types:
        result.update(_rouge_batch(rouge_types, outputs, references))
    for m in metrics:
        if m.name in result:
            continue
        if m.pair is not None:
            result[m.name] = np.fromiter((best_of(m.pair, o, refs) for o, refs in zip(outputs, references)),
                                         dtype=np.float64, count=n)
        elif m.single is not None:
            result[m.name] = np.fromiter((m.single(o) for o in outputs), dtype=np.float64, count=n)
        elif m.name == "classification_accuracy":
            if labels is None:
                raise ValueError("classification_accuracy needs the valid labels")
            valid = list(labels)
            result[m.name] = np.fromiter(
                (max((float(classify(o, valid) == _label(r)) for r in refs), default=math.nan)
                 for o, refs in zip(outputs, references)), dtype=np.float64, count=n)
        elif m.name == "semantic_similarity":
            raise ValueError("semantic_similarity is computed from embeddings: use cosine_similarity")
    return {name: result[resolve(name).name] for name in names}


def _rouge_batch(types: tuple[str, ...], outputs: Sequence[str],
                 references: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    scorer = _rouge_scorer(types)
    out = {t: np.full(len(outputs), np.nan) for t in types}
    for i, (o, refs) in enumerate(zip(outputs, references)):
        for ref in refs:
            s = scorer.score(ref, o)
            for t in types:
                f = s[t].fmeasure
                if not f <= out[t][i]:  # NaN (first reference) or better
                    out[t][i] = f
    return out
