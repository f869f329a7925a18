"""Golden values of every metric, on examples checked by hand (the arithmetic is in the comments)
and fmeval's published ones."""
import math

import numpy as np
import pytest

from shared.evaluation import metrics as m

# BEDROCK.md, verified with fmeval: output "The answer is Paris, France", target "Paris".
FMEVAL_OUTPUT, FMEVAL_TARGET = "The answer is Paris, France", "Paris"


def test_fmevals_published_example_scores_exact_0_quasi_exact_0_precision_quarter_recall_1_f1_0_4():
    assert m.exact_match(FMEVAL_OUTPUT, FMEVAL_TARGET) == 0.0
    assert m.quasi_exact_match(FMEVAL_OUTPUT, FMEVAL_TARGET) == 0.0
    assert m.word_precision(FMEVAL_OUTPUT, FMEVAL_TARGET) == 0.25  # {answer, is, paris, france}: 1 of 4
    assert m.word_recall(FMEVAL_OUTPUT, FMEVAL_TARGET) == 1.0
    assert m.word_f1(FMEVAL_OUTPUT, FMEVAL_TARGET) == pytest.approx(0.4)


def test_factual_knowledge_finds_the_lowercased_reference_inside_the_output():
    assert m.exact_inclusion(FMEVAL_OUTPUT, "paris") == 1.0
    assert m.exact_inclusion("Germany, and is also its most populous city", "Germany") == 1.0
    assert m.exact_inclusion("The U.K.", "UK") == 0.0
    # N() drops the dots: "the uk" contains "uk".
    assert m.quasi_exact_inclusion("The U.K.", "UK") == 1.0


def test_normalization_lowercases_drops_punctuation_and_articles_and_collapses_whitespace():
    assert m.normalize("  The  Answer:\tis AN apple, a PEAR!\n") == "answer is apple pear"
    assert m.normalize("theater anatomy") == "theater anatomy"  # articles only as whole words


def test_exact_match_strips_whitespace_and_quasi_exact_match_normalizes():
    assert m.exact_match("  Paris\n", "Paris") == 1.0
    assert m.exact_match("paris", "Paris") == 0.0
    assert m.quasi_exact_match("The Paris!", "paris") == 1.0


def test_fmeval_f1_counts_word_sets_while_squad_f1_counts_repeated_words():
    # N(): [cat, cat, sat] against [cat, sat, sat]. Sets are equal: 1. Multisets share cat+sat = 2 of 3
    # each way: P = R = 2/3, F1 = 2/3.
    assert m.word_f1("the cat the cat sat", "cat sat sat") == 1.0
    assert m.squad_f1("the cat the cat sat", "cat sat sat") == pytest.approx(2 / 3)
    assert m.squad_f1("The", "a") == 1.0  # both empty after N(): SQuAD scores equality
    assert m.squad_f1("", "Paris") == 0.0
    assert m.word_f1("", "Paris") == 0.0  # fmeval turns nltk's None into 0


def test_the_best_reference_counts_when_a_target_holds_several():
    refs = m.split_references("London<OR>The United Kingdom<OR>UK")
    assert refs == ["London", "The United Kingdom", "UK"]
    assert m.best_of(m.quasi_exact_match, "the uk", refs) == 1.0
    assert m.best_of(m.word_f1, "united kingdom of great britain", refs) == pytest.approx(2 * 1 * 0.4 / 1.4)
    assert math.isnan(m.best_of(m.exact_match, "x", []))
    assert m.split_references("a|b", delimiter="|") == ["a", "b"]
    assert m.split_references("a<OR>b", delimiter=None) == ["a<OR>b"]


def test_rouge_is_the_stemmed_f_measure():
    scores = m.rouge("The cat sat on the mat.", "The cat is sitting on the mat")
    # Tokens: the cat sat on the mat / the cat is sit on the mat ("sitting" stems to "sit").
    # ROUGE-1: 5 shared of 6 and 7: F = 2(5/6)(5/7)/(5/6 + 5/7) = 10/13.
    assert scores["rouge1"] == pytest.approx(10 / 13)
    # ROUGE-2: the-cat, on-the, the-mat shared, of 5 and 6 bigrams: F = 2(3/5)(3/6)/(3/5 + 3/6) = 6/11.
    assert scores["rouge2"] == pytest.approx(6 / 11)
    # ROUGE-L: the longest common subsequence "the cat on the mat" has 5 tokens: as ROUGE-1.
    assert scores["rougeL"] == pytest.approx(10 / 13)


def test_rouge_matches_rouge_score_own_default_tokenizer():
    from rouge_score import rouge_scorer

    reference = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    pairs = [("Running dogs were running quickly.", "A dog runs quick"),
             ("#Person1# asks about the generously priced flights", "Person1 wants flight prices")]
    for output, target in pairs:
        expected = reference.score(target, output)
        assert m.rouge(output, target) == {t: pytest.approx(expected[t].fmeasure) for t in m.ROUGE_TYPES}


@pytest.mark.skipif(not m.wordnet_available(), reason="WordNet (Debian's wordnet-base) is not installed")
def test_meteor_matches_nltks_documented_example():
    hypothesis = "It is a guide to action which ensures that the military always obeys the commands of the party"
    reference = "It is a guide to action that ensures that the military will forever heed Party commands"
    assert round(m.meteor(hypothesis, reference), 4) == 0.6944


