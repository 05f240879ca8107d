"""``freezetune advise``: the study's answer at a fraction of its cost.

Torch-free parts: successive halving over strategy x lr arms (:mod:`~.halving`), final-score
predictions from prefix curves (:mod:`~.curves`), per-family learning-rate grids (:mod:`~.lrs`),
training-time predictions (:mod:`~.costs`), the answer (:mod:`~.answer`, :mod:`~.advice`) and
its files (:mod:`~.render`: markdown, HTML, JSON and the curves' plot), finished runs' curves
as references (:mod:`~.references`), and ``--check``'s comparison with a full study
(:mod:`~.check`, :mod:`~.check_measures`). Running it: :mod:`~.engine` over the study's
executors and store (:mod:`~.ledger`, :mod:`~.store`), from :mod:`~.cli`.
"""

from __future__ import annotations

__all__: list[str] = []
