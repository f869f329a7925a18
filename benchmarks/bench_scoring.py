"""Scoring throughput: 100,000 (output, reference) pairs through the default QA and summarization
metrics, one metric at a time (pairs/s) and the whole preset, then the statistics of 100,000
records (a mean's bootstrap interval, a paired test). Peak memory is the process's peak RSS.

Pairs come from ../shared/data when it is there (TriviaQA answers, DialogSum summaries: outputs are
the reference reworded, truncated or another record's), else synthetic text. BENCH_PAIRS changes n.
    python benchmarks/bench_scoring.py
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.evaluation import metrics as mt  # noqa: E402
from shared.evaluation import statistics as st  # noqa: E402

N = int(os.environ.get("BENCH_PAIRS", "100000"))
DATA = ROOT.parent / "shared" / "data"
WORDS = ("the a model answer river city summary person meeting asks about price flight doctor "
         "holiday weather music book train station office money friend dinner").split()


def _read(path: Path, key: str) -> list[str]:
    return [json.loads(line)[key] for line in path.open()] if path.exists() else []


def qa_pairs(rng: np.random.Generator) -> tuple[list[str], list[list[str]]]:
    targets = _read(DATA / "triviaqa" / "train.jsonl", "answer") or [
        " ".join(rng.choice(WORDS, 2)) + "<OR>" + " ".join(rng.choice(WORDS, 3)) for _ in range(5000)]
    outputs, refs = [], []
    for i in range(N):
        target = targets[i % len(targets)]
        references = mt.split_references(target)
        kind = rng.integers(3)
        answer = references[0] if kind == 0 else targets[(i * 7 + 3) % len(targets)].split("<OR>")[0]
        outputs.append(answer if kind < 2 else f"I believe the answer is {answer}, as far as I know.")
        refs.append(references)
    return outputs, refs


def summarization_pairs(rng: np.random.Generator) -> tuple[list[str], list[list[str]]]:
    summaries = _read(DATA / "dialogsum" / "train.jsonl", "completion") or [
        " ".join(rng.choice(WORDS, 25)) for _ in range(700)]
    outputs, refs = [], []
    for i in range(N):
        ref = summaries[i % len(summaries)]
        words = ref.split()
        kind = rng.integers(3)
        if kind == 0:  # reworded: a fifth of the words dropped
            out = " ".join(w for w in words if rng.random() > 0.2)
        elif kind == 1:  # another record's summary
            out = summaries[(i * 13 + 5) % len(summaries)]
        else:  # truncated, with a prefix
            out = "The dialogue shows that " + " ".join(words[: max(3, len(words) // 2)])
        outputs.append(out)
        refs.append([ref])
    return outputs, refs


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_preset(task: str, outputs: list[str], refs: list[list[str]]) -> list[tuple[str, float]]:
    rows = []
    mt.score_batch(list(mt.PRESETS[task]), outputs[:200], refs[:200])  # load WordNet, warm nothing else
    for name in mt.PRESETS[task]:
        t = time.perf_counter()
        mt.score_batch([name], outputs, refs)
        rows.append((name, len(outputs) / (time.perf_counter() - t)))
    t = time.perf_counter()
    mt.score_batch(list(mt.PRESETS[task]), outputs, refs)
    rows.append((f"all {task} metrics together", len(outputs) / (time.perf_counter() - t)))
    return rows


def main() -> None:
    rng = np.random.default_rng(1234)
    print(f"{N:,} pairs; data: {'../shared/data' if DATA.exists() else 'synthetic'}")
    for task, make in (("qa", qa_pairs), ("summarization", summarization_pairs)):
        outputs, refs = make(rng)
        print(f"\n{task} (mean output {np.mean([len(o) for o in outputs]):.0f} chars)")
        for name, rate in bench_preset(task, outputs, refs):
            print(f"  {name:32s} {rate:>12,.0f} pairs/s")
        print(f"  peak RSS so far: {peak_mib():,.0f} MiB")
    x = rng.random(N)
    y = x + rng.normal(0.01, 0.1, N)
    for label, fn in (("mean with bootstrap CI (2,000 resamples)", lambda: st.mean_ci(x)),
                      ("paired bootstrap test", lambda: st.paired_bootstrap(x, y)),
                      ("exact McNemar (+ bootstrap CI)", lambda: st.mcnemar_exact(x > 0.5, y > 0.5))):
        t = time.perf_counter()
        fn()
        print(f"{label:42s} {time.perf_counter() - t:6.2f} s for {N:,} records")
    print(f"peak RSS: {peak_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