@pytest.mark.skipif(not m.wordnet_available(), reason="WordNet (Debian's wordnet-base) is not installed")
def test_meteor_matches_wordnet_synonyms():
    # the/fox match exactly, quick~fast through WordNet: P = R = 1, one chunk of 3 matches:
    # penalty 0.5 (1/3)^3 = 1/54, score 1 - 1/54. Without synonyms it would be (2/3)(1 - 0.5) = 1/3.
    assert m.meteor("the quick fox", "the fast fox") == pytest.approx(1 - 1 / 54)
    assert m.meteor("nothing alike", "the fast fox") == 0.0


def test_meteor_without_wordnet_says_how_to_install_it(tmp_path):
    with pytest.raises(m.WordNetUnavailable, match="wordnet-base"):
        m._wordnet(str(tmp_path))


def test_bleu_is_sacrebleus_sentence_bleu_scaled_to_one():
    assert m.bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    # Matches 5/6, 3/5, 1/4 and 0/3 (exp smoothing: 1/(2*3)); no brevity penalty:
    # (5/6 * 3/5 * 1/4 * 1/6) ** (1/4).
    assert m.bleu("the cat is on the mat", "the cat sat on the mat") == pytest.approx((5 / 6 * 3 / 5 / 4 / 6) ** 0.25)


def test_classification_takes_the_first_word_that_is_a_valid_label():
    labels = ["positive", "negative", "neutral"]
    assert m.classify("Negative. Not positive at all", labels) == "negative"
    assert m.classify("I think it is POSITIVE", labels) == "positive"
    assert m.classify("no idea", labels) == m.UNKNOWN_LABEL
    assert m.classify("The answer is 2.", ["1", "2"]) == "2"


def test_balanced_accuracy_is_the_mean_recall_and_precision_is_per_predicted_class():
    summary = m.classification_summary(["a", "a", "a", "b"], ["a", "a", "b", "unknown"])
    assert summary.accuracy == 0.5
    assert summary.balanced_accuracy == pytest.approx((2 / 3 + 0) / 2)
    assert summary.per_class == {"a": (1.0, pytest.approx(2 / 3), 3), "b": (0.0, 0.0, 1)}
    assert summary.unknown == 1


def test_vocabulary_richness_type_token_ratio_and_mtld():
    assert m.type_token_ratio("The cat, the dog") == 0.75
    assert math.isnan(m.type_token_ratio("..."))
    # Forward: factor closes at the 7th word (5 types / 7 = 0.714); the rest, 6 types in 7 words,
    # adds (1 - 6/7)/0.28: 14 / (1 + 0.5102) = 9.2703. Backward: a factor at the 9th word (6/9),
    # the rest 4 types / 5 adds 0.2/0.28: 14 / 1.7143 = 8.1667. MTLD is their mean.
    text = "the cat sat on the mat the cat sat on the mat the dog"
    assert m.mtld(text) == pytest.approx((14 / (1 + (1 / 7) / 0.28) + 14 / (1 + 0.2 / 0.28)) / 2)
    assert math.isnan(m.mtld("every word differs here"))


def test_cosine_similarity_of_rows_and_the_best_reference():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [1.0, 0.0]])
    got = m.cosine_similarity(a, b)
    assert got[:2] == pytest.approx([0.0, 1.0])
    assert math.isnan(got[2])
    assert m.best_cosine([1.0, 0.0], [[0.0, 1.0], [1.0, 1.0]]) == pytest.approx(2 ** -0.5)


def test_score_batch_scores_every_pair_with_the_best_reference_and_nan_without_one():
    outputs = ["The answer is Paris, France", "London", "anything"]
    references = [["Paris"], ["Paris", "london"], []]
    scores = m.score_batch(["f1_score", "quasi_exact_match", "rougeL", "type_token_ratio"], outputs, references)
    assert scores["f1_score"][:2] == pytest.approx([0.4, 1.0])
    assert scores["quasi_exact_match"][:2].tolist() == [0.0, 1.0]
    assert scores["rougeL"][1] == 1.0
    assert all(math.isnan(scores[k][2]) for k in ("f1_score", "quasi_exact_match", "rougeL"))
    assert scores["type_token_ratio"][2] == 1.0  # needs no reference


def test_score_batch_classifies_against_the_given_labels():
    scores = m.score_batch(["classification_accuracy"], ["Positive!", "meh", "negative"],
                           [["positive"], ["negative"], ["Negative"]], labels=["positive", "negative"])
    assert scores["classification_accuracy"].tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="labels"):
        m.score_batch(["classification_accuracy"], ["x"], [["y"]])


def test_the_catalogue_knows_kinds_presets_and_refuses_unknown_names():
    assert m.resolve("exact_match").kind == "binary"
    assert m.resolve("rouge").name == "rouge2"
    assert m.resolve("meteor").needs == {"reference", "wordnet"}
    assert all(m.resolve(name) for names in m.PRESETS.values() for name in names)
    assert m.PRESET_PRIMARY["qa"] == "f1"
    assert "semantic_similarity" in m.catalogue_names()
    with pytest.raises(m.UnknownMetric, match="known:"):
        m.resolve("bertscore")
