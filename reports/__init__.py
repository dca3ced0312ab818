"""HTML reports rendered from run directories (Jinja templates in ``templates/``), read through
:func:`medbench.results.load_run` only: ``site.build_report`` (leaderboards, protocol switch, charts, provenance),
``paper`` (the LLaMA32-Med paper's reported numbers, as data) and ``charts`` (inline SVG rendered in Python)."""
