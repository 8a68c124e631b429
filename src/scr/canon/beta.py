"""The Beta posterior of a success probability: conjugate to success/failure counts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BetaPosterior:
    """Beta(alpha, beta) after the observed successes and failures."""

    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        """The posterior mean α / (α + β): the success probability a decision uses."""
        return self.alpha / (self.alpha + self.beta)


def beta_posterior(
    successes: int, failures: int, prior_alpha: float = 1.0, prior_beta: float = 1.0
) -> BetaPosterior:
    """Beta(prior_alpha + successes, prior_beta + failures); counts must be ≥ 0."""
    if successes < 0 or failures < 0:
        raise ValueError("success and failure counts must be >= 0")
    if prior_alpha <= 0 or prior_beta <= 0:
        raise ValueError("the prior's alpha and beta must be > 0")
    return BetaPosterior(prior_alpha + successes, prior_beta + failures)
