"""``python -m wav2lip.preprocess``: LRS2 preprocessing;
the code lives in :mod:`wav2lip.training.preprocess`."""

from wav2lip.training.preprocess import main

if __name__ == "__main__":
    raise SystemExit(main())
