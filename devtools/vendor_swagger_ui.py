"""Vendor Swagger UI (npm ``swagger-ui-dist``) into ``platereg/swagger_ui/``.

    python devtools/vendor_swagger_ui.py 5.35.0

Fetches the package with ``npm pack`` (the npm registry checks the tarball against its
integrity), copies the files the ``/docs`` page serves with the licence and notice, and
writes ``MANIFEST.json``: the version, the tarball's integrity and each file's SHA-256,
which tests/unit/test_api_docs.py checks against the files. Then change
``platereg.api_docs.SWAGGER_UI_VERSION``, run the /docs tests and commit the files.
Standard library and npm only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "swagger-ui-dist"
TARGET = Path(__file__).resolve().parents[1] / "platereg" / "swagger_ui"
#: What /docs serves, and what the licence asks to keep beside it.
FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "LICENSE", "NOTICE",
         "swagger-ui-bundle.js.LICENSE.txt")


def manifest(version: str, integrity: str, directory: Path) -> dict[str, object]:
    return {"package": PACKAGE, "version": version, "integrity": integrity,
            "sha256": {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
                       for name in FILES}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", help="an exact swagger-ui-dist version, e.g. 5.35.0")
    args = parser.parse_args(argv)
    npm = shutil.which("npm")
    if npm is None:
        print("npm is needed (apt-get install -y npm)", file=sys.stderr)
        return 1
    TARGET.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        packed = json.loads(subprocess.run(
            [npm, "pack", f"{PACKAGE}@{args.version}", "--json", "--pack-destination", tmp],
            check=True, capture_output=True, text=True, timeout=300).stdout)[0]
        if packed["version"] != args.version:
            print(f"npm gave {packed['version']}, not {args.version}", file=sys.stderr)
            return 1
        with tarfile.open(Path(tmp) / packed["filename"]) as tar:
            for name in FILES:
                member = tar.extractfile(f"package/{name}")
                assert member is not None, name
                (TARGET / name).write_bytes(member.read())
    text = json.dumps(manifest(args.version, packed["integrity"], TARGET), indent=2) + "\n"
    (TARGET / "MANIFEST.json").write_text(text, encoding="utf-8")
    print(f"vendored {PACKAGE} {args.version} into {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
