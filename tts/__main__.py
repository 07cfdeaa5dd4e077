"""``python -m tts``: print the installed espeak-ng voices, one per line (language codes first)."""

from tts import list_voices

for voice in list_voices():
    print(voice)
