"""The README's Python examples, as the README shows them: the tests run
them as written so that the first thing a newcomer copies works."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    """Every ```python block of the README, in order."""
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def block_using(name: str) -> str:
    """The one README Python block that mentions name."""
    [block] = [b for b in python_blocks() if name in b]
    return block
