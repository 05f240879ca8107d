"""``freezetune advise``'s pure building blocks: successive halving over strategy x lr arms
(:mod:`~.halving`), final-score predictions from prefix curves (:mod:`~.curves`), and
per-family learning-rate grids (:mod:`~.lrs`), and the answer's data and files (:mod:`~.advice`,
:mod:`~.render`: markdown, HTML, JSON and the curves' plot). No torch here.
"""

from __future__ import annotations

__all__: list[str] = []
