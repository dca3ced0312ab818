"""``python -m medbench.testing tiny-model ...`` (see :mod:`medbench.testing.cli`)."""

from medbench.testing.cli import main

raise SystemExit(main())
