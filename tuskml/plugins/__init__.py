"""Built-in plugin families. Each sub-package holds its hookimpls in ``_plugin.py``."""
