"""Index kinds as plug-ins: every registered spec round-trips through save/load, and a new kind
written in one module of a plug-in package works end to end."""

from __future__ import annotations

import inspect
import json
import uuid

import faiss
import numpy as np
import pytest

from hashlab.index import (
    BINARY_KINDS,
    FLOAT_KINDS,
    BinaryIndex,
    FloatIndex,
    IndexFileError,
    IndexKind,
    binary,
    floats,
    idmap,
    load_index,
    pack_bits,
    read_manifest,
    save_index,
)
from hashlab.registry import load_plugins
from tests.test_index import bf_knn, bf_range  # brute-force (popcount) rankings by (distance, id)


def assert_results_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, tuple):
            assert_results_equal(x, y)
        else:
            np.testing.assert_array_equal(x, y)


@pytest.fixture
def codes16():
    rng = np.random.default_rng(7)
    x = pack_bits(rng.integers(0, 2, (700, 16)))  # 16-bit codes: many ties
    q = np.concatenate([x[:8], pack_bits(rng.integers(0, 2, (12, 16)))])
    ids = (rng.permutation(20 * len(x))[: len(x)] * 3 + 5).astype(np.int64)
    return x, q, ids


# ---------------------------------------------------------------------------------------------
# every registered spec
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BINARY_KINDS.names())
def test_every_binary_kind_round_trips(tmp_path, codes16, kind):
    x, q, ids = codes16
    spec = BINARY_KINDS.get(kind)
    index = BinaryIndex(16, kind)
    assert index.spec is spec and index.kind == kind
    assert type(faiss.downcast_IndexBinary(index.faiss_index.index)).__name__ == spec.faiss_class
    index.add(x, ids)
    out = save_index(index, tmp_path / "idx")
    manifest = read_manifest(out)
    assert manifest["factory"] == index.factory == spec.factory_string(index.params)
    loaded = load_index(out, expect_nbits=16)
    assert (loaded.kind, loaded.params, loaded.factory) == (kind, index.params, index.factory)
    assert_results_equal(loaded.search(q, 11), index.search(q, 11))
    if spec.range_search:
        assert_results_equal(loaded.range_search(q, 3), index.range_search(q, 3))


@pytest.mark.parametrize("kind", FLOAT_KINDS.names())
def test_every_float_kind_round_trips(tmp_path, kind):
    rng = np.random.default_rng(3)
    x, q = rng.normal(size=(400, 8)), rng.normal(size=(6, 8))
    spec = FLOAT_KINDS.get(kind)
    index = FloatIndex(8, kind)
    assert type(faiss.downcast_index(index.faiss_index.index)).__name__ == spec.faiss_class
    index.add(x, np.arange(400) * 7)
    out = save_index(index, tmp_path / "f")
    assert read_manifest(out)["factory"] == index.factory == spec.factory_string(index.params)
    loaded = load_index(out, expect_dim=8)
    assert (loaded.kind, loaded.params, loaded.factory) == (kind, index.params, index.factory)
    assert_results_equal(loaded.search(q, 9), index.search(q, 9))
    if spec.range_search:
        assert_results_equal(loaded.range_search(q, 0.3), index.range_search(q, 0.3))


def test_manifest_without_factory_still_loads(tmp_path, codes16):
    """Manifests written before the factory string was recorded load unchanged."""
    x, q, ids = codes16
    index = BinaryIndex(16, "multihash", nhash=2, b=8)
    index.add(x, ids)
    out = save_index(index, tmp_path / "idx")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest.pop("factory") == "BHash2x8"
    (out / "manifest.json").write_text(json.dumps(manifest))
    loaded = load_index(out)
    assert loaded.factory == "BHash2x8"
    assert_results_equal(loaded.search(q, 5), index.search(q, 5))


def test_factory_strings_of_the_built_in_kinds():
    assert BinaryIndex(16, "flat").factory == "BFlat"
    assert BinaryIndex(64, "hash").factory == "BHash24"
    assert BinaryIndex(64, "multihash").factory == "BHash2x24"
    assert BinaryIndex(16, "ivf").factory == "BIVF16"
    assert BinaryIndex(16, "hnsw", M=8).factory == "BHNSW8"
    assert FloatIndex(16, "flat").factory == "Flat"
    assert FloatIndex(16, "hnsw").factory == "HNSW16"
    assert FloatIndex(16, "ivfpq", pq_bits=4).factory == "IVF16,PQ4x4np"


