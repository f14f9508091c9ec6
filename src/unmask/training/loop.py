"""The training loop shared by every objective: one run, E epochs over U unique tokens.

`train` opens (or resumes) a run directory and hands a `Trainer` the pieces: the runtime
(device, threads, precision, compile), the objective's loss, the `TrainState` (checkpoint
format), the metrics writer and validation. `Trainer.run` is the loop, readable on one
screen; per-step hooks let sweeps and fine-tuning reuse it rather than copy it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from unmask.checkpoint import Checkpoints, RunLock, check_output_dir
from unmask.config import ConfigError, ModelConfig, TrainConfig
from unmask.data.batch import Batch
from unmask.data.dataset import TokenData, open_data
from unmask.data.instructions import InstructionData
from unmask.model import Transformer
from unmask.objectives import Specials, objective_for
from unmask.objectives.validation import ValidationLoss, token_byte_lengths, validation_loss
from unmask.progress import progress_bar
from unmask.run import Run
from unmask.runtime import Runtime, launched_world
from unmask.training.init import check_base_unchanged, start_from
from unmask.training.metrics import MetricsWriter
from unmask.training.optim import Budget, learning_rate, make_optimizer
from unmask.training.rundir import check_resumable, create_run_dir, resume_config
from unmask.training.saving import RunSaver, TrainingError, checkpoint_bytes, restore
from unmask.training.signals import StopSignals, TrainingStopped
from unmask.training.state import TrainState
from unmask.training.step import accumulate_gradients, apply_update


@dataclass
class StepInfo:
    """What a hook sees after each optimiser step."""

    step: int
    total_steps: int
    loss: float
    lr: float
    val: ValidationLoss | None = None
    """The validation of this step, when there was one."""


Hook = Callable[[StepInfo], None]


@dataclass
class StepBatch:
    """One process's share of the global batch of one step."""

    step: int
    micro_batches: list[tuple[int, float, Batch]]
    """(index k within the global batch, weight 1, or 0 for a stand-in, the batch on the device)."""
    n_real: int
    """Real (non-padding) tokens of the global batch."""
    n_step: int
    """Loss targets of the global batch: every process divides by it."""


def train(
    data: str | Path | None,
    out: str | Path,
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    resume: bool = False,
    quiet: bool = False,
    tensorboard: bool = True,
    hooks: Sequence[Hook] = (),
    defaults: TrainConfig | None = None,
) -> Path:
    """Train one run into `out`; with `resume`, continue the run saved there. Returns `out`.

    On resume the run's saved config wins; only runtime controls (stop_at_step, device, threads,
    compile) are taken from `train`, and any other value that differs from the saved one is refused (a value
    equal to its default in `defaults`, the command's own, else TrainConfig's, counts as not given).
    """
    out = Path(out)
    if launched_world()[0] == 0:  # under torchrun, rank 0 holds the lock; the others never write
        _refuse_if_held(out)  # a live writer is named by its PID before anything else is said of the folder
    if resume:
        saved = Run(out)
        model_cfg, cfg = saved.model_config, resume_config(saved, model, train, defaults)
        data_set = saved.data()  # the same data, verified (manifest, token files, tokenizer)
    else:
        cfg, data_set = train or TrainConfig(), open_data(data if data is not None else "data/austen")
        model_cfg = dataclasses.replace(model or ModelConfig())
    objective = objective_for(cfg)
    check_data_kind(objective, data_set)
    if resume and objective.energy:  # it samples from its base all along: the same base, unchanged
        check_base_unchanged(saved)
    initial_weights = None
    if cfg.init_from and not resume:  # resumed: the checkpoint holds the weights
        if model is not None:
            raise ConfigError("train.init_from gives the model (its base run's); drop the model options")
        model_cfg, initial_weights = start_from(cfg.init_from, data_set, objective)  # checks the base
    elif not resume:
        objective.check_base(None)  # from scratch: refused by an objective that needs a base run
    model_cfg = dataclasses.replace(
        model_cfg,
        size=None,
        vocab_size=data_set.vocab_size,
        seq_len=data_set.seq_len,
        causal=objective.causal,
        energy_head=objective.energy,
    )
    if isinstance(data_set, InstructionData) and data_set.n_sequences("val") < 1:
        raise ConfigError(f"instruction folder {data_set.path} holds no validation conversation: prepare it again "
                          "with a --val file or a larger --val_share")  # fmt: skip
    if not isinstance(data_set, InstructionData) and data_set.n_tokens("val") < data_set.seq_len:
        # a loss "measured" on nothing would become the best
        raise ConfigError(
            f"data {data_set.path} holds {data_set.n_tokens('val')} validation tokens, fewer than one sequence "
            f"({data_set.seq_len}): prepare it again with data.val_tokens >= {data_set.seq_len} and documents to draw "
            f"them from (one text file is one document under --data.doc_split file: use blank or auto)"
        )
    budget = Budget.of(data_set, cfg)
    if resume:
        check_resumable(saved, budget)
    if budget.total_steps == 0:
        raise ConfigError(f"data {data_set.path} has no training sequences; prepare it with data.unique_tokens > 0")
    runtime = Runtime.create(cfg.runtime.device, cfg.runtime.threads, cfg.runtime.compile, cfg.runtime.parallel)
    if runtime.world_size > cfg.batch_size:
        raise ConfigError(
            f"{runtime.world_size} processes but train.batch_size={cfg.batch_size}: each needs a sequence"
        )
    if runtime.is_main:
        check_output_dir(out, checkpoint_bytes(model_cfg))
    with _writer_lock(out, resume) if runtime.is_main else contextlib.nullcontext():
        torch.manual_seed(cfg.seed)  # the same initial weights in every process
        net = Transformer(model_cfg)
        if initial_weights is not None:
            net.load_state_dict(initial_weights)
        net = net.to(runtime.device)
        net.activation_checkpointing = cfg.runtime.activation_checkpointing
        net = runtime.shard(net)
        state = TrainState(net, make_optimizer(net, cfg.optim), runtime, budget.steps_per_epoch, cfg.seed)
        checkpoints = Checkpoints(out, cfg.checkpoint.keep)
        if resume:
            restore(state, checkpoints, out, intervals(cfg, budget)[1])
        elif runtime.is_main:
            create_run_dir(out, data_set, model_cfg, cfg, budget)
        runtime.barrier()
        saver = RunSaver(out=out, runtime=runtime, checkpoints=checkpoints)
        Trainer(data=data_set, cfg=cfg, budget=budget, runtime=runtime, state=state, saver=saver, quiet=quiet,
                tensorboard=tensorboard, hooks=hooks).run()  # fmt: skip
    return out


