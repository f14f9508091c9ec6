"""`unmask train`: one run from a data folder, a model size and a training config."""

from __future__ import annotations

from unmask.config import ModelConfig, TrainConfig


def train(
    data: str = "data/austen",
    out: str = "runs/run",
    model: ModelConfig = ModelConfig(),
    train: TrainConfig = TrainConfig(),
    resume: bool = False,
    tensorboard: bool = True,
) -> str:
    """Train one model (AR, MDM or AR with N orderings) for E epochs over the prepared unique tokens.

    Args:
        data: Prepared data folder (from unmask prepare).
        out: Run directory to create (or to continue with --resume true).
        model: Model size and shape.
        train: Objective, epochs, optimiser and schedule.
        resume: Continue the run in --out from its newest verified checkpoint (its saved config wins); a run
            stopped by SIGTERM/Ctrl-C (checkpoint at the step boundary, exit 0) or killed resumes bitwise.
        tensorboard: Also write TensorBoard scalars to OUT/tb.
    """
    from unmask.training import train as train_run

    path = train_run(data=data, out=out, model=model, train=train, resume=resume, tensorboard=tensorboard)
    return announced(path)


def announced(path) -> str:
    """Print a finished (or stopped) run's result line under torchrun's rank 0 only; return its path."""
    from unmask.run import result_lines
    from unmask.runtime import launched_world

    if launched_world()[0] == 0:
        print("\n".join(result_lines(path=path)))
    return str(path)
