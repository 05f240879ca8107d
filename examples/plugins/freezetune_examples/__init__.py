"""freezetune plugins that live outside freezetune, registered through entry points only.

- :mod:`~freezetune_examples.lisa`: ``--freeze lisa:k=2,every=50`` (group
  ``freezetune.policies``), Pan et al. 2024.
- :mod:`~freezetune_examples.pkd`: ``--objective pkd:beta=100`` with ``--teacher`` and
  ``--student-layers`` (group ``freezetune.objectives``), Sun et al. 2019.

Installing this package (``pip install -e examples/plugins``) is all it takes: freezetune
finds each plugin by its entry point when its name is first used.
"""

__all__: list[str] = []
