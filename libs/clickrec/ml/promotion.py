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
    champion_unavailable: str | None = None,
) -> PromotionDecision:
    """Promote when forced, when there is no champion, or when the challenger wins by > margin.

    Both scores must come from the same test split (the caller re-scores the champion on it).
    `champion_unavailable` (why a champion exists but could not be scored) blocks `auto`: a
    champion that cannot be compared is not replaced unless promotion is forced.
    """
    if mode == "never":
        return PromotionDecision(False, "--promote never")
    if mode == "always":
        return PromotionDecision(True, "--promote always")
    if champion_unavailable is not None:
        return PromotionDecision(False, f"champion not comparable: {champion_unavailable}")
    if champion_score is None:
        return PromotionDecision(True, "no champion yet")
    if challenger_score > champion_score + margin:
        return PromotionDecision(
            True, f"challenger {challenger_score:.4f} > champion {champion_score:.4f} + margin {margin}"
        )
    return PromotionDecision(
        False, f"challenger {challenger_score:.4f} <= champion {champion_score:.4f} + margin {margin}"
    )
