"""Atomic, pickle-free training checkpoints: weights and optimizer tensors in safetensors.

A checkpoint is a folder `checkpoint-{step:07d}/` holding model.safetensors,
optimizer.safetensors (every tensor of the optimizer state) and state.json (step, the
optimizer's non-tensor state, anything the trainer adds). It is written under a temporary
name and renamed, so a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from emogen_cli.errors import EmogenError

PREFIX = "checkpoint-"


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir: Path, step: int, model_state: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                    extra: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Write checkpoint-{step} atomically and prune all but the `keep` newest."""
    run_dir = Path(run_dir)
    final = run_dir / f"{PREFIX}{step:07d}"
    tmp = run_dir / f".{PREFIX}{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
    tensors, meta = _flatten_optimizer(optimizer.state_dict())
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "optimizer": meta, **(extra or {})}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model state, optimizer state_dict, state.json) of one checkpoint folder."""
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text())
        model = load_file(str(path / "model.safetensors"))
        optimizer = _unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), state.pop("optimizer"))
    except (OSError, ValueError, KeyError) as exc:
        raise EmogenError(f"Checkpoint '{path}' is damaged ({exc}).", "Delete it to resume from an older one.") from None
    return model, optimizer, state
