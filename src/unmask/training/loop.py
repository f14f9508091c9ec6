"""The training loop shared by every objective: one run, E epochs over U unique tokens.

`train` opens (or resumes) a run directory and hands a `Trainer` the pieces: the runtime
(device, threads, precision, compile), the objective's loss, the `TrainState` (checkpoint
format), the metrics writer and validation. `Trainer.run` is the loop, readable on one
screen; per-step hooks let sweeps and fine-tuning reuse it rather than copy it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from unmask.checkpoint import Checkpoints, RunLock, check_output_dir
from unmask.config import ConfigError, ModelConfig, TrainConfig, UnmaskError
from unmask.data.dataset import TokenData
from unmask.model import Transformer, count_params, read_weights, save_model
from unmask.objectives import Specials, get_objective
from unmask.objectives.validation import ValidationLoss, token_byte_lengths, validation_loss
from unmask.progress import progress_bar
from unmask.run import Run
from unmask.runtime import Runtime
from unmask.training.metrics import MetricsWriter, truncate_metrics
from unmask.training.optim import Budget, learning_rate, make_optimizer
from unmask.training.rundir import check_resumable, create_run_dir, resume_config
from unmask.training.signals import StopSignals, TrainingStopped
from unmask.training.state import TrainState


class TrainingError(UnmaskError):
    """The run could not go on (numerical blow-up, disk full); the message names the last good checkpoint."""


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


def train(
    data: str | Path | None,
    out: str | Path,
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    resume: bool = False,
    quiet: bool = False,
    tensorboard: bool = True,
    hooks: Sequence[Hook] = (),
) -> Path:
    """Train one run into `out`; with `resume`, continue the run saved there. Returns `out`.

    On resume the run's saved config wins; only runtime controls (stop_at_step, device, threads,
    compile) are taken from `train`, and any other value that differs from the saved one is refused.
    """
    out = Path(out)
    _refuse_if_held(out)  # a live writer is named by its PID before anything else is said of the folder
    if resume:
        saved = Run(out)
        model_cfg, cfg = saved.model_config, resume_config(saved, model, train)
        data_set = saved.data()  # the same data, verified (manifest, token files, tokenizer)
    else:
        cfg, data_set = train or TrainConfig(), TokenData(data if data is not None else "data/austen")
        model_cfg = dataclasses.replace(model or ModelConfig())
    objective = get_objective(cfg.objective)
    model_cfg = dataclasses.replace(
        model_cfg, size=None, vocab_size=data_set.vocab_size, seq_len=data_set.seq_len, causal=objective.causal
    )
    if data_set.n_tokens("val") < data_set.seq_len:  # a loss "measured" on nothing would become the best
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
    runtime = Runtime.create(cfg.device, cfg.threads, cfg.compile)
    check_output_dir(out, checkpoint_bytes(model_cfg))
    with _writer_lock(out, resume):
        torch.manual_seed(cfg.seed)
        net = Transformer(model_cfg).to(runtime.device)
        generator = torch.Generator(runtime.device).manual_seed(cfg.seed + 1)  # the objective's noise
        state = TrainState(net, make_optimizer(net, cfg), generator, budget.steps_per_epoch, cfg.seed)
        checkpoints = Checkpoints(out, cfg.keep_checkpoints)
        if resume:
            _restore(state, checkpoints, out)
        else:
            create_run_dir(out, data_set, model_cfg, cfg, budget)
        trainer = Trainer(out, data_set, cfg, budget, runtime, state, checkpoints, quiet, tensorboard, hooks)
        trainer.run()
    return out


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


def _restore(state: TrainState, checkpoints: Checkpoints, out: Path) -> None:
    """Load the newest verified checkpoint; refuse to restart a run that made progress but lost them all."""
    loaded = checkpoints.load_latest()
    if loaded is None:
        logged = [r["step"] for r in Run(out).metrics()]
        if logged:
            raise ConfigError(
                f"run {out} logged {max(logged)} steps but has no checkpoint to resume from "
                f"(checkpoints/ was deleted?); it cannot continue, start it again with a new --out"
            )
    else:
        state.load_state_dict(*loaded)
    truncate_metrics(out, state.step)  # drop what was logged after the checkpoint


class Trainer:
    """The loop and its parts: the objective's loss, validation, checkpoints, metrics, hooks."""

    def __init__(self, out, data, cfg, budget, runtime, state, checkpoints, quiet, tensorboard, hooks):
        self.out, self.data, self.cfg, self.budget, self.runtime = out, data, cfg, budget, runtime
        self.state, self.checkpoints, self.quiet, self.tensorboard, self.hooks = (
            state,
            checkpoints,
            quiet,
            tensorboard,
            hooks,
        )
        objective = get_objective(cfg.objective)
        self.objective, self.specials = objective, Specials(mask_id=data.mask_id, pad_id=data.pad_id)
        self.model = runtime.prepare_model(state.model)  # compiled or not; state.model keeps the weights
        self.loss_fn = objective.make_loss(cfg, data.seq_len)
        self.validate = partial(
            validation_loss,
            sequences=data.split("val"),
            objective=objective,
            specials=self.specials,
            train_cfg=cfg,
            mc_passes=cfg.eval_mc_passes,
            seed=cfg.seed,
            batch_size=cfg.eval_batch_size,
            autocast=runtime.autocast_enabled,
            byte_lengths=token_byte_lengths(data.tokenizer()),
        )
        self.eval_every = cfg.eval_every or max(1, budget.total_steps // 20)
        self.checkpoint_every = cfg.checkpoint_every or self.eval_every
        self.stop_at = min(cfg.stop_at_step or budget.total_steps, budget.total_steps)
        self.resume_hint = f"unmask train --out {out} --resume true"
        self.bad_in_a_row, self.order = 0, None

    def run(self) -> None:
        s, total = self.state, self.budget.total_steps
        if s.step >= total:
            return self.finish()
        self.metrics = MetricsWriter(self.out, self.tensorboard)
        desc = f"{self.cfg.objective} E={self.cfg.epochs}"
        try:
            with StopSignals() as stop, progress_bar(desc, total=total, disable=self.quiet) as bar:
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
                    if stop.received:  # checked last: a signal may arrive at any point of the step
                        if not saved:
                            self.checkpoint()
                        raise TrainingStopped(
                            f"{stop.received}: stopped at step {s.step}/{total} with a checkpoint; "
                            f"continue with: {self.resume_hint}"
                        )
        finally:
            self.metrics.close()

    def train_step(self) -> tuple[StepInfo, int]:
        """One optimiser step over one batch (micro-batches accumulated); never steps on a non-finite update."""
        s, cfg = self.state, self.cfg
        epoch, i = divmod(s.step, self.budget.steps_per_epoch)
        if self.order is None or i == 0:
            self.order = self.data.epoch_order(epoch, cfg.seed)
        x = self.data.batch("train", self.order[i * cfg.batch_size : (i + 1) * cfg.batch_size])
        # Counted on the CPU copy, before the move: no device sync.
        n_real, n_step = int((x != self.specials.pad_id).sum()), self.objective.n_targets(x, self.specials.pad_id)
        x = x.to(self.runtime.device)
        lr = learning_rate(s.step, self.budget, cfg)
        for group in s.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = 0.0
        for xm in x.split(cfg.micro_batch_size or cfg.batch_size):
            with self.runtime.autocast():
                out = self.loss_fn(self.model, xm, self.specials, s.generator)
            (out.loss_sum / n_step).backward()
            loss_sum += out.loss_sum.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(s.model.parameters(), cfg.grad_clip or float("inf"))
        loss = float(loss_sum) / n_step  # host-device sync: one per step, for the log
        finite = math.isfinite(loss) and bool(torch.isfinite(grad_norm))
        if finite:  # the weights and Adam moments stay clean
            s.optimizer.step()
        s.skipped_steps += not finite
        self.bad_in_a_row = 0 if finite else self.bad_in_a_row + 1
        s.optimizer.zero_grad(set_to_none=True)
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
        if self.bad_in_a_row >= cfg.max_bad_steps:
            raise TrainingError(
                f"loss or gradient was non-finite for {self.bad_in_a_row} steps in a row "
                f"(steps {s.step - self.bad_in_a_row + 1}-{s.step}, all skipped); last good checkpoint: "
                f"{self.last_good()}; lower --train.lr or check the data, then resume or restart"
            )
        return StepInfo(s.step, self.budget.total_steps, loss if finite else math.nan, lr), n_real

    def validate_and_log(self) -> ValidationLoss:
        """Validate; keep the best weights; at the last step add the run's result with final_mc_passes."""
        s = self.state
        val = self.validate(self.model)
        if val.loss < s.best_val:
            s.best_val = val.loss
            self._save_weights("best")
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
        if val.stderr is not None and self.cfg.final_mc_passes != self.cfg.eval_mc_passes:
            precise = self.validate(self.model, mc_passes=self.cfg.final_mc_passes)
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
            self.checkpoint()
        return saved

    def checkpoint(self) -> None:
        step = self.state.step
        try:
            # last.safetensors first: a kill between the two leaves the previous checkpoint listed, and its
            # resume redoes the step, so the final weights are never older than the newest checkpoint.
            self._save_weights("last")
            self.checkpoints.save(step, self.state.state_dict())
        except TrainingError:
            raise
        except Exception as e:  # disk full: OSError, or torch.save's RuntimeError from its C++ writer
            raise self._disk_error(f"the checkpoint of step {step}", e) from None

    def _save_weights(self, which: str) -> None:
        try:
            save_model(self.state.model, self.out / f"{which}.safetensors")
        except Exception as e:  # safetensors raises its own error types on a full disk
            raise self._disk_error(f"{which}.safetensors", e) from None

    def _disk_error(self, what: str, e: Exception) -> TrainingError:
        for tmp in [*self.out.glob("*.tmp"), *self.checkpoints.dir.glob("*.tmp")]:
            tmp.unlink(missing_ok=True)
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        return TrainingError(
            f"could not save {what} in {self.out} ({reason}); last good checkpoint: {self.last_good()}; "
            f"free space, then: {self.resume_hint}"
        )

    def last_good(self) -> str:
        latest = self.checkpoints.latest()
        return (
            f"{self.checkpoints.dir / latest['file']} (step {latest['step']})" if latest else "none (no checkpoint yet)"
        )

    def finish(self) -> None:
        """A finished run resumed: repair what a kill after the last checkpoint may have left incomplete."""
        if not _holds_weights(self.out / "last.safetensors", self.state.model):
            self._save_weights("last")  # the final step's weights, from its checkpoint
        if not any("final_val_loss" in r for r in Run(self.out).metrics()):
            self.metrics = MetricsWriter(self.out, self.tensorboard)
            try:
                self.validate_and_log()
            finally:
                self.metrics.close()


def _holds_weights(path: Path, model: torch.nn.Module) -> bool:
    """Does the safetensors file at `path` hold exactly the weights of `model`?"""
    try:
        saved = read_weights(path)
    except ConfigError:  # missing or torn: it does not
        return False
    state = model.state_dict()
    return saved.keys() == state.keys() and all(torch.equal(saved[k], v.cpu()) for k, v in state.items())


def checkpoint_bytes(model_cfg: ModelConfig) -> int:
    """Disk one checkpoint needs: fp32 weights + two AdamW moments, plus last/best safetensors, + 10%."""
    return int(count_params(model_cfg) * 4 * (3 + 2) * 1.1) + (1 << 20)
