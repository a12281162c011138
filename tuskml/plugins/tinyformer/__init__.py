"""tinyformer: NAS for hybrid CNN+transformer models under MCU limits, after TinyFormer (arXiv:2311.01759)."""
