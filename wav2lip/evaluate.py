"""``python -m wav2lip.evaluate``: LSE-D / LSE-C evaluation (:mod:`wav2lip.eval.evaluate`);
``python -m wav2lip.evaluate generate ...``: the LRS2 test protocol, generation then scoring
(:mod:`wav2lip.eval.generate`)."""

import sys

from wav2lip.eval import generate
from wav2lip.eval.evaluate import main


def entry(argv: list[str]) -> int:
    if argv[:1] == ["generate"]:
        return generate.main(argv[1:])
    return main(argv)


if __name__ == "__main__":
    raise SystemExit(entry(sys.argv[1:]))
