"""mammoth2: a unified AR + diffusion multimodal model after MammothModa2 (arXiv:2511.18262)."""
