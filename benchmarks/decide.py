"""The A/B gate's decision: per stage, is head slower than base? (rank-based, with a minimum effect).

Timings on a shared machine are not normal: preemption adds long positive tails, and load
drifts. So, as airspeed velocity (asv) does, the decision uses the Mann-Whitney U test on the
interleaved repeats of both sides (ranks, not means: a few preempted samples cannot swing it)
and additionally requires a minimum effect, the ratio of medians, so that a tiny but
statistically clear difference is not called a regression:

- ``slower`` (a regression): one-sided U test ``head > base`` with p < ``alpha`` and
  ``median(head) / median(base) >= 1 + min_effect``;
- ``faster``: the mirror image;
- ``unsure``: the medians differ by more than ``min_effect`` but the test is not significant
  (too noisy to tell: more rounds would decide);
- ``same``: otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from benchmarks.errors import BenchmarkError
from benchmarks.timing import Stats, summarize

VERDICTS = ("slower", "faster", "unsure", "same")


@dataclass(frozen=True)
class Comparison:
    """One stage: base and head summaries, the ratio of medians, the test and the verdict."""

    stage: str
    base: Stats
    head: Stats
    ratio: float  # median(head) / median(base); > 1: head is slower
    p_slower: float  # one-sided Mann-Whitney U p-value for "head slower than base"
    p_faster: float
    verdict: str

    @property
    def confidence(self) -> float:
        """``1 - p`` of the one-sided test in the direction the medians moved."""
        return 1.0 - (self.p_slower if self.ratio >= 1 else self.p_faster)

    def to_json(self) -> dict:
        out = asdict(self)
        out.update(base=self.base.to_json(), head=self.head.to_json(), confidence=self.confidence)
        return out


def compare(stage: str, base: Sequence[float], head: Sequence[float], alpha: float = 0.001,
            min_effect: float = 0.05) -> Comparison:
    """Compare the samples of one stage (seconds; each sample one interleaved round)."""
    from scipy.stats import mannwhitneyu

    if len(base) < 2 or len(head) < 2:
        raise BenchmarkError(f"{stage}: need at least 2 samples per side, got {len(base)} and {len(head)}")
    if not 0 < alpha < 1 or min_effect < 0:
        raise BenchmarkError(f"alpha must be in (0, 1) and min_effect >= 0; got {alpha}, {min_effect}")
    b, h = summarize(base), summarize(head)
    ratio = h.median / b.median if b.median > 0 else float("inf") if h.median > 0 else 1.0
    if len(set(base) | set(head)) == 1:  # all equal (e.g. a stage that is always 0)
        p_slower = p_faster = 1.0
    else:
        p_slower = float(mannwhitneyu(head, base, alternative="greater").pvalue)
        p_faster = float(mannwhitneyu(head, base, alternative="less").pvalue)
    if p_slower < alpha and ratio >= 1 + min_effect:
        verdict = "slower"
    elif p_faster < alpha and ratio <= 1 / (1 + min_effect):
        verdict = "faster"
    elif ratio >= 1 + min_effect or ratio <= 1 / (1 + min_effect):
        verdict = "unsure"
    else:
        verdict = "same"
    return Comparison(stage, b, h, ratio, p_slower, p_faster, verdict)
