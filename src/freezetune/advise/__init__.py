"""``freezetune advise``'s pure building blocks: successive halving over strategy x lr arms
(:mod:`~.halving`), final-score predictions from prefix curves (:mod:`~.curves`),
per-family learning-rate grids (:mod:`~.lrs`), finished runs' curves as references
(:mod:`~.references`), and ``--check``'s comparison with a full study (:mod:`~.check`,
:mod:`~.check_measures`). No torch here.
"""

from __future__ import annotations

__all__: list[str] = []
