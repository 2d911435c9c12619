"""(Re)create the bundled byte-level BPE asset of the tiny tokenizer, deterministically.

Usage: python packages/coordexp-train/scripts/build_tiny_tokenizer.py [--check]

Writes ``src/coordexp/train/models/assets/tiny_bpe.json`` (a ``tokenizers`` JSON file holding only
the BPE model and the Qwen-style normalizer/pre-tokenizer/decoder; the chat specials and the 1000
coord tokens are added at load time by ``coordexp.train.models.build_tiny_tokenizer``). With
``--check`` nothing is written and the exit status says whether the bundled file is up to date.
"""

from __future__ import annotations

import argparse
import hashlib
import sys

from coordexp.train.models.bpe_training import train_tiny_bpe
from coordexp.train.models.tokenizer import BUNDLED_BPE_ASSET


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the bundled file")
    args = parser.parse_args(argv)
    text = train_tiny_bpe().to_str(pretty=True) + "\n"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    current = BUNDLED_BPE_ASSET.read_text(encoding="utf-8") if BUNDLED_BPE_ASSET.is_file() else None
    if args.check:
        up_to_date = current == text
        print(f"{BUNDLED_BPE_ASSET}: {'up to date' if up_to_date else 'STALE'} (sha256 {digest})")
        return 0 if up_to_date else 1
    BUNDLED_BPE_ASSET.parent.mkdir(parents=True, exist_ok=True)
    BUNDLED_BPE_ASSET.write_text(text, encoding="utf-8")
    print(f"wrote {BUNDLED_BPE_ASSET} (sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
