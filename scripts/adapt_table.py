"""docs/finetune/adapt.json: AR -> MDM adaptation runs beside the MDM trained from scratch on the same data, each
run's final validation ELBO (32 MC passes) and the training tokens it took (scripts/regenerate_published.sh)."""

import json

from unmask.run import Run

CASES = {  # corpus: (the AR base, the MDM from scratch it is compared with, the adaptation runs)
    "austen (the demo, U = 25,000)": (
        "runs/demo/ar-E12",
        "runs/demo/mdm-E64",
        ["runs/adapt/demo-E8", "runs/adapt/demo-E16", "runs/adapt/demo-E32"],
    ),
    "emma (not tuned on, U = 12,500)": (
        "runs/studies/mini-emma/runs/ar-demo-U12500-E16-s0",
        "runs/studies/mini-emma/runs/mdm-demo-U12500-E96-s0",
        ["runs/adapt/emma-E24", "runs/adapt/emma-E48"],
    ),
}


def row(path: str) -> dict:
    run = Run(path)
    result = run.final_result()
    return {
        "run": path,
        "objective": run.objective.name,
        "epochs": run.train_config.epochs,
        "tokens": run.budget()["tokens_to_see"],
        "final_loss": result["loss"],
        "stderr": result["stderr"],
    }


print(
    json.dumps(
        {
            corpus: {"ar_base": row(base), "mdm_scratch": row(scratch), "adapted": [row(r) for r in runs]}
            for corpus, (base, scratch, runs) in CASES.items()
        },
        indent=1,
    )
)
