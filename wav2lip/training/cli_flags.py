"""The command-line flags both trainers share and the one-line error handling of their CLIs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from pipeline.core.device_names import DEVICE_HELP, device_argument
from pipeline.core.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    LipSyncError,
)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Flags both trainers share; each overrides one config key (see the YAML for all keys)."""
    parser.add_argument("--config", metavar="FILE", help="training YAML (default configs/train_*.yaml)")
    parser.add_argument("--data-root", metavar="DIR", help="preprocessed data (data.data_root)")
    parser.add_argument("--checkpoint-dir", metavar="DIR", help="where checkpoints and logs go")
    parser.add_argument("--checkpoint", metavar="FILE", help="start from this checkpoint")
    parser.add_argument("--max-steps", type=int, metavar="N", help="stop after global step N")
    parser.add_argument(
        "--device", type=device_argument, metavar="DEVICE", help=f"{DEVICE_HELP}; default auto"
    )
    parser.add_argument("--no-resume", action="store_true", help="ignore checkpoints in --checkpoint-dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def common_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from the shared flags (None where a flag was not given)."""
    return {
        "data": {"data_root": args.data_root},
        "checkpoint_dir": args.checkpoint_dir,
        "checkpoint": args.checkpoint,
        "max_steps": args.max_steps,
        "device": args.device,
        "resume": False if args.no_resume else None,
        "quiet": True if args.quiet else None,
    }


def run_cli(action: Callable[[], None], quiet: bool = False) -> int:
    """Run ``action``; return the exit code (one-line message on stderr for a LipSyncError)."""
    try:
        action()
    except LipSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if not quiet:
            print("interrupted; resume with the same command", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK
