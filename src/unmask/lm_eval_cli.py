"""`unmask-lm-eval`: lm-evaluation-harness's command line with the `unmask` model registered.

lm-eval 0.4.x resolves `--model NAME` in its own registry and imports no external package, so
this entry point imports the adapter (unmask.lm_eval, which registers `unmask`) and hands over
to lm-eval's CLI. It lives apart from the adapter so a missing lm-eval is one clear line.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from unmask.lm_eval import main as lm_eval_main
    except ImportError as e:
        print(
            f"unmask-lm-eval: error: lm-evaluation-harness is not installed ({e.name}); pip install 'unmask[lmeval]'",
            file=sys.stderr,
        )
        sys.exit(2)
    lm_eval_main()


if __name__ == "__main__":
    main()
