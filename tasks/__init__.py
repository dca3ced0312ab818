"""Task plugins. Every non-underscore module here registers one task when imported (see medbench.registry)."""
