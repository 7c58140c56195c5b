"""Interflow (Cai et al. 2021, ``interflow.md``): aggregate stage-wise predictions with attention.

Every backbone stage's output goes through its own branch: adaptive average pooling to 1x1, then a
fully connected layer to K class confidences (section 3.1). The n branch outputs are aggregated by
- ``hard``: fixed, hand-set weights w_i (a hyperparameter each; default equal 1/n): out = sum_i w_i z_i;
- ``soft``: the paper's 1 x n convolution over the stacked branches, i.e. one learned weight per
  branch (initialised to 1/n): out = sum_i w_i z_i;
- ``per_class``: the paper's pointwise n x n variant: one learned weight per branch *and class*
  (initialised to 1/n): out_k = sum_i W[i, k] z_{i,k}.
The learned aggregations have no bias (a bias would be one more per-class offset, which the branch
FCs already provide).

Training loss (documented choice): cross-entropy on the aggregated output; ``aux_weight`` > 0 adds
aux_weight * mean_i CE(z_i) over the branches (GoogLeNet-style auxiliary losses, off by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from attnviz.errors import SpecError
from attnviz.layers.taps import AttentionModule, AttnTap

MODES = ("hard", "soft", "per_class")


class InterflowHead(AttentionModule):
    attn_kind = "interflow"
    readouts: ClassVar[dict[str, str]] = {"branch_logits": "branch_logits", "branch_weights": "branch_weights",
                                          "output": "output"}
    branch_weights_tap = "tap_branch_weights"

    def derive_readouts(self, record) -> None:
        if record.branch_logits is not None:
            record.branch_probs = torch.softmax(record.branch_logits.float(), dim=-1)
        record.mode = self.mode

    def __init__(
        self,
        stage_channels: Sequence[int],
        num_classes: int,
        mode: str = "soft",
        hard_weights: Sequence[float] | None = None,
        aux_weight: float = 0.0,
    ):
        super().__init__()
        if mode not in MODES:
            raise SpecError(f"Interflow mode must be one of {', '.join(MODES)}, not '{mode}'.")
        n = len(stage_channels)
        self.mode = mode
        self.num_branches = n
        self.num_classes = num_classes
        self.aux_weight = float(aux_weight)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.branches = nn.ModuleList(nn.Linear(c, num_classes) for c in stage_channels)
        if mode == "hard":
            weights = torch.full((n,), 1.0 / n) if hard_weights is None else torch.tensor(list(hard_weights))
            if weights.numel() != n or not torch.isfinite(weights).all():
                raise SpecError(f"Interflow hard mode needs {n} finite branch weights.")
            self.register_buffer("branch_weights", weights.float())
        elif mode == "soft":
            self.branch_weights = nn.Parameter(torch.full((n,), 1.0 / n))
        else:
            self.branch_weights = nn.Parameter(torch.full((n, num_classes), 1.0 / n))
        self.tap_branch_logits = AttnTap("branch_logits")
        self.tap_branch_weights = AttnTap("branch_weights")
        self.tap_output = AttnTap("output")

    def branch_logits(self, stage_outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(stage_outputs) != self.num_branches:
            raise SpecError(f"Interflow expected {self.num_branches} stage outputs, got {len(stage_outputs)}.")
        return torch.stack(
            [fc(self.pool(feat).flatten(1)) for fc, feat in zip(self.branches, stage_outputs, strict=True)], dim=1
        )  # [B, n, K]

    def forward_with_branches(self, stage_outputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.tap_branch_logits(self.branch_logits(stage_outputs))
        weights = self.tap_branch_weights(self.branch_weights)
        if weights.dim() == 1:
            out = (logits * weights[None, :, None]).sum(dim=1)
        else:
            out = (logits * weights[None]).sum(dim=1)
        return self.tap_output(out), logits

    def forward(self, stage_outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.forward_with_branches(stage_outputs)[0]

    def loss(self, output: torch.Tensor, branch_logits: torch.Tensor, target: torch.Tensor, criterion) -> torch.Tensor:
        """Aggregated CE, plus aux_weight x mean branch CE when aux_weight > 0."""
        loss = criterion(output, target)
        if self.aux_weight > 0:
            aux = torch.stack([criterion(branch_logits[:, i], target) for i in range(self.num_branches)]).mean()
            loss = loss + self.aux_weight * aux
        return loss
