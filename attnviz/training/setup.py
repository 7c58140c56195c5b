"""The pieces a run is built from: its dataset, network, name, tensors, optimizer and forward module."""

from __future__ import annotations

import torch
from torch import nn

from attnviz.data import ImageDataset, channel_stats, load_dataset, match_channels, preprocess
from attnviz.errors import AttnvizError
from attnviz.models.registry import create_model
from attnviz.training.batches import WithBranches
from attnviz.training.distributed import Ranks
from attnviz.training.recipe import Recipe


def default_name(spec: str) -> str:
    """A checkpoint name from a spec: ``vgg16-interflow-soft:width=0.25`` -> ``vgg16-interflow-soft_width0.25``."""
    cleaned = spec.replace(":", "_").replace("=", "").replace(",", "_").replace("@", "_at_").replace("/", "-")
    return "".join(c for c in cleaned if c.isalnum() or c in "-_.").strip(".") or "model"


def checked_name(name: str | None, spec: str) -> str:
    name = name or default_name(spec)
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise AttnvizError(f"'{name}' is not a valid run name (no slashes, not hidden).")
    return name


def dataset(data: str | ImageDataset) -> ImageDataset:
    data = load_dataset(data) if isinstance(data, str) else data
    if not isinstance(data, ImageDataset):
        raise AttnvizError("data must be a dataset name or an attnviz.data.ImageDataset.")
    return data


def network(model: str | nn.Module, data: ImageDataset, seed: int) -> nn.Module:
    """A spec is built after seeding (initialisation is part of the seeded run); a module is checked."""

    if isinstance(model, str):
        torch.manual_seed(seed)
        return create_model(model, num_classes=data.num_classes, in_chans=data.in_chans)
    if not isinstance(model, nn.Module):
        raise AttnvizError("model must be a spec string or an attnviz model.")
    if not getattr(model, "spec", None):
        raise AttnvizError("The model has no 'spec'; build it with attnviz.create_model so it can be saved.")
    if getattr(model, "num_classes", data.num_classes) != data.num_classes:
        raise AttnvizError(f"The model predicts {model.num_classes} classes but the dataset has {data.num_classes}.")
    return model


def tensors(data: ImageDataset, in_chans: int, device: torch.device, probe_size: int, channels_last: bool):
    """(mean, std, train images, train labels, test images, test labels, probe batch).

    Train tensors live on the GPU under CUDA; on the CPU the batch is gathered first, then moved.
    """
    train_x = match_channels(data.train_images, in_chans)
    test_x = match_channels(data.test_images, in_chans)
    mean, std = data.mean, data.std
    if len(mean) != in_chans:  # statistics follow the channel conversion
        mean, std = channel_stats(train_x)
    mean, std = tuple(mean), tuple(std)
    on_device = device.type == "cuda"
    probe_batch = preprocess(test_x[:probe_size].to(device), mean, std)
    if channels_last:
        probe_batch = probe_batch.contiguous(memory_format=torch.channels_last)
    return (mean, std, train_x.to(device) if on_device else train_x,
            data.train_labels.to(device) if on_device else data.train_labels, test_x, data.test_labels, probe_batch)


def optimizer(net: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    """SGD (Nesterov or heavy-ball) with weight decay on weight matrices and kernels only (Goyal et al.
    2017); Interflow's aggregation weights get ``interflow_weight_lr_scale`` x the lr and no decay."""
    decay, no_decay, aggregation = [], [], []
    for param_name, param in net.named_parameters():
        if not param.requires_grad:
            continue
        if param_name.endswith("branch_weights"):
            aggregation.append(param)
        elif param.ndim <= 1:
            no_decay.append(param)
        else:
            decay.append(param)
    # lr_scale: the schedule's lr is multiplied by it for that group (the loop's _set_lr).
    groups = [{"params": decay, "weight_decay": recipe.weight_decay, "lr_scale": 1.0}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0})
    if aggregation:
        groups.append({"params": aggregation, "weight_decay": 0.0, "lr_scale": recipe.interflow_weight_lr_scale})
    return torch.optim.SGD(groups, lr=recipe.resolved_lr, momentum=recipe.momentum,
                           nesterov=recipe.optimizer == "nesterov" and recipe.momentum > 0)


def forward_module(net: nn.Module, recipe: Recipe, ranks: Ranks):
    """(Interflow head or None, whether the loss needs the branch logits, the module the loop calls)."""
    head = getattr(net, "head", None)
    if recipe.interflow_aux_weight is not None and head is not None and hasattr(head, "aux_weight"):
        head.aux_weight = float(recipe.interflow_aux_weight)
    use_branches = bool(getattr(net, "is_interflow", False) and getattr(head, "aux_weight", 0) > 0)
    module: nn.Module = WithBranches(net) if use_branches else net
    if ranks.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        module = DistributedDataParallel(module, device_ids=[ranks.device.index] if ranks.device.type == "cuda" else None)
    if recipe.compile:
        module = torch.compile(module)
    return head, use_branches, module