def check_data_kind(objective, data_set) -> None:
    """Conversations for the fine-tuning objectives, token sequences for the others: only conversations carry a loss
    mask."""
    if objective.conversations and not isinstance(data_set, InstructionData):
        raise ConfigError(
            f"train.objective={objective.name} trains on conversations, but {data_set.path} is a token data folder "
            f"(unmask prepare): prepare an instruction folder with unmask finetune prepare BASE_RUN --out DIR and "
            f"pass it as --data"
        )
    if not objective.conversations and isinstance(data_set, InstructionData):
        raise ConfigError(
            f"train.objective={objective.name} trains on token sequences, but {data_set.path} is an instruction "
            f"folder (unmask finetune prepare): pass a folder from unmask prepare, or fine-tune: unmask finetune sft"
        )


def intervals(cfg: TrainConfig, budget: Budget) -> tuple[int, int]:
    """(validate every, checkpoint every) steps: about 20 validations per run unless set, a checkpoint at each."""
    eval_every = cfg.eval.every or max(1, budget.total_steps // 20)
    return eval_every, cfg.checkpoint.every or eval_every


def _writer_lock(out: Path, resume: bool) -> RunLock:
    """Lock the run directory for this process; a new run must find it absent or empty."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory; pick another --out")
    exists = f"run directory {out} already exists; pass --resume true to continue it or pick another --out"
    if not resume and _has_content(out):
        raise ConfigError(exists)
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out).acquire()
    if not resume and _has_content(out):  # another writer got there first and has finished
        lock.release()
        raise ConfigError(exists)
    return lock


def _refuse_if_held(out: Path) -> None:
    RunLock(out).check()  # raises naming the PID while another process holds it; writes nothing


def _has_content(out: Path) -> bool:
    return out.is_dir() and any(p.name != ".lock" for p in out.iterdir())


class Trainer:
    """The loop and its parts: the objective's loss, validation, checkpoints, metrics, hooks."""

    def __init__(
        self, *, data: TokenData | InstructionData, cfg: TrainConfig, budget: Budget, runtime: Runtime,
        state: TrainState, saver: RunSaver, quiet: bool = False, tensorboard: bool = True, hooks: Sequence[Hook] = (),
    ) -> None:  # fmt: skip
        self.out, self.data, self.cfg, self.budget, self.runtime = saver.out, data, cfg, budget, runtime
        self.state, self.saver, self.quiet, self.tensorboard, self.hooks = state, saver, quiet, tensorboard, hooks
        objective = objective_for(cfg)
        self.objective, self.specials = objective, Specials(data.mask_id, data.pad_id, data.eod_id)
        self.model = runtime.prepare_model(state.model)  # DDP-wrapped, compiled or not; state.model keeps the weights
        # reseeded per micro-batch (see noise_seed); on the host where the loss draws there (Objective.host_batches)
        self.generator = torch.Generator(objective.noise_device(runtime.device))
        self.loss_fn = objective.loss
        self.validate = partial(
            validation_loss,
            sequences=data.split("val"),
            objective=objective,
            specials=self.specials,
            mc_passes=cfg.eval.mc_passes,
            seed=cfg.seed,
            batch_size=cfg.eval.batch_size,
            autocast=runtime.autocast_enabled,
            byte_lengths=token_byte_lengths(data.tokenizer()),
        )
        self.eval_every, self.checkpoint_every = intervals(cfg, budget)
        self.stop_at = min(cfg.checkpoint.stop_at_step or budget.total_steps, budget.total_steps)
        self.bad_in_a_row, self.order, self.order_epoch = 0, None, -1
        self.next_batch: StepBatch | None = None

    def run(self) -> None:
        s, total = self.state, self.budget.total_steps
        if s.step >= total:
            return self.finish()
        self.metrics = self.metrics_writer()
        desc = f"{self.cfg.objective} E={self.cfg.epochs}"
        quiet = self.quiet or not self.runtime.is_main
        try:
            with StopSignals() as stop, progress_bar(desc, total=total, disable=quiet) as bar:
                bar.advance(s.step)
                t_last, tokens_since = time.perf_counter(), 0
                while s.step < self.stop_at:
                    t_step = time.perf_counter()
                    info, n_real = self.train_step()
                    s.train_seconds += time.perf_counter() - t_step
                    tokens_since += n_real
                    if s.step % self.eval_every == 0 or s.step == total:
                        info.val = self.validate_and_log()
                    saved = self.maybe_checkpoint()
                    now = time.perf_counter()
                    if now - t_last > 0.5 or s.step == self.stop_at:
                        bar.update(rate=f"{tokens_since / (now - t_last):,.0f} tok/s")
                        t_last, tokens_since = now, 0
                    val = "" if info.val is None else f" val {info.val.loss:.3f}"
                    bar.advance(
                        1, info=f"loss {info.loss:.3f}" + ("" if math.isfinite(info.loss) else " (skipped)") + val
                    )
                    for hook in self.hooks:
                        hook(info)
                    if self.runtime.all_sum([float(bool(stop.received))])[0]:  # checked last: a signal may
                        # arrive at any point of the step; under torchrun every process stops at the same step
                        if not saved:
                            self.saver.checkpoint(s)
                        raise TrainingStopped(
                            f"{stop.received}: stopped at step {s.step}/{total} with a checkpoint; "
                            f"continue with: {self.saver.resume_hint}"
                        )
        finally:
            self.metrics.close()

    def metrics_writer(self) -> MetricsWriter | NullMetrics:
        return MetricsWriter(self.out, self.tensorboard) if self.runtime.is_main else NullMetrics()

    def load_batch(self, step: int) -> StepBatch:
        """This process's micro-batches of the global batch of `step`: on the device (pinned, asynchronous copy), or
        left on the host for a loss that moves them itself (Objective.host_batches).

        Micro-batch k of the global batch goes to process k mod world_size and its noise is seeded by
        (seed, step, k): the same losses and gradients on any number of processes for one micro_batch_size.
        """
        cfg = self.cfg
        epoch, i = divmod(step, self.budget.steps_per_epoch)
        if self.order_epoch != epoch:
            self.order, self.order_epoch = self.data.epoch_order(epoch, cfg.seed), epoch
        batch = self.data.batch("train", self.order[i * cfg.batch_size : (i + 1) * cfg.batch_size])
        # Counted on the CPU copy of the global batch, before the move: no device sync.
        pad_id = self.specials.pad_id
        n_real, n_step = self.objective.real_tokens(batch, pad_id), self.objective.n_targets(batch, pad_id)
        world, rank = self.runtime.world_size, self.runtime.rank
        chunks = batch.split(cfg.micro_batch_size or -(-cfg.batch_size // world))
        mine = []
        for j in range(-(-len(chunks) // world)):
            k = j * world + rank
            # A process without a micro-batch in the last round repeats one with weight 0: collectives need all.
            weight = float(k < len(chunks))
            chunk = chunks[k if weight else 0]
            mine.append((k, weight, chunk if self.objective.host_batches else chunk.map(self.runtime.to_device)))
        return StepBatch(step, mine, n_real, n_step)

    def train_step(self) -> tuple[StepInfo, int]:
        """One optimiser step over one batch (micro-batches accumulated); never steps on a non-finite update."""
        s, cfg = self.state, self.cfg
        batch = self.next_batch if self.next_batch and self.next_batch.step == s.step else self.load_batch(s.step)
        lr = learning_rate(s.step, self.budget, cfg.optim)
        for group in s.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = accumulate_gradients(
            model=self.model, micro_batches=batch.micro_batches, loss_fn=self.loss_fn, specials=self.specials,
            generator=self.generator, runtime=self.runtime, seed=cfg.seed, step=s.step, n_step=batch.n_step,
        )  # fmt: skip
        if s.step + 1 < self.stop_at:  # the next batch is read (copied too, unless host_batches) as kernels finish
            self.next_batch = self.load_batch(s.step + 1)
        n_real, n_step = batch.n_real, batch.n_step
        loss = self.runtime.all_sum([float(loss_sum)])[0] / n_step  # host-device sync: one per step, for the log
        grad_norm, finite = apply_update(
            parameters=list(s.model.parameters()), optimizer=s.optimizer, grad_clip=cfg.optim.grad_clip, loss=loss
        )
        s.skipped_steps += not finite
        self.bad_in_a_row = 0 if finite else self.bad_in_a_row + 1
        s.step += 1
        s.tokens_seen += n_real
        self.metrics.log(
            {
                "step": s.step,
                "epoch": s.step / self.budget.steps_per_epoch,
                "loss": loss,
                "tokens_seen": s.tokens_seen,
                "lr": lr,
                "grad_norm": float(grad_norm),
                "skipped_steps": s.skipped_steps,
            }
        )
        if self.bad_in_a_row >= cfg.optim.max_bad_steps:
            raise TrainingError(
                f"loss or gradient was non-finite for {self.bad_in_a_row} steps in a row "
                f"(steps {s.step - self.bad_in_a_row + 1}-{s.step}, all skipped); last good checkpoint: "
                f"{self.saver.last_good()}; lower --train.optim.lr or check the data, then resume or restart"
            )
        return StepInfo(s.step, self.budget.total_steps, loss if finite else math.nan, lr), n_real

    def validate_and_log(self) -> ValidationLoss:
        """Validate; keep the best weights; at the last step add the run's result with final_mc_passes."""
        s = self.state
        val = self.runtime.from_main(self.validate(self.model))  # every process validates (FSDP2 needs all)
        if val.loss < s.best_val:
            s.best_val = val.loss
            self.saver.save_weights(s.model, "best")
        record = {
            "step": s.step,
            "epoch": s.step / self.budget.steps_per_epoch,
            "val_loss": val.loss,
            "val_stderr": val.stderr,
            "best_val_loss": s.best_val,
        }
        if s.step == self.budget.total_steps:
            record |= self.final_estimate(val)
        self.metrics.log(record)
        return val

    def final_estimate(self, val: ValidationLoss) -> dict:
        """The run's reported result: a bound again with final_mc_passes (the curve's few passes are ±0.1 nats)."""
        precise = val
        if val.stderr is not None and self.cfg.eval.final_mc_passes != self.cfg.eval.mc_passes:
            precise = self.runtime.from_main(self.validate(self.model, mc_passes=self.cfg.eval.final_mc_passes))
        return {
            "final_val_loss": precise.loss,
            "final_val_stderr": precise.stderr,
            "final_bits_per_byte": precise.bits_per_byte,
            "train_seconds": self.state.train_seconds,  # optimiser steps only, summed over resumes
        }

    def maybe_checkpoint(self) -> bool:
        step = self.state.step
        periodic = step % self.checkpoint_every == 0 and self.bad_in_a_row == 0  # not mid-way through a blow-up
        saved = periodic or step in (self.stop_at, self.budget.total_steps)
        if saved:
            self.saver.checkpoint(self.state)
        return saved

    def finish(self) -> None:
        """A finished run resumed: repair what a kill after the last checkpoint may have left incomplete."""
        self.saver.repair_last_weights(self.state.model)
        if not any("final_val_loss" in r for r in Run(self.out).metrics()):
            self.metrics = self.metrics_writer()
            try:
                self.validate_and_log()
            finally:
                self.metrics.close()


class NullMetrics:
    """The metrics writer of processes other than rank 0: only rank 0 writes run files."""

    def log(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass
