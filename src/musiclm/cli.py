"""The `musiclm` command. Each subcommand lives next to the code it drives; this file only routes.

    musiclm [--root DIR] COMMAND ...        data/, runs/, reports/, outputs/ under DIR (default: $MUSICLM_ROOT or .)
    musiclm data synth|ingest|check ...     build and validate audio shards
    musiclm train STAGE [--run R] [--profile demo] [--trainer cpu] [Lightning CLI overrides]
    musiclm mulan fit-quantizer --run R     fit the MuLan-token residual VQ
    musiclm melody pitch-classes --run R    pitch-class melody tokens as the run's melody model (nothing to train)
    musiclm import codec|mulan --from DIR --run R   a pretrained model from a local folder as the stage's hand-off
    musiclm tokenize --run R ...            audio shards -> token shards
    musiclm generate --run R --text ...     text -> music
    musiclm eval [codec] --run R ...        metrics to reports/<RUN>/eval.json
    musiclm bench                           speed/memory figures to reports/bench.json
    musiclm gpu-check [--accelerator cpu]   paper-size steps on one GPU -> reports/gpu-check.json
    musiclm export-safetensors --run R --stage S   a model.ckpt hand-off as model.safetensors
    musiclm showcase RUN [RUN ...]          runs at several budgets: quality vs CPU-hours, audio samples -> docs/
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from musiclm.stages import load_object

COMMANDS: dict[str, str | dict[str, str]] = {
    "data": {
        "synth": "musiclm.data.synth:main",
        "ingest": "musiclm.data.ingest:main",
        "check": "musiclm.data.ingest:check_main",
    },
    "train": "musiclm.train:main",
    "mulan": {"fit-quantizer": "musiclm.mulan.fit_quantizer:main"},
    "melody": {"pitch-classes": "musiclm.melody.pitch:main"},
    "import": {"codec": "musiclm.pretrained.importer:codec_main", "mulan": "musiclm.pretrained.importer:mulan_main"},
    "tokenize": "musiclm.tokenize:main",
    "generate": "musiclm.pipeline:main",
    "eval": {"codec": "musiclm.codec.evaluate:main", "": "musiclm.evaluate:main"},
    "bench": "musiclm.bench:main",
    "gpu-check": "musiclm.gpu_check:main",
    "export-safetensors": "musiclm.artifacts:export_safetensors_main",
    "showcase": "musiclm.showcase:main",
}


def _usage() -> str:
    return (__doc__ or "").strip()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and (argv[0] == "--root" or argv[0].startswith("--root=")):
        flag = argv.pop(0)
        value = flag.partition("=")[2] or (argv.pop(0) if argv else "")
        if not value:
            print("--root needs a directory", file=sys.stderr)
            sys.exit(2)
        # Absolute so subprocesses that change directory (make -C) still agree on the root.
        os.environ["MUSICLM_ROOT"] = str(Path(value).resolve())
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(_usage())
        sys.exit(0 if not argv or argv[0] in ("-h", "--help") else 2)
    target = COMMANDS[argv.pop(0)]
    if isinstance(target, dict):
        if argv and argv[0] in target:
            target = target[argv.pop(0)]
        elif "" in target:
            target = target[""]
        else:
            print(f"choose one of: {', '.join(target)}", file=sys.stderr)
            sys.exit(2)
    load_object(target)(argv)


if __name__ == "__main__":
    main()
