"""Training on LRS2: preprocessing, data windows, the SyncNet expert and Wav2Lip (with or without the
visual-quality discriminator), checkpoints, distributed runs and logs."""
