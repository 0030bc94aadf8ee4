"""Atomic, pickle-free training checkpoints: weights and optimizer tensors in safetensors.

A checkpoint is a folder `checkpoint-{step:07d}/` holding model.safetensors,
optimizer.safetensors (every tensor of the optimizer state), any extra tensor files the trainer
adds (e.g. the best weights so far) and state.json (step, the optimizer's non-tensor state, the
run's settings, anything the trainer adds). It is written under a temporary name, fsynced and
renamed. Replacing a checkpoint of the same step first moves the old one aside, renames the new
one in and only then deletes the old one, so at every moment one complete copy exists;
`list_checkpoints` puts a moved-aside copy back if a crash came between the two renames.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from emogen_cli.core.errors import EmogenError, TrainingDiverged
from emogen_cli.core.files import _fsync_dir, read_json, read_safetensors, set_plain_mode, write_failure
from emogen_cli.core.interrupts import fault_point

PREFIX = "checkpoint-"
OLD = ".old"


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


def _write_file(path: Path, write) -> None:
    write(path)
    set_plain_mode(path)  # safetensors writes 0600 whatever the umask
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def save_checkpoint(run_dir: Path, step: int, model_state: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                    extra: dict[str, Any] | None = None, keep: int = 2,
                    tensors: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write checkpoint-{step} atomically (replacing one of the same step safely); prune all but `keep`.

    `tensors` maps extra file stems (e.g. "best") to state dicts stored as `{stem}.safetensors`.
    """
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    final = run_dir / f"{PREFIX}{step:07d}"
    tmp = run_dir / f".{PREFIX}{step:07d}.tmp"
    old = run_dir / f".{PREFIX}{step:07d}{OLD}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        files = {"model": model_state, **(tensors or {})}
        for stem, state in files.items():
            _write_file(tmp / f"{stem}.safetensors", lambda p, s=state: save_file(
                {k: v.detach().cpu().contiguous() for k, v in s.items()}, str(p)))
        opt_tensors, meta = _flatten_optimizer(optimizer.state_dict())
        _write_file(tmp / "optimizer.safetensors", lambda p: save_file(opt_tensors, str(p)))
        state = {"step": step, "optimizer": meta, **(extra or {})}
        _write_file(tmp / "state.json", lambda p: p.write_text(json.dumps(state, indent=1, allow_nan=False)))
        _fsync_dir(tmp)
        fault_point("checkpoint_written")
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            fault_point("checkpoint_old_moved")
        os.replace(tmp, final)
        _fsync_dir(run_dir)
        shutil.rmtree(old, ignore_errors=True)
    except Exception as exc:  # a full disk reaches us as safetensors' or torch's own error types too
        failure = write_failure(final, exc, where=run_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        if failure is None:
            raise
        raise failure from None
    for stale in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a copy moved aside by an interrupted replace is put back)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    for aside in run_dir.glob(f".{PREFIX}*{OLD}"):
        final = run_dir / aside.name[1:-len(OLD)]
        try:
            if final.is_dir():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.replace(aside, final)
        except OSError:
            pass  # another process of the same launch put it back first
    found = [p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def load_checkpoint(path: Path, tensors: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model state, optimizer state_dict, state.json) of one checkpoint folder; with `tensors`, state.json
    also gets each extra file's state dict under `_tensors[stem]` (None where the file is absent)."""
    path = Path(path)
    hint = "Delete this checkpoint folder to resume from an older one."
    state = read_json(path / "state.json", "Checkpoint state", hint)
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or "optimizer" not in state:
        raise EmogenError(f"Checkpoint state '{path / 'state.json'}' lacks its step or optimizer state.", hint)
    model = read_safetensors(path / "model.safetensors", "Checkpoint weights", hint)
    try:
        optimizer = _unflatten_optimizer(read_safetensors(path / "optimizer.safetensors", "Optimizer state", hint),
                                         state.pop("optimizer"))
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise EmogenError(f"Optimizer state in '{path}' is damaged ({exc}).", hint) from None
    state["_tensors"] = {stem: read_safetensors(path / f"{stem}.safetensors", "Checkpoint file", hint)
                         if (path / f"{stem}.safetensors").is_file() else None for stem in tensors}
    return model, optimizer, state


def apply_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                weights: dict[str, torch.Tensor], opt_state: dict[str, Any]) -> None:
    hint = "Resume with the settings that wrote it, or start a new run in another --out."
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise EmogenError(f"Checkpoint '{path}' does not fit this model "
                          f"({str(exc).splitlines()[-1].strip()[:200]}).", hint) from None
    try:
        optimizer.load_state_dict(opt_state)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise EmogenError(f"Optimizer state in '{path}' does not fit this model ({str(exc)[:200]}).", hint) from None


def settings_differences(saved: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """'key: saved -> current' for every setting that differs (JSON-normalised: tuples equal lists)."""
    if saved is None:
        return []
    current = json.loads(json.dumps(current, default=str))
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "(not recorded)"), current.get(key, "(not recorded)")
        if a != b:
            out.append(f"{key}: {a} -> {b}")
    return out


def check_settings(path: Path, saved: dict[str, Any] | None, current: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint written with other settings, naming each difference."""
    diffs = settings_differences(saved, current)
    if diffs:
        raise EmogenError(f"Cannot resume from '{path}': the settings differ from the run that wrote it "
                          f"({'; '.join(diffs)}).",
                          "Resume with the same settings, or start a new run in another --out.")


def check_finite(loss: torch.Tensor, step: int, lr_key: str, ckpt_dir: Path) -> None:
    """TrainingDiverged for a NaN/inf loss, before it reaches the weights: the last good checkpoint stays."""
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"The loss became {loss.item()} at step {step}.",
                               f"Lower {lr_key}; the last good checkpoint is kept in {ckpt_dir} (resume with --resume).")


def resume_from(ckpt_dir: Path, resume: bool, settings: dict[str, Any], model: torch.nn.Module,
                optimizer: torch.optim.Optimizer, total: int, reporter: Any, tensors: tuple[str, ...] = ()
                ) -> dict[str, Any] | None:
    """With --resume, the newest checkpoint's state.json (its `tensors` files under "_tensors") once its weights
    and optimizer state are in `model` and `optimizer` and its settings match `settings`; None for a new run
    (with a warning when --resume found nothing: a mistyped --out must not pass silently for a continuation)."""
    if not resume:
        return None
    if not (ckpts := list_checkpoints(ckpt_dir)):
        reporter.warn(f"--resume: no checkpoint in {ckpt_dir}; starting a new run.")
        return None
    weights, opt_state, state = load_checkpoint(ckpts[-1], tensors=tensors)
    check_settings(ckpts[-1], state.get("settings"), settings)
    apply_state(ckpts[-1], model, optimizer, weights, opt_state)
    reporter.info(f"Resuming from {ckpts[-1].name} (step {state['step']}/{total}).")
    return state
