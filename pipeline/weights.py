"""``python -m pipeline.weights list|fetch|verify``: the command line of :mod:`pipeline.core.weight_store`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from pipeline.core.config_io import WEIGHTS_DIR
from pipeline.core.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, LipSyncError, WeightsError
from pipeline.core.weight_manifest import MANIFEST_PATH, WeightSpec, load_manifest
from pipeline.core.weight_store import (
    MISMATCH,
    MISSING,
    default_names,
    fetch,
    file_status,
    get_spec,
    source_for,
    verify,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.weights", description="List, fetch and verify the checkpoints in weights/."
    )
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR, help="default: %(default)s")
    parser.add_argument("--manifest", type=Path, default=MANIFEST_PATH, help="default: %(default)s")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every checkpoint: stage, default, status, file, licence")
    fetch_cmd = commands.add_parser("fetch", help="download NAMES (default: what the default pipeline needs)")
    fetch_cmd.add_argument("names", nargs="*", metavar="NAME")
    fetch_cmd.add_argument(
        "--mirrors",
        action="store_true",
        help="also use third-party mirrors with no size and SHA-256 to check (checked ones are always used)",
    )
    fetch_cmd.add_argument("--quiet", action="store_true", help="no progress bars")
    verify_cmd = commands.add_parser(
        "verify", help="check NAMES (default: all); exit 3 on a mismatch, or a named file missing"
    )
    verify_cmd.add_argument("names", nargs="*", metavar="NAME")
    return parser


def _cmd_list(specs: Mapping[str, WeightSpec], weights_dir: Path) -> int:
    for name, spec in specs.items():
        status = file_status(spec, weights_dir / spec.file)
        default = "default" if spec.default else "-"
        print(f"{name:<22} {spec.stage:<9} {default:<8} {status:<9} {spec.file:<34} {spec.licence}")
    return EXIT_OK


def _cmd_fetch(specs: Mapping[str, WeightSpec], weights_dir: Path, args: argparse.Namespace) -> int:
    names = args.names or default_names(specs)
    for name in names:
        get_spec(name, specs)  # every name checked (exit 2) before any download starts
    failed: LipSyncError | None = None
    for name in names:
        spec = specs[name]
        print(f"{name}: {spec.file} - licence: {spec.licence}")
        try:
            (path,) = fetch([name], weights_dir, not args.quiet, use_mirrors=args.mirrors, manifest=specs)
            print(f"{name}: {path}")
        except LipSyncError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = exc
    return failed.exit_code if failed else EXIT_OK


def _cmd_verify(specs: Mapping[str, WeightSpec], weights_dir: Path, names: list[str]) -> int:
    results = verify(names, weights_dir, specs)
    for name, status in results:
        where = f"  from: {source_for(specs[name])}" if status in (MISSING, MISMATCH) else ""
        print(f"{name:<22} {status:<9} {weights_dir / specs[name].file}{where}")
    bad = {MISMATCH, MISSING} if names else {MISMATCH}
    return WeightsError.exit_code if any(status in bad for _, status in results) else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.weights``: 0 ok, 2 usage or unknown name, 3 weights problem, 130 interrupted."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage / help
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    try:
        specs = load_manifest(args.manifest)
        if args.command == "list":
            return _cmd_list(specs, args.weights_dir)
        if args.command == "fetch":
            return _cmd_fetch(specs, args.weights_dir, args)
        return _cmd_verify(specs, args.weights_dir, args.names)
    except LipSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"error: interrupted; partial downloads stay in {args.weights_dir}/*.part", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
