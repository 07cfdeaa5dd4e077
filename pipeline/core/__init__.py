"""What every stage shares: errors, data types, devices, checkpoint loading, ffmpeg and media I/O,
the weights registry and config-file I/O. It imports no stage and no orchestration module."""
