"""The A/B gate's decision: per stage, is head slower than base? (rank tests, paired and unpaired, minimum effect).

Timings on a shared machine are not normal (preemption adds long positive tails), and the load
drifts: measured here at load ~12 on 2 cores, one side's UNet medians moved between 212 and
322 ms over blocks of the same session. The gate runs the sides interleaved, one sample of each
per round (``A B B A ...``), and two rank tests read those rounds:

- **paired**: per round ``r`` the log ratio ``d_r = log(head_r / base_r)``; the one-sided
  Wilcoxon signed-rank test on the ``d_r``. Both samples of a round saw the same load, so a
  slowdown of the whole machine cancels: this is the test that holds up when the load drifts
  (a 15% slowdown under load that doubles between rounds: p = 3e-4 paired, p > 0.05 unpaired;
  ``tests/test_benchmarks_gate.py``). With ``n`` rounds its smallest p-value is ``2 ** -n``.
- **unpaired**: the one-sided Mann-Whitney U test on the two sides' samples, as asv does. On a
  quiet machine, for a stage of well under a millisecond whose per-round ratios are noisy, it
  has more power (measured: 21/21 against 20/21 detections at +15%, docs/benchmarks.md).

A stage is ``slower`` when the smaller of the two p-values, doubled (Bonferroni over the two
tests), is below ``alpha`` and the median round ratio ``median(head_r / base_r)`` reaches
``1 + min_effect``, so that a tiny but clear difference is not called a regression. ``faster``
is the mirror image; ``unsure``: the ratio passes the minimum effect but neither test is
significant (too noisy to tell: more rounds would decide); ``same`` otherwise.

With the default ``alpha = 0.001`` per stage and 8 stages, an unchanged tree raises a false alarm
in at most ~0.8% of runs (Bonferroni over the stages), under the tests' assumption that the order
within a round does not favour a side, which the alternating order provides.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from benchmarks.errors import BenchmarkError
from benchmarks.timing import Stats, summarize

VERDICTS = ("slower", "faster", "unsure", "same")


@dataclass(frozen=True)
class Comparison:
    """One stage: base and head summaries, the paired ratio, the test and the verdict."""

    stage: str
    base: Stats
    head: Stats
    ratio: float  # median over rounds of head / base; > 1: head is slower
    p_slower: float  # "head slower than base": 2 x the smaller one-sided p of the two tests (capped at 1)
    p_faster: float
    verdict: str

    @property
    def confidence(self) -> float:
        """``1 - p`` of the one-sided test in the direction the ratio moved."""
        return 1.0 - (self.p_slower if self.ratio >= 1 else self.p_faster)

    def to_json(self) -> dict:
        out = asdict(self)
        out.update(base=self.base.to_json(), head=self.head.to_json(), confidence=self.confidence)
        return out


def smallest_p(rounds: int) -> float:
    """The smallest p-value the decision can give with ``rounds`` rounds per side (the U test's
    ``1 / C(2n, n)``, doubled for the two tests)."""
    return min(1.0, 2.0 / math.comb(2 * rounds, rounds))


def paired_differences(base: Sequence[float], head: Sequence[float]) -> list[float]:
    """Per round ``log(head / base)``; plain differences where a stage can be 0 s (no log)."""
    if all(b > 0 for b in base) and all(h > 0 for h in head):
        return [math.log(h / b) for b, h in zip(base, head)]
    return [h - b for b, h in zip(base, head)]


def compare(stage: str, base: Sequence[float], head: Sequence[float], alpha: float = 0.001,
            min_effect: float = 0.05) -> Comparison:
    """Compare one stage; ``base[r]`` and ``head[r]`` are the samples of interleaved round ``r`` (seconds)."""
    # optional: scipy (the train/bench extra)
    from scipy.stats import mannwhitneyu, wilcoxon

    if len(base) < 2 or len(head) < 2:
        raise BenchmarkError(f"{stage}: need at least 2 samples per side, got {len(base)} and {len(head)}")
    if len(base) != len(head):
        raise BenchmarkError(f"{stage}: the samples are paired by round, but base has {len(base)} and head "
                             f"{len(head)}; every round must time both sides")
    if not 0 < alpha < 1 or min_effect < 0:
        raise BenchmarkError(f"alpha must be in (0, 1) and min_effect >= 0; got {alpha}, {min_effect}")
    b, h = summarize(base), summarize(head)
    ratios = [hv / bv for bv, hv in zip(base, head) if bv > 0]
    ratio = statistics.median(ratios) if ratios else (float("inf") if h.median > 0 else 1.0)
    d = paired_differences(base, head)
    if all(x == 0 for x in d):  # identical rounds (e.g. a stage that is always 0)
        p_slower = p_faster = 1.0
    else:
        # zero_method="zsplit": ties at 0 count half for each side instead of being dropped, so
        # a stage that rounds to equal times does not turn a few remaining rounds into a verdict.
        def p(alternative: str) -> float:
            paired = wilcoxon(d, alternative=alternative, zero_method="zsplit").pvalue
            unpaired = mannwhitneyu(head, base, alternative=alternative).pvalue
            return min(1.0, 2.0 * float(min(paired, unpaired)))

        p_slower, p_faster = p("greater"), p("less")
    if p_slower < alpha and ratio >= 1 + min_effect:
        verdict = "slower"
    elif p_faster < alpha and ratio <= 1 / (1 + min_effect):
        verdict = "faster"
    elif ratio >= 1 + min_effect or ratio <= 1 / (1 + min_effect):
        verdict = "unsure"
    else:
        verdict = "same"
    return Comparison(stage, b, h, ratio, p_slower, p_faster, verdict)
