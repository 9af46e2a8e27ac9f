"""docs/artifact.md names what the artifact holds today: every field of a real manifest and of
the schema, the manifest version, the calling convention's names; a format change fails here
until the doc follows."""

from __future__ import annotations

import json
import re

import pytest
from conftest import ROOT

from dlc.runtime import artifact

DOC = ROOT / "docs" / "artifact.md"
MLP = ROOT / "examples" / "models" / "mlp.onnx"


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> dict:
    import dlc

    directory = tmp_path_factory.mktemp("mlp")
    dlc.compile(str(MLP)).save(str(directory))
    return json.loads((directory / artifact.MANIFEST_FILE).read_text())


def _undocumented(names, doc: str, quote: str = "`") -> list[str]:
    return sorted(name for name in names if f"{quote}{name}{quote}" not in doc)


def test_every_field_of_a_real_manifest_is_documented(doc, manifest):
    assert not _undocumented(manifest, doc), "docs/artifact.md lacks these manifest fields"
    nested = {*manifest["inputs"][0], *next(iter(manifest["files"].values())), *manifest["kernels"][0]}
    # Written as the JSON reads: {"name", "shape", "dtype"}.
    assert not _undocumented(nested, doc, '"'), "docs/artifact.md lacks these nested manifest keys"


def test_every_schema_field_is_documented(doc):
    assert not _undocumented(artifact._FIELDS, doc), "docs/artifact.md lacks these schema fields"


def test_the_documented_manifest_version_is_the_current_one(doc, manifest):
    versions = {int(v) for v in re.findall(r"manifest version (\d+)", doc, re.I)}
    assert versions == {artifact.MANIFEST_VERSION} == {manifest["manifest_version"]}


def test_the_calling_convention_names_are_current(doc):
    from dlc.runtime import RuntimeContext

    names = [
        artifact.ENTRY_SYMBOL,
        *artifact.POOL_SYMBOLS,
        *(f[0] for f in RuntimeContext._fields_),
        artifact.MANIFEST_FILE,
        artifact.WEIGHTS_FILE,
        artifact.POOL_FILE,
    ]
    assert not _undocumented(names, doc)
    assert f"{8 * len(RuntimeContext._fields_)} bytes" in doc  # the context's documented size
