"""The example decoder: a per-pixel MLP that ignores its condition (a baseline, not a good model)."""

import torch
from torch import nn


class MLPDecoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(config.channels + 1, config.hidden, 1), nn.SiLU(),
                                 nn.Conv2d(config.hidden, config.channels, 1))
        self.in_channels = config.channels

    def forward(self, x_t, t, cond=None, cond_mask=None, ref_latents=None):
        t_map = t.view(-1, 1, 1, 1).expand(-1, 1, *x_t.shape[2:])
        return self.net(torch.cat([x_t, t_map], dim=1))

    def example_inputs(self):
        g = torch.Generator().manual_seed(0)
        return (torch.randn(2, self.in_channels, 8, 8, generator=g), torch.tensor([0.25, 0.75]))
