"""Where and how a process computes: device, CPU threads, precision, compilation, processes.

Training, sampling and evaluation ask the runtime instead of deciding these themselves. Under
`torchrun` (WORLD_SIZE > 1) the runtime joins the process group (NCCL on GPUs, gloo on CPUs),
wraps the model in DDP or FSDP2 (`fully_shard`) and gathers the consolidated state dicts a
checkpoint holds, so a run saved by N processes resumes on any other number.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from dataclasses import dataclass
from typing import Any

import torch

from unmask.config import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N'; a clear error when CUDA is asked for but absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r}: not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available; use 'cpu' or 'auto'")
    return device


def set_threads(n: int) -> None:
    """CPU threads of this process; 0 keeps torch's default (one per core)."""
    if n:
        torch.set_num_threads(n)


def keep_freed_memory() -> None:
    """Stop glibc from returning large freed blocks to the OS (CPU training only).

    Every step allocates and frees the same multi-MB activations; by default glibc
    unmaps them and the next step page-faults them back in (seen in profiles as slow
    fill_/log_softmax). Keeping them mapped made the demo-size step ~15% faster.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """x on `device`; from the host to a GPU through pinned memory and without waiting for the device (a copy from
    pageable memory would wait for the device's queue to drain first)."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def launched_world() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) as torchrun sets them; (0, 0, 1) for a plain process."""
    env = os.environ
    try:
        return int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1))
    except ValueError:
        raise ConfigError("RANK, LOCAL_RANK or WORLD_SIZE is not an integer; launch with torchrun") from None


@dataclass
class Runtime:
    """Device, precision, compilation and the process group of one training process."""

    device: torch.device
    compile: bool
    """torch.compile the model (default: on CUDA only)."""
    rank: int = 0
    world_size: int = 1
    parallel: str = "ddp"
    """How processes share the model when world_size > 1: 'ddp' (replicas) or 'fsdp' (FSDP2 shards)."""
    bf16: bool | None = None
    """bf16 autocast; None: on CUDA only (a CPU can trace the GPU's precision: `unmask bench memory`)."""

    @classmethod
    def create(
        cls, device: str = "auto", threads: int = 0, compile: bool | None = None, parallel: str = "ddp"
    ) -> Runtime:
        rank, local_rank, world = launched_world()
        dev = resolve_device(device)
        if world > 1 and dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        set_threads(threads)
        if dev.type == "cpu":
            keep_freed_memory()
        if world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return cls(dev, dev.type == "cuda" if compile is None else compile, rank, world, parallel)

    @property
    def is_main(self) -> bool:
        """The process that logs and writes run files (rank 0)."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world_size > 1 and self.parallel == "fsdp"

    @property
    def autocast_enabled(self) -> bool:
        """bf16 autocast on CUDA (fp32 master weights, fp32 losses); full fp32 on the CPU unless bf16 is set."""
        return self.device.type == "cuda" if self.bf16 is None else self.bf16

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast_enabled)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return to_device(x, self.device)

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """FSDP2: shard each block, then the rest (embedding, final norm), in place. Call before the optimiser
        is built: fully_shard replaces the parameters by sharded ones."""
        if self.sharded:
            from torch.distributed.fsdp import fully_shard

            for block in model.blocks:
                fully_shard(block)
            fully_shard(model)
        return model

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the loop calls: DDP-wrapped and/or compiled (the plain one keeps the weights)."""
        if self.world_size > 1 and self.parallel == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)
        return torch.compile(model) if self.compile else model

    def no_grad_sync(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        inner = getattr(model, "_orig_mod", model)  # under torch.compile
        if self.world_size == 1:
            return contextlib.nullcontext()
        if self.parallel == "ddp":
            return contextlib.nullcontext() if last else inner.no_sync()
        inner.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def all_sum(self, values: list[float]) -> list[float]:
        """Sums over processes (one collective); the values themselves in one process."""
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def from_main(self, obj: Any) -> Any:
        """Rank 0's value of obj on every process: decisions (best checkpoint, stop) must agree exactly."""
        if self.world_size == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def full_model_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The consolidated (unsharded) weights; every rank must call it under FSDP2 (a gather), and only
        rank 0 gets them there (the others an empty dict)."""
        if not self.sharded:
            return model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def full_optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """The consolidated AdamW state in torch.optim's one-process format (keyed by parameter index);
        a collective under FSDP2, as full_model_state."""
        if not self.sharded:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        state = get_optimizer_state_dict(
            model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        return _by_index(state) if state else {}

    def load_full_state_dicts(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optim_state: dict
    ) -> None:
        """Load consolidated state dicts (every rank passes the same ones) into a plain or sharded model."""
        if not self.sharded:
            model.load_state_dict(model_state)
            optimizer.load_state_dict(optim_state)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, model_state, options=options)
        set_optimizer_state_dict(model, optimizer, _by_name(optim_state, model, optimizer), options=options)


def _by_index(state: dict) -> dict:
    """An optimiser state dict keyed by parameter name (torch.distributed.checkpoint) → keyed by index
    (torch.optim's own format, the one a one-process checkpoint holds)."""
    names = [name for group in state["param_groups"] for name in group["params"]]
    index = {name: i for i, name in enumerate(names)}
    return {
        "state": {index[name]: value for name, value in state["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]],
    }


def _by_name(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The inverse of _by_index for this model and optimiser (parameters in the optimiser's order)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    names = [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
    return {
        "state": {names[i]: value for i, value in state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
    }
