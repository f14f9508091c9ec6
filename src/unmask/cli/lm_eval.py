"""`unmask-lm-eval`: lm-evaluation-harness's command line with the `unmask` model registered.

lm-eval 0.4.x resolves `--model NAME` in its own registry and imports no external package, so
this entry point imports the adapter (unmask.lm_eval, which registers `unmask`) and hands over
to lm-eval's CLI. It lives apart from the adapter so a missing lm-eval is one clear line.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line; bad input to the `unmask` model (a run that is not one, a bad model argument) is
    one line `unmask: error: ...` and exit code 2, as for `unmask` itself."""
    from unmask.cli import print_error
    from unmask.config import ConfigError, UnmaskError

    try:
        from unmask.lm_eval import main as lm_eval_main
    except ImportError as e:
        print_error(f"unmask-lm-eval needs lm-evaluation-harness ({e.name} is missing): pip install 'unmask[lmeval]'")
        sys.exit(2)
    try:
        lm_eval_main(argv=argv)
    except UnmaskError as e:
        print_error(str(e))
        sys.exit(2 if isinstance(e, ConfigError) else 1)


if __name__ == "__main__":
    main()
