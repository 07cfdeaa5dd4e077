"""``python -m wav2lip.evaluate``: LSE-D / LSE-C evaluation;
the code lives in :mod:`wav2lip.eval.evaluate`."""

from wav2lip.eval.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
