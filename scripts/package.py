"""Build dist/ctstfm_qgis.zip for QGIS's "Install from ZIP", or install it.

The zip holds one self-contained plugin folder, ``ctstfm_qgis/``, with
``model_core/``, ``resources/`` and ``metadata.txt`` copied inside it, so the
same code runs from the repository and from the installed plugin.

    python scripts/package.py [--dist DIR]
    python scripts/package.py --install PROFILE_DIR
"""

import argparse
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "ctstfm_qgis"
# (source in the repository, place inside the plugin folder)
CONTENTS = [
    (ROOT / PLUGIN, ""),
    (ROOT / "model_core", "model_core"),
    (ROOT / "resources", "resources"),
    (ROOT / "metadata.txt", "metadata.txt"),
    (ROOT / "LICENSE", "LICENSE"),
    (ROOT / "README.md", "README.md"),
]


def plugin_files():
    for source, target in CONTENTS:
        if source.is_file():
            yield source, Path(PLUGIN) / target
            continue
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                yield path, Path(PLUGIN) / target / path.relative_to(source)


def build_zip(dist):
    dist.mkdir(parents=True, exist_ok=True)
    out = dist / f"{PLUGIN}.zip"
    tmp = out.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for source, name in plugin_files():
            archive.write(source, name.as_posix())
    tmp.replace(out)
    return out


def install(profile_dir):
    plugins = Path(profile_dir) / "python" / "plugins"
    target = plugins / PLUGIN
    if target.exists() or target.is_symlink():
        if target.is_symlink():
            target.unlink()
        else:
            shutil.rmtree(target)
    for source, name in plugin_files():
        destination = plugins / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    return target


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", default=str(ROOT / "dist"))
    parser.add_argument("--install", metavar="PROFILE_DIR")
    args = parser.parse_args()
    if args.install:
        print(install(args.install))
    else:
        print(build_zip(Path(args.dist)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
