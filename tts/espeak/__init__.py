"""The espeak-ng engine: the shared library from the ``espeakng-loader`` wheel, or the program."""
