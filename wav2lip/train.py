"""``python -m wav2lip.train``: Wav2Lip generator training;
the code lives in :mod:`wav2lip.training.train_wav2lip`."""

from wav2lip.training.train_wav2lip import main

if __name__ == "__main__":
    raise SystemExit(main())
