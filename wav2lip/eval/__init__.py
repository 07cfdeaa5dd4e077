"""LSE-D / LSE-C sync metrics: the SyncNet evaluation network of syncnet_python and the scoring."""
