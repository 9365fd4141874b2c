"""sup/e2ekeys.py, the key shapes the client and the server share: it must stay importable by both."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import sup.e2ekeys as e2ekeys


def test_imports_only_the_standard_library_and_cryptography():
    tree = ast.parse(Path(e2ekeys.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    outside = {name for name in imported if name not in sys.stdlib_module_names and name != "__future__"}
    assert outside == {"cryptography"}


def test_constants_match_the_wire_format():
    assert (e2ekeys.KEY_BYTES, e2ekeys.SIGNATURE_BYTES, e2ekeys.MAX_KEY_ID) == (32, 64, 0xFFFFFFFF)
    assert e2ekeys.signed_prekey_message(b"k" * 32) == b"\x05" + b"k" * 32
    assert e2ekeys.is_weak_public_key("x25519", b"\x00" * 31)  # too short is weak too
