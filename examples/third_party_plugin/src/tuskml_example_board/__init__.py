"""An example tuskml plugin package. See plugin.py: the whole plugin is about 20 lines."""
