"""BERTScore numbers are bitwise the same whatever the process's thread count and hash seed.

Guards the torchrun failure (tests/test_cache_resume.py::test_torchrun_two_processes_equal_a_single_process): a rank
runs with OMP_NUM_THREADS=1 and the single process with the machine's cores, and plain bert-score gave results
differing at ~1e-7 — the encoder's CPU matrix products split their sums by thread, and bert-score batches sentences
in `set` order, which changes with PYTHONHASHSEED.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from medbench.scoring import bertscore as bs

pytest.importorskip("torch")
pytest.importorskip("bert_score")

WORDS = [
    *("chest", "x-ray", "ct", "mri", "axial", "coronal", "sagittal", "showing", "left", "right", "lung", "liver"),
    *("mass", "lesion", "effusion", "nodule", "fracture", "contrast", "enhanced", "arrow", "small", "large"),
    *("bilateral", "image", "of", "the", "with", "and", "a", "an", "in", "lower", "upper", "lobe", "kidney"),
]

CHILD = """
import json, sys, torch
from medbench.scoring.bertscore import bertscore, choose_model
torch.set_num_threads(int(sys.argv[1]))
preds, refs = json.load(sys.stdin)
result = bertscore(preds, refs, choose_model())
print(json.dumps([[x.hex() for x in result.precision], [x.hex() for x in result.recall], [x.hex() for x in result.f1]]))
"""


def _captions(n: int) -> tuple[list[str], list[str]]:
    """Over 64 distinct sentences (several batches), many with the same word count (ordered by hash seed in
    bert-score), and a few empty ones."""
    rng = random.Random(7)
    refs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) for _ in range(n)]
    preds = [" ".join(rng.sample(r.split(), max(1, len(r.split()) - rng.randint(0, 3)))) for r in refs]
    preds[3] = preds[40] = ""
    refs[11] = "  "
    return preds, refs


def _score_in_child(threads: int, hash_seed: int, pairs: tuple[list[str], list[str]]) -> list[list[str]]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONHASHSEED": str(hash_seed)}
    env.pop(bs.THREADS_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(threads)],
        input=json.dumps(pairs),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_scores_are_bitwise_equal_for_one_and_two_threads() -> None:
    pairs = _captions(150)
    one = _score_in_child(1, 1, pairs)
    two = _score_in_child(2, 2, pairs)
    assert one == two  # exact float bits, P, R and F1 of every pair
    assert sum(float.fromhex(f) == 0.0 for f in one[2]) == 3  # the empty pairs


def test_thread_count_is_fixed_during_scoring_and_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv(bs.THREADS_ENV, raising=False)

    seen: list[int] = []
    match = bs._match

    def spy(*args: object) -> tuple[float, float, float]:
        seen.append(torch.get_num_threads())
        return match(*args)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(bs, "_match", spy)
        bs.bertscore(["a chest x-ray"], ["chest radiograph"], bs.choose_model())
        assert seen == [bs.CPU_THREADS] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert bs.thread_settings()["torch_intra_op_threads"] == bs.CPU_THREADS == 1


def test_thread_override_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(bs.THREADS_ENV, "4")
    assert bs.thread_settings()["torch_intra_op_threads"] == 4 == bs.bertscore_threads()
