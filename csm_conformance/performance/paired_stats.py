"""The interval behind every A/B decision: Hodges-Lehmann estimate and Wilcoxon signed-rank
confidence interval of the paired log-ratios, at a level corrected for looking more than once.

Why this statistic. Each pair is one round of the current stack and one of the candidate, on the
same fixed-length seeded work, timed in the same second (frame by frame in turns, or back to back);
d = log(candidate / current) removes the machine's speed of the moment, which both rounds share. What is left is interference that hits one round of
a pair and not the other. Under ABBA interleaving it hits the candidate's round as often as the
current's, so d is distributed symmetrically around the true log-ratio, with heavy tails (one
round of a pair slowed 3x by another process). The signed-rank interval needs exactly that
(symmetry, nothing about the tails), and the Hodges-Lehmann estimate (median of the Walsh
averages) moves little when a few pairs are wild, where a mean and a t interval would be dragged
and widened by them.

Why the level is corrected. The controller looks at the interval after 10, 14, 20, 28, ... pairs
and stops a figure as soon as it is decided; every look is a chance to be wrong. The looks are
planned in advance (a geometric schedule up to the budget), so a Bonferroni split, alpha / looks
per look, keeps the chance of a wrong decision over the whole sequence below alpha. Conservative,
and simple enough to check by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

EXACT_UP_TO = 60  # exact null distribution of the signed-rank statistic up to this many pairs
FIRST_LOOK = 10
LOOK_GROWTH = 1.4


def look_schedule(max_pairs: int) -> list[int]:
    """The pair counts at which the interval is looked at: 10, 14, 20, 28, 39, ... up to max_pairs
    (which is always the last look)."""
    if max_pairs < FIRST_LOOK:
        return [max_pairs]
    looks, n = [], FIRST_LOOK
    while n < max_pairs:
        looks.append(n)
        n = max(n + 1, int(round(n * LOOK_GROWTH)))
    return looks + [max_pairs]


@lru_cache(maxsize=None)
def _signed_rank_cdf(n: int) -> tuple[float, ...]:
    """P(T <= t) for t = 0..n(n+1)/2, T the signed-rank statistic of n pairs under symmetry."""
    top = n * (n + 1) // 2
    counts = [1] + [0] * top
    for rank in range(1, n + 1):
        for total in range(top, rank - 1, -1):
            counts[total] += counts[total - rank]
    scale, running, cdf = 2.0**n, 0, []
    for c in counts:
        running += c
        cdf.append(running / scale)
    return tuple(cdf)


def _order_statistic_index(n: int, alpha: float) -> int:
    """k such that [W_(k), W_(M+1-k)] of the M sorted Walsh averages covers with probability >=
    1 - alpha (two-sided); 0 when n pairs cannot reach that level."""
    if n <= EXACT_UP_TO:
        cdf = _signed_rank_cdf(n)
        k = 0
        while k < len(cdf) and cdf[k] <= alpha / 2:
            k += 1
        return k  # P(T <= k-1) <= alpha/2
    mean, sd = n * (n + 1) / 4, math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    z = NormalDist().inv_cdf(1 - alpha / 2)
    return max(0, int(math.floor(mean - z * sd - 0.5)) + 1)


@dataclass(frozen=True)
class Interval:
    estimate: float  # ratio candidate / current (as a slowdown: > 1 is worse)
    low: float
    high: float
    level: float  # the per-look confidence level used
    pairs: int

    def as_dict(self) -> dict:
        return {"ratio": self.estimate, "low": self.low, "high": self.high, "level": self.level, "pairs": self.pairs}


def ratio_interval(log_ratios: list[float], alpha: float) -> Interval:
    """Hodges-Lehmann ratio and its signed-rank interval at level 1 - alpha, from log-ratios."""
    d = [x for x in log_ratios if math.isfinite(x)]
    n = len(d)
    if n == 0:
        return Interval(float("nan"), 0.0, float("inf"), 1 - alpha, 0)
    walsh = sorted((d[i] + d[j]) / 2 for i in range(n) for j in range(i, n))
    m = len(walsh)
    centre = walsh[m // 2] if m % 2 else (walsh[m // 2 - 1] + walsh[m // 2]) / 2
    k = _order_statistic_index(n, alpha)
    low, high = (walsh[k - 1], walsh[m - k]) if k >= 1 else (-math.inf, math.inf)
    return Interval(math.exp(centre), math.exp(low), math.exp(high), 1 - alpha, n)


def decide(interval: Interval, tolerance: float) -> str:
    """REGRESSED when the whole interval lies above 1 + tolerance, SAFE when it lies below it,
    otherwise undecided (more pairs, or INCONCLUSIVE when the budget is spent)."""
    limit = 1.0 + tolerance
    if interval.low > limit:
        return "REGRESSED"
    if interval.high < limit:
        return "SAFE"
    return "undecided"
