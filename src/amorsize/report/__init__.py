"""Reports of a decision, for people and programs. Nothing here measures, plans or runs anything.

- :mod:`~amorsize.report.text` — short plain-text explanation (``verbose=True``), unit formatting.
- :mod:`~amorsize.report.console` — the rich report: measured, machine, plan, breakdown, alternatives.
- :mod:`~amorsize.report.data` — JSON-ready dicts (``--json``, ``result.to_dict()``).
- :mod:`~amorsize.report.html` — HTML tables for Jupyter (``_repr_html_``).
- :mod:`~amorsize.report.plot` — predicted speedup and overheads with matplotlib (the ``plot`` extra).
"""
