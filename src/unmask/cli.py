"""The `unmask` command line: plain typed functions, parsed by jsonargparse.

Every command reads `--config FILE.yaml`, takes dotted overrides such as
`--train.lr 1e-3`, and is also a Python function. User errors become one line
on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import errno
import json as jsonlib
import os
import sys
from pathlib import Path
from typing import Literal

from unmask.config import (
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
    UnmaskError,
    check,
    check_output_file,
    os_reason,
)
from unmask.demo import DemoConfig
from unmask.evaluation.config import LikelihoodConfig
from unmask.finetune_cli import COMMANDS as FINETUNE_COMMANDS
from unmask.finetune_cli import announced
from unmask.hub_cli import FLAG_ALIASES, export, import_checkpoint
from unmask.sampling.config import SamplerConfig


def prepare(
    inputs: list[str] | None = None,
    out: str = "data/austen",
    data: DataConfig = DataConfig(),
    overwrite: bool = False,
) -> str:
    """Corpus → tokenizer + token shards with an exact unique-token budget and a validation split.

    Args:
        inputs: Files or folders (text, JSONL, parquet, saved HF datasets); none = the embedded Austen corpus.
        out: Output folder (tokenizer.json, train.bin, val.bin, manifest.json).
        data: Tokenizer, budget and split settings.
        overwrite: Replace an existing output folder that `unmask prepare` wrote (any other folder is refused).
    """
    from unmask.data.prepare import prepare as run_prepare

    if inputs:
        data = dataclasses.replace(data, inputs=list(inputs))
    path = run_prepare(data, out, overwrite=overwrite)
    m = jsonlib.loads((path / "manifest.json").read_text())
    print(
        f"{path}: {m['unique_tokens']:,} training tokens ({m['n_train_sequences']} sequences of {m['seq_len']}), "
        f"{m['val_tokens']:,} validation tokens, vocabulary {m['tokenizer_vocab_size']}, "
        f"{m['encode_tokens_per_s']:,} tokens/s"
    )
    return str(path)


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
    from unmask.training import train as run_train

    return announced(run_train(data, out, model, train, resume=resume, tensorboard=tensorboard))


def evaluate(
    runs: list[str] | str,
    which: Literal["best", "last"] = "last",
    mc_passes: int | None = 32,
    seed: int = 0,
    tasks: list[str] | str | None = None,
    likelihood: LikelihoodConfig = LikelihoodConfig(),
    delimiter: str = " ",
    limit: int | None = None,
    validation: bool = True,
    out: str | None = None,
    device: str = "auto",
    json: bool = False,
    text: list[str] | None = None,
) -> dict:
    """Every metric of one run, or of several side by side: validation NLL/ELBO and bits per byte, zero-shot tasks.

    `unmask eval RUN`, `unmask eval RUN_A RUN_B ...` (or `unmask eval compare RUN_A RUN_B ...`): one table,
    one column per run. MDM losses are ELBOs (upper bounds on the NLL) ± standard error over MC passes.

    Args:
        runs: Run directories (a leading word 'compare' is allowed).
        which: Weights to score: last (the run's final weights: its result) or best (the lowest point of the
            validation curve: an early-stopped result, labelled as such).
        mc_passes: MDM Monte Carlo passes of the validation ELBO (fixed seed); None = the run's training setting.
        seed: Seed of the MDM validation noise.
        tasks: Zero-shot multiple-choice JSONL file(s), e.g. --tasks a.jsonl b.jsonl (context, choices, label or
            gold_text): acc, acc_norm, 95% CI.
        likelihood: How MDM scores each choice (AR is exact): estimator, MC samples, guidance.
        delimiter: Text between the context and each choice (lm-eval's target_delimiter).
        limit: Score only the first N items of each task.
        validation: Compute the validation loss on the run's data folder (skipped with a note when it is gone
            and --tasks are given).
        text: Score these UTF-8 text files instead of the validation split (the run's own tokenizer; each file one
            document): NLL or ELBO per token and bits per byte. Works on a run directory copied alone.
        out: Also write OUT.csv (one row per run) and OUT.json (everything, per-item scores included).
        device: 'auto', 'cpu' or 'cuda'.
        json: Print one JSON object instead of a table.
    """
    from unmask.evaluation.compare import evaluate_run, print_table, write_outputs

    runs = [runs] if isinstance(runs, str) else list(runs)
    tasks = [tasks] if isinstance(tasks, str) else tasks
    text = [text] if isinstance(text, str) else text
    if runs[:1] == ["compare"]:
        runs = runs[1:]
    if not runs:
        raise ConfigError("unmask eval needs at least one run directory, e.g. unmask eval runs/mdm-E64")
    for suffix in (".csv", ".json") if out else ():
        check_output_file("--out", str(Path(out).with_suffix(suffix)), make_parents=True)
    results = [
        evaluate_run(r, which, mc_passes, seed, tasks, likelihood, device, delimiter, limit, validation, not json, text)
        for r in runs
    ]
    written = write_outputs(results, out) if out else []
    if json:
        print(jsonlib.dumps(results[0] if len(results) == 1 else {"runs": results}))
    else:
        print_table(results)
        for path in written:
            print(f"wrote {path}")
    return results[0] if len(results) == 1 else {"runs": results}


def sample(
    run: str,
    prompt: str = "",
    length: int = 48,
    n: int = 1,
    seed: int = 0,
    which: Literal["best", "last"] = "last",
    sampler: SamplerConfig = SamplerConfig(),
    energy_run: str | None = None,
    blank_length: int = 8,
    mask_spans: list[str] | None = None,
    trace: str | None = None,
    metrics: bool = False,
    judge_run: str | None = None,
    device: str = "auto",
    json: bool = False,
    chat: bool = False,
) -> dict:
    """Generate or infill text from a run: AR decoding, or any MDM sampler (see --sampler.commit.method).

    Args:
        run: Run directory.
        prompt: Text to continue; each ____ (4+ underscores) is a blank of --blank_length tokens to infill (MDM).
        length: Tokens to generate after the prompt (0 with blanks: only infill).
        n: Number of samples.
        seed: Sampling seed.
        which: Weights to use: last (final, the default) or best (early-stopped).
        sampler: Token distribution (AR and MDM: temperature, top_k, top_p) and the MDM families: commit (method,
            steps, block_length, threshold), cache, conv, energy. Flat flags such as --sampler.method still work.
        energy_run: EDLM's energy (MDM, --sampler.commit.method ancestral): an energy run (unmask finetune energy)
            or an AR run whose likelihood is the energy.
        blank_length: Mask tokens per ____ blank in the prompt.
        mask_spans: Spans START-END (END excluded) of prompt token positions to mask and infill, e.g. [3-7,10-12].
        trace: Write the denoising trace here (JSONL: per step, the positions committed and their tokens).
        metrics: Also print text quality (rep-n, distinct-n, unigram entropy, EOS rate; gen. PPL with a judge run).
        judge_run: AR run scoring generative perplexity for --metrics (default: --energy_run, if an AR run).
        device: 'auto', 'cpu' or 'cuda'.
        json: Print one JSON object instead of text.
        chat: Answer --prompt as the user's turn of the chat template (a run from unmask finetune sft), stopping
            at end-of-text; for a fine-tuned MDM, semi-AR blocks (--sampler.commit.block_length 8) work best.
    """
    from unmask.sampling.text import decode

    check_output_file("--trace", trace)
    gen = decode(
        run, prompt, n, length, sampler, seed, which, device, energy_run, blank_length, mask_spans, trace, chat
    )
    out = gen.output
    result = {
        "run": run,
        "objective": gen.objective,
        "texts": gen.texts,
        "steps": len(out.history),
        "forward_passes": out.forward_passes,
        "energy_passes": out.energy_passes,
        "seconds": gen.seconds,
    }
    if metrics:
        from unmask.bench import quality_of
        from unmask.run import Run

        judge = judge_run or (energy_run if energy_run and not Run(energy_run).objective.energy else None)
        result["metrics"] = quality_of(gen, judge, device)
    if json:
        print(jsonlib.dumps(result))
        return result
    for text in gen.texts:
        print(text)
        print("---")
    print(
        f"{n} sample(s), {len(out.history)} steps, {out.forward_passes} forward passes, "
        f"{gen.seconds:.2f} s" + (f"; trace written to {trace}" if trace else ""),
        file=sys.stderr,
    )
    if metrics:
        print(
            "  ".join(f"{k} {v:.4g}" for k, v in result["metrics"].items() if isinstance(v, float | int)),
            file=sys.stderr,
        )
    return result


def demo(config: DemoConfig | None = None) -> dict:
    """The main job: AR vs MDM on a small unique-token budget for several epoch counts, on CPU."""
    from unmask.demo import demo as run_demo

    return run_demo(config)


def bench(
    what: Literal["train", "prepare", "sample", "memory"],
    steps: int = 30,
    threads: int = 0,
    against: Literal["none", "reference"] = "none",
    repeats: int = 5,
    compile: bool = False,
    peak_tflops: float | None = None,
    size: str = "demo",
    batch_size: int = 16,
    seq_len: int = 64,
    vocab_size: int = 1024,
    prepare_mb: int = 64,
    run: str | None = None,
    judge_run: str | None = None,
    length: int = 256,
    samples: int = 8,
    temperature: float = 1.0,
    threshold: float = 0.9,
    methods: list[str] | None = None,
    device: str = "cpu",
    activation_checkpointing: bool = False,
    energy_run: str | None = None,
    json: str | None = None,
) -> dict:
    """Throughput: training tokens/s of AR and MDM, `unmask prepare` tokens/s, or every sampler's tokens/s and quality;
    or the estimated peak memory of a training step on a GPU ('memory', computed on any machine).

    Args:
        what: 'train', 'prepare', 'sample' or 'memory' (AR and MDM training steps at --size, --seq_len, micro-batch
            --batch_size and --vocab_size, traced on fake tensors: parameters, AdamW moments, activations, total).
        steps: train: timed optimiser steps per objective and repeat (after 5 warm-up steps).
        threads: torch CPU threads; 0 = torch's default (sample: 1, so figures compare per core).
        against: train: 'reference' also times a nanoGPT-style GPT of the same shape, interleaved, and prints the
            paired ratios unmask / reference (median and range over the repeats), raw and per FLOP.
        repeats: train: fresh processes per side, interleaved with the order rotating.
        compile: train: torch.compile every side.
        peak_tflops: train: the device's dense bf16 peak for MFU (default: a table of common GPUs; none on CPUs).
        size: Model size (unmask.model.SIZES).
        batch_size: Sequences per step.
        seq_len: Tokens per sequence.
        vocab_size: Vocabulary size of the synthetic batch.
        prepare_mb: Corpus size for the prepare benchmark (the embedded corpus repeated).
        run: sample: the MDM run whose samplers are compared.
        judge_run: sample: an AR run (same tokenizer) for generative perplexity, EDLM's energy and a reference row.
        length: sample: tokens generated per sequence, equal for every method.
        samples: sample: sequences per method (one batch).
        temperature: sample: sampling temperature of every method.
        threshold: sample: confidence threshold of the threshold (Fast-dLLM) rows.
        methods: sample: rows to run (default all): ancestral, low_confidence, random, semi_ar_b32, threshold_b32,
            threshold_b32_prefix, threshold_b32_dual, low_confidence_S/4, conv_S/4, edlm (with --judge_run),
            edlm_nce (with --energy_run).
        device: 'cpu', 'cuda' or 'auto' (train and sample).
        activation_checkpointing: memory: with each block's activations recomputed in backward.
        energy_run: sample: an energy run (unmask finetune energy) of the MDM run, EDLM's energy in the edlm_nce row.
        json: train, sample and memory: also write the results to this JSON file.
    """
    import shutil
    import tempfile

    from unmask.bench import bench_memory, bench_prepare, bench_sample, bench_train

    check(0 <= threads <= 4096, f"threads={threads}: must be in [0, 4096] (0 = torch's default)")
    if what == "prepare":
        free = shutil.disk_usage(tempfile.gettempdir()).free
        check(prepare_mb >= 1, f"prepare_mb={prepare_mb}: must be >= 1")
        check(2 * prepare_mb * 10**6 <= free, f"prepare_mb={prepare_mb}: needs ~{2 * prepare_mb:,} MB of temporary "
              f"disk, {free // 10**6:,} MB free")  # fmt: skip
        return bench_prepare(prepare_mb)
    check_output_file("--json", json)
    if what == "sample":
        check(bool(run), "bench sample needs --run (an MDM run directory)")
        check(length >= 1 and samples >= 1, f"length={length}, samples={samples}: both must be >= 1")
        result = bench_sample(run, judge_run, length, samples, temperature, threshold, methods,
                              threads=threads or 1, device=device, energy_run=energy_run)  # fmt: skip
    else:
        check(1 <= steps <= 100_000, f"steps={steps}: must be in [1, 100000]")
        check(batch_size >= 1 and 4 <= vocab_size <= 2**24, f"batch_size={batch_size}, vocab_size={vocab_size}: "
              f"need batch_size >= 1 and vocab_size in [4, 2**24]")  # fmt: skip
        ModelConfig(size=size, vocab_size=vocab_size, seq_len=seq_len)  # names a bad size or seq_len before any work
        check(batch_size * seq_len <= 2**24, f"batch_size x seq_len = {batch_size * seq_len:,} tokens: must be <= "
              f"2**24")  # fmt: skip
        if what == "memory":
            result = bench_memory(size, seq_len, batch_size, vocab_size, activation_checkpointing)
        else:
            check(1 <= repeats <= 1000, f"repeats={repeats}: must be in [1, 1000]")
            check(peak_tflops is None or peak_tflops > 0, f"peak_tflops={peak_tflops}: must be > 0")
            from unmask.runtime import resolve_device

            resolve_device(device)  # names a missing GPU before any work
            result = bench_train(size, seq_len, batch_size, vocab_size, steps, threads, device, compile, against,
                                 repeats, peak_tflops=peak_tflops)  # fmt: skip
    if json:
        from unmask.checkpoint import atomic_write_text

        atomic_write_text(Path(json), jsonlib.dumps(result, indent=2))
    return result


def study(
    action: Literal["run", "fit", "report", "verify"],
    study_config: str,
    retry: bool = False,
    workers: int | None = None,
    n_boot: int = 200,
    points: str = "verdict",
    tolerance: float = 5e-3,
    seed: int = 0,
    work: str | None = None,
) -> object:
    """The data-constrained study: a grid of runs (local processes or Ray), the scaling-law fit, the report.

    `unmask study run CONFIG` trains every point (resumable: finished points are skipped, unfinished ones
    resumed), `unmask study fit CONFIG` fits the data-constrained law per objective (R_D*, C_crit(U)) with
    bootstrap intervals, `unmask study report CONFIG` writes figures, a Markdown + HTML report, the results
    table and a stamp (commit, command, config hash, machine) into OUT/report/. `unmask study verify REPORT_DIR`
    re-runs points of a committed report from its stamp and table, prints which reproduce, and exits 1 if any
    does not.

    Args:
        action: 'run', 'fit', 'report' or 'verify'.
        study_config: Study YAML (see configs/studies/); for verify, a report folder (e.g. docs/study/mini).
        retry: run: also retry the points that failed before (they are skipped otherwise).
        workers: run, verify: parallel runs on the local runner (default: the config's; 0 = one per CPU core).
        n_boot: fit: bootstrap resamples for the 95% intervals (0 = none).
        points: verify: 'verdict' (the runs the report's verdicts rest on), 'all', a number K (K points drawn
            at random with --seed) or comma-separated point names.
        tolerance: verify: a re-run's final loss within this many nats of the table's reproduces it (the
            same machine type and torch build give 0; another CPU's rounding can differ slightly).
        seed: verify: seed of the random choice of --points K.
        work: verify: folder for the re-runs (kept); default a temporary folder removed afterwards.
    """
    from unmask.study.pipeline import fit_study, report_study, run_study

    if action == "run":
        return run_study(study_config, retry=retry, workers=workers)
    if action == "fit":
        return fit_study(study_config, n_boot=n_boot)
    if action == "verify":
        from unmask.study.verify import StudyNotReproduced, verify_study

        checks = verify_study(study_config, points, tolerance, seed, workers, work)
        if any(c.problem for c in checks):
            raise StudyNotReproduced(f"{sum(bool(c.problem) for c in checks)} of {len(checks)} points do not reproduce")
        return checks
    return str(report_study(study_config))


def serve(
    runs: list[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    insecure: bool = False,
    which: Literal["best", "last"] = "last",
    device: str = "auto",
    threads: int = 0,
    max_batch: int = 8,
    max_queue: int = 32,
    batch_window_ms: float = 20.0,
    timeout: float = 60.0,
    max_tokens: int = 256,
) -> None:
    """Serve runs over HTTP: OpenAI-style completions, infilling, live denoising streams and a web page at /.

    `unmask serve RUN [RUN ...]` loads each run directory read-only (safetensors) under its folder name and
    serves them until interrupted. Needs the serve extra: pip install -e '.[serve]'.

    Args:
        runs: Run directories (AR and MDM runs alike).
        host: Address to bind (loopback by default; any other needs --token or --insecure true).
        port: TCP port.
        token: Bearer token the /v1 endpoints require (default: $UNMASK_SERVE_TOKEN, else none).
        insecure: Allow a non-loopback --host without a token.
        which: Weights of every run: last (final) or best (early-stopped).
        device: 'auto', 'cpu' or 'cuda'.
        threads: torch CPU threads for generation; 0 = torch's default.
        max_batch: Sequences decoded at once; requests that arrive together share one batch.
        max_queue: Requests that may wait; beyond it 429 with Retry-After.
        batch_window_ms: How long a batch's first request waits for others to join.
        timeout: Seconds a request may take, queueing included (503 never started, 504 ran over).
        max_tokens: Largest max_tokens a request may ask for.
    """
    from unmask.serve.config import ServeConfig

    cfg = ServeConfig(
        host=host,
        port=port,
        token=token if token is not None else os.environ.get("UNMASK_SERVE_TOKEN") or None,
        insecure=insecure,
        which=which,
        device=device,
        threads=threads,
        max_batch=max_batch,
        max_queue=max_queue,
        batch_window_ms=batch_window_ms,
        timeout=timeout,
        max_tokens=max_tokens,
    )
    check(len(runs) > 0, "serve needs at least one run directory: unmask serve RUN [RUN ...]")
    try:
        from unmask.serve.app import serve as run_server
    except ImportError as e:
        raise ConfigError(f"unmask serve needs the serve extra ({e.name} is missing): pip install '.[serve]'") from None
    run_server(list(runs), cfg)


COMMANDS = {
    "prepare": prepare,
    "train": train,
    "eval": evaluate,
    "sample": sample,
    "demo": demo,
    "bench": bench,
    "study": study,
    "serve": serve,
    "finetune": FINETUNE_COMMANDS,
    "import": import_checkpoint,
    "export": export,
}
GROUP_HELP = {"finetune": "Fine-tuning: instruction folders, SFT, R2FT, task metrics, the shipped instruction set."}
FLAT_CONFIGS = {"demo": DemoConfig}
VARIADIC_HELP = {"inputs": "Files or folders; none = the embedded corpus.", "runs": "Run directories."}
# `unmask prepare a.txt b.jsonl`, `unmask eval A B`, `unmask serve A B`
VARIADIC_POSITIONALS = {"prepare": "inputs", "eval": "runs", "serve": "runs"}  # and `unmask finetune eval A B`


def build_parser():
    from jsonargparse import ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog="unmask", description="Masked diffusion vs autoregressive LMs.", exit_on_error=False)
    _add_commands(parser, COMMANDS)
    return parser


def _add_commands(parser, commands: dict) -> None:
    """A subcommand per entry: a function's parameters are its options; a dict is a group (unmask finetune sft)."""
    import inspect

    from jsonargparse import ArgumentParser

    subcommands = parser.add_subcommands(required=True, dest="command")
    for name, fn in commands.items():
        sub = ArgumentParser(exit_on_error=False)
        if isinstance(fn, dict):  # jsonargparse wants the group added before its own subcommands
            subcommands.add_subcommand(name, sub, help=GROUP_HELP[name])
            _add_commands(sub, fn)
            continue
        sub.add_argument("--config", action="config", help="YAML file with any of the options below.")
        if name in FLAT_CONFIGS:  # the command's one dataclass parameter: its fields are the options
            sub.add_class_arguments(FLAT_CONFIGS[name], nested_key=None, as_group=False)
        else:
            variadic = VARIADIC_POSITIONALS.get(name)
            variadic = variadic if variadic in inspect.signature(fn).parameters else None
            if variadic:
                sub.add_argument(variadic, nargs="*", type=str, default=[], help=VARIADIC_HELP[variadic])
            sub.add_function_arguments(fn, as_group=False, as_positional=True, skip={variadic} if variadic else None)
        subcommands.add_subcommand(name, sub, help=(fn.__doc__ or "").splitlines()[0])


def _chosen(init, commands: dict):
    """(command function, its keyword arguments) of a parsed command line, through any groups."""
    name = init.command
    fn, node = commands[name], init[name]
    if isinstance(fn, dict):
        return _chosen(node, fn)
    return fn, name, {k: v for k, v in vars(node).items() if k != "config"}


LIST_OPTIONS = ("--tasks", "--text", "--mask_spans", "--methods", "--ar_epochs", "--mdm_epochs")
"""Options that take several values: `--tasks a.jsonl b.jsonl` (jsonargparse itself wants a JSON list)."""
MAX_ERROR_CHARS = 600


def gather_lists(argv: list[str]) -> list[str]:
    """`--tasks a b` → `--tasks ["a", "b"]`; values run up to the next option (put positionals first)."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in LIST_OPTIONS:
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            values = argv[i + 1 : j]
            if len(values) == 1 and values[0].lstrip().startswith("["):
                out += [arg, values[0]]  # already a JSON/YAML list
            else:
                out += [arg, jsonlib.dumps(values)]
            i = j
        else:
            out.append(arg)
            i += 1
    return out


def migrate_flags(argv: list[str]) -> list[str]:
    """Sampler flags from before the grouping keep working: --sampler.method → --sampler.commit.method, ..."""
    from unmask.sampling.config import FLAT_NAMES

    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        arg = FLAG_ALIASES.get(flag, flag) + eq + value  # unmask import --as → --kind (a Python keyword)
        name = flag.removeprefix("--sampler.") if flag.startswith("--sampler.") else None
        group, key = FLAT_NAMES.get(name, (None, None)) if name else (None, None)
        out.append(f"--sampler.{group}.{key}{eq}{value}" if group else arg)
    return out


WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)
"""OS errors that say the disk failed a write, not that a path given was wrong."""


def print_error(message: str) -> None:
    """One bounded line on stderr, whatever the message holds."""
    line = "unmask: error: " + " ".join(str(message).split())
    if len(line) > MAX_ERROR_CHARS:
        line = line[: MAX_ERROR_CHARS - 1] + "…"
    print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from jsonargparse import ArgumentError

    parser = build_parser()
    argv = migrate_flags(gather_lists(list(sys.argv[1:] if argv is None else argv)))
    try:
        cfg = parser.parse_args(argv)
        fn, name, kwargs = _chosen(parser.instantiate(cfg), COMMANDS)
        fn(FLAT_CONFIGS[name](**kwargs)) if name in FLAT_CONFIGS else fn(**kwargs)
    except ArgumentError as e:
        print_error(_explain(" ".join(str(e).split()), parser, argv))
        return 2
    except UnmaskError as e:  # ConfigError: bad input, nothing done (2); TrainingError: the run failed (1)
        print_error(str(e))
        return 2 if isinstance(e, ConfigError) else 1
    except KeyboardInterrupt:
        print("unmask: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a path the user gave that the OS refuses (too long, not a directory, no permission)
        if e.errno in WRITE_FAILURES:  # the disk, not the input: the command failed
            print_error(
                f"could not write{f' {e.filename}' if e.filename else ''}: {os_reason(e)}; free space and retry"
            )
            return 1
        reason = os_reason(e) or type(e).__name__
        print_error(f"{reason}: {e.filename}; check the path" if e.filename else f"{reason} ({e})")
        return 2
    except Exception as e:
        if _training_stopped(e):  # SIGTERM/SIGINT honoured with a checkpoint: a clean exit
            print(f"unmask: {e}", file=sys.stderr)
            return 0
        if os_reason(e):  # a writer (torch, safetensors, pyarrow) that wrapped the OS's own error
            print_error(f"could not write or read a file: {os_reason(e)} ({type(e).__name__}: {e})")
            return 1
        # a bug, not bad input: still one line; UNMASK_DEBUG=1 shows the traceback
        if os.environ.get("UNMASK_DEBUG"):
            raise
        print_error(
            f"internal error {type(e).__name__}: {e} (a bug: please report it; UNMASK_DEBUG=1 shows the traceback)"
        )
        return 1
    return 0


def _training_stopped(e: Exception) -> bool:
    """Whether `e` is training's TrainingStopped; only training raises it, so a command that never loaded
    training (prepare: no torch at all) needs no import to tell."""
    signals = sys.modules.get("unmask.training.signals")
    return signals is not None and isinstance(e, signals.TrainingStopped)


def _explain(message: str, parser, argv: list[str] | None) -> str:
    """Make jsonargparse's errors name the allowed keys / values (and the closest match to a typo)."""
    import difflib
    import re

    typo = re.search(r"does not accept option '([\w.]+)'|unrecognized arguments: --([\w.]+)", message)
    command, sub, commands = [], parser, COMMANDS
    for arg in argv or sys.argv[1:]:  # down the groups: unmask finetune sft → the sft parser
        if isinstance(commands, dict) and arg in commands:
            command.append(arg)
            sub, commands = sub._subcommands_action.choices[arg], commands[arg]
    command = " ".join(command)
    if typo and command and not isinstance(commands, dict):
        key = typo.group(1) or typo.group(2)
        positional = [a.dest for a in sub._actions if not a.option_strings]
        if key in positional:
            return f"{key} is positional: unmask {command} {' '.join(p.upper() for p in positional)} [options]"
        dests = {a.dest for a in sub._actions} - {"help", "config", "print_config", "==SUPPRESS=="}
        allowed = sorted(d for d in dests if not any(o.startswith(d + ".") for o in dests))  # leaves, not groups
        group = key.rsplit(".", 1)[0] + "." if "." in key else ""
        siblings = [a for a in allowed if a.startswith(group) and a.count(".") == key.count(".")] or allowed
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"unknown option '{key}' for unmask {command}; {hint}allowed: {', '.join(siblings)}"
    wrong_type = re.search(r'Parser key "([\w.]+)": Expected a <class \'(\w+)\'>\. Got value: (.*)', message)
    if wrong_type:
        return f"{wrong_type.group(1)}={wrong_type.group(3)!r}: expected {wrong_type.group(2)}"
    literal = re.search(r'Parser key "([\w.]+)": Expected a typing.Literal\[(.*?)\]\. Got value: (.*)', message)
    if literal:
        return f"{literal.group(1)}={literal.group(3)!r} is not allowed; choose one of {literal.group(2)}"
    return message


if __name__ == "__main__":
    sys.exit(main())
