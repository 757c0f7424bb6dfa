"""Full-ranking evaluation (batched, exact, per-user values kept).

``ranking.evaluate`` gives the same values as Cornac's ``ranking_eval`` (checked in the
tests and by ``python -m mmrepr.bench eval``), much faster; ``cornac_ref`` wraps Cornac's.
"""

from mmrepr.evaluation.ranking import METRICS, EvalResult, EvalSplit, build_split, evaluate, split_from_cornac

__all__ = ["METRICS", "EvalResult", "EvalSplit", "build_split", "evaluate", "split_from_cornac"]
