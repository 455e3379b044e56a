"""The promotion rule: when a challenger takes the `champion` alias. Pure, so it is unit-tested."""

from __future__ import annotations

from dataclasses import dataclass

from clickrec.choices import PromoteMode


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def decide_promotion(
    mode: PromoteMode,
    challenger_score: float,
    champion_score: float | None,
    margin: float = 0.0,
    *,
    baseline_score: float | None,
    challenger_test_score: float | None = None,
    champion_unavailable: str | None = None,
) -> PromotionDecision:
    """Promote when forced, or when the challenger beats the popularity baseline and the champion.

    `auto` promotes only a challenger that wins by more than `margin` against both:

    - the popularity baseline (`baseline_score`, on this run's test split, compared with
      `challenger_test_score`, the challenger's score on that same split; default
      `challenger_score`), so that an empty registry never gets a champion worse than the popular
      list readers get without one;
    - the champion, when there is one (`champion_score` and `challenger_score` come from the same
      pairs: the caller re-scores the champion on them).

    `baseline_score` None means no baseline was computed: only the champion is compared.
    `champion_unavailable` (why a champion exists but could not be scored) blocks `auto`: a
    champion that cannot be compared is not replaced unless promotion is forced.
    """
    if mode == "never":
        return PromotionDecision(False, "--promote never")
    if mode == "always":
        return PromotionDecision(True, "--promote always")
    if champion_unavailable is not None:
        return PromotionDecision(False, f"champion not comparable: {champion_unavailable}")
    on_test = challenger_score if challenger_test_score is None else challenger_test_score
    vs_baseline = ""
    if baseline_score is not None:
        if not on_test > baseline_score + margin:
            return PromotionDecision(
                False, f"challenger {on_test:.4f} <= popularity baseline {baseline_score:.4f} + margin {margin}"
            )
        vs_baseline = f"challenger {on_test:.4f} > popularity baseline {baseline_score:.4f} + margin {margin}"
    if champion_score is None:
        return PromotionDecision(True, "; ".join(x for x in ("no champion yet", vs_baseline) if x))
    if challenger_score > champion_score + margin:
        return PromotionDecision(True, "; ".join(x for x in (
            f"challenger {challenger_score:.4f} > champion {champion_score:.4f} + margin {margin}", vs_baseline) if x))
    return PromotionDecision(
        False, f"challenger {challenger_score:.4f} <= champion {champion_score:.4f} + margin {margin}"
    )