def test_index_classes_name_no_kind():
    """What depends on the kind lives in its spec: the index classes name no built-in kind
    (but the default of ``kind``)."""
    for module in (binary, floats, idmap):
        code = inspect.getsource(module).split('"""', 2)[2]  # past the module docstring
        code = code.replace('kind: str = "flat"', "")
        for kind in {*BINARY_KINDS.names(), *FLOAT_KINDS.names()}:
            assert f'"{kind}"' not in code and f"'{kind}'" not in code, (module.__name__, kind)


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(ValueError, match="kind: unknown binary index kind 'lsh'; known: flat"):
        BinaryIndex(16, "lsh")
    with pytest.raises(ValueError, match="known: flat, hnsw, ivfpq"):
        FloatIndex(4, "ivf")


def test_spec_checks_its_own_consistency():
    with pytest.raises(ValueError, match="not in its defaults"):
        IndexKind(name="bad", family="binary", description="", factory="BIVF{nlist}",
                  faiss_class="IndexBinaryIVF")
    with pytest.raises(ValueError, match="family"):
        IndexKind(name="bad", family="text", description="", factory="Flat",
                  faiss_class="IndexFlatIP")
    with pytest.raises(ValueError, match="do not apply"):
        IndexKind(name="bad", family="float", description="", factory="Flat",
                  faiss_class="IndexFlatIP", exact_radius=lambda nbits, p: nbits)


# ---------------------------------------------------------------------------------------------
# a new kind from one module of a plug-in package
# ---------------------------------------------------------------------------------------------

PLUGIN_KIND = '''\
"""An exact IVF: IndexBinaryIVF that probes every list."""

from hashlab.index.kinds import IndexKind, check_ints, register_kind

register_kind(IndexKind(
    name="{name}", family="binary",
    description="IndexBinaryIVF probing all nlist lists: exact, trained",
    factory="BIVF{{nlist}}", faiss_class="IndexBinaryIVF",
    defaults={{"nlist": 8}},
    resolve=lambda p, nbits: check_ints(p, nlist=1),
    build_params={{"nlist": "nprobe"}},
    train_minimum=lambda p: p["nlist"],
    exact_radius=lambda nbits, p: nbits,
))
'''


@pytest.fixture
def plugin_kind(tmp_path, monkeypatch):
    """Write a plug-in package with one kind module, load it; return the kind's name.

    The registry is process-global, so the package and the kind get a fresh name each time."""
    token = uuid.uuid4().hex[:10]
    name, package = f"ivf-exact-{token}", f"myidx_plugin_{token}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "kind.py").write_text(PLUGIN_KIND.format(name=name))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert name not in BINARY_KINDS
    assert load_plugins([package]) == [package]
    return name


def test_plugin_kind_equals_bruteforce_and_round_trips(tmp_path, codes16, plugin_kind):
    x, q, ids = codes16
    assert plugin_kind in BINARY_KINDS
    assert BINARY_KINDS.entry(plugin_kind).defaults == {"nlist": 8}
    index = BinaryIndex(16, plugin_kind)
    assert index.params == {"nlist": 8} and index.factory == "BIVF8"
    assert index.exact_radius == 16 and not index.is_trained
    index.add(x[:400], ids[:400])  # trains on the first add
    index.add(x[400:], ids[400:])
    assert index.is_trained and faiss.downcast_IndexBinary(index.faiss_index.index).nprobe == 8
    for k in (1, 10, 64):
        assert_results_equal(index.search(q, k), bf_knn(q, x, ids, k))
    for radius in (0, 2, 4):
        assert_results_equal(index.range_search(q, radius, require_exact=True),
                             bf_range(q, x, ids, radius))
    with pytest.raises(NotImplementedError, match="removal works for kinds 'flat'"):
        index.remove(ids[:1])
    with pytest.raises(ValueError, match="cannot set"):
        index.set_params(nlist=4)

    out = save_index(index, tmp_path / "idx")
    assert read_manifest(out)["factory"] == "BIVF8"
    loaded = load_index(out, expect_nbits=16)
    assert (loaded.kind, loaded.params) == (plugin_kind, {"nlist": 8})
    assert_results_equal(loaded.search(q, 10), bf_knn(q, x, ids, 10))


def test_index_of_an_unloaded_plugin_kind_is_refused(tmp_path, codes16):
    x, _, ids = codes16
    index = BinaryIndex(16)
    index.add(x, ids)
    out = save_index(index, tmp_path / "idx")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["kind"] = "not-loaded-kind"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFileError, match="plug-in needs the plug-in loaded"):
        load_index(out)
