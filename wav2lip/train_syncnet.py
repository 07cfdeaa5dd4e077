"""``python -m wav2lip.train_syncnet``: SyncNet expert training;
the code lives in :mod:`wav2lip.training.train_syncnet`."""

from wav2lip.training.train_syncnet import main

if __name__ == "__main__":
    raise SystemExit(main())
