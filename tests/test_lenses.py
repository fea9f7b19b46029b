"""Lenses: @lens getters and putters, a LensNetwork that finds chains, Dataset.as_type through
a lens, DictSample -> T, structural lenses, and lens records stored in every provider.

The lens functions are at module level so their records are importable code references.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from atdata_dagster import Dataset, DictSample, Lens, LensNetwork, lens, packable, write_samples
from atdata_dagster.errors import LensNotFoundError
from atdata_dagster.lenses import lens_from_record, lens_to_json


@packable
class Color:
    pixels: NDArray[np.float32]
    label: int
    source: str


@packable
class Gray:
    pixels: NDArray[np.float32]
    label: int


@packable
class LabelOnly:
    label: int


@packable
class Caption:
    text: str


@packable
class Unrelated:
    other: float


@lens
def to_gray(c: Color) -> Gray:
    return Gray(pixels=c.pixels.mean(axis=-1).astype(np.float32), label=c.label)


@to_gray.putter
def to_gray_put(view: Gray, source: Color) -> Color:
    return Color(pixels=source.pixels, label=view.label, source=source.source)


@lens
def gray_caption(g: Gray) -> Caption:
    return Caption(text=f"digit {g.label}")


def _colors(n=4):
    return [Color(pixels=np.full((2, 2, 3), i, np.float32), label=i, source="cam") for i in range(n)]


@pytest.fixture
def colors(tmp_path):
    return Dataset[Color](write_samples(_colors(), tmp_path / "c.tar").url)


def test_a_lens_has_a_getter_and_a_putter_and_composes_both_ways():
    c = _colors(3)[2]
    g = to_gray(c)
    assert isinstance(g, Gray) and g.label == 2 and g.pixels.shape == (2, 2)
    assert to_gray.source_type is Color and to_gray.view_type is Gray
    back = to_gray.put(Gray(pixels=g.pixels, label=9), c)
    assert back.label == 9 and back.source == "cam" and back.pixels.shape == (2, 2, 3)
    chain = to_gray | gray_caption
    assert chain(c).text == "digit 2" and (gray_caption @ to_gray)(c).text == "digit 2"
    assert chain.put(Caption(text="x"), c) == c  # gray_caption has no putter: the view changes nothing
    assert Lens.identity(Color).get(c) is c


def test_the_network_finds_a_chain_and_says_what_is_missing():
    net = LensNetwork()
    assert net is LensNetwork()  # one registry per process, as atdata's
    found = net.transform(Color, Caption)  # Color -> Gray -> Caption: no direct lens registered
    assert found(_colors(2)[1]).text == "digit 1"
    with pytest.raises(LensNotFoundError, match=r"no lens from Color to Unrelated") as err:
        net.transform(Color, Unrelated)
    assert isinstance(err.value, ValueError) and "Gray" in str(err.value)


def test_as_type_reads_through_the_lens_and_keeps_working_with_every_read(colors):
    grays = colors.as_type(Gray)
    assert type(grays) is Dataset[Gray] and grays.sample_type is Gray
    assert [g.label for g in grays] == [0, 1, 2, 3]
    assert grays[2].pixels.shape == (2, 2) and len(grays) == 4
    assert sorted(g.label for g in grays.shuffled(seed=1)) == [0, 1, 2, 3]
    assert [list(b.label) for b in grays.ordered(batch_size=3)] == [[0, 1, 2], [3]]
    assert [c.text for c in colors.as_type(Caption)] == [f"digit {i}" for i in range(4)]
    assert [g.label for g in colors.as_type(Gray).filter(lambda g: g.label > 1)] == [2, 3]


def test_dictsample_to_t_and_structural_lenses_need_no_registration(colors):
    untyped = Dataset(colors.url)
    assert isinstance(next(iter(untyped)), DictSample)
    typed = untyped.as_type(Color)
    assert next(iter(typed)).pixels.shape == (2, 2, 3)
    labels = colors.as_type(LabelOnly)  # its fields are a subset of Color's
    assert [x.label for x in labels] == [0, 1, 2, 3]
    with pytest.raises(LensNotFoundError):
        colors.as_type(Unrelated)


def test_lens_records_round_trip_as_code_references(tmp_path):
    import json

    record = json.loads(lens_to_json(to_gray, name="to_gray", version="1.0.0"))
    assert record["getter"] == {"kind": "code_reference", "module": __name__, "qualname": "to_gray"}
    assert record["putter"]["qualname"] == "to_gray_put"
    assert (record["source_schema"], record["view_schema"]) == ("Color", "Gray")
    rebuilt = lens_from_record(record, register=False)
    assert rebuilt(_colors(2)[1]).label == 1


def test_a_lambda_getter_is_stored_as_a_field_mapping_only_when_that_is_exact():
    import json

    projection = Lens(lambda c: LabelOnly(label=c.label), source_type=Color, view_type=LabelOnly)
    record = json.loads(lens_to_json(projection, name="p"))
    assert record["getter"]["kind"] == "field_mapping"
    rebuilt = lens_from_record(record, source_type=Color, view_type=LabelOnly, register=False)
    assert rebuilt(_colors(3)[2]) == LabelOnly(label=2)
    computing = Lens(lambda c: Unrelated(other=1.0), source_type=Color, view_type=Unrelated)
    assert json.loads(lens_to_json(computing, name="q"))["getter"]["kind"] == "opaque"
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        lens_from_record(json.loads(lens_to_json(computing, name="q")), register=False)


def test_index_stores_finds_and_loads_lenses_in_every_provider(provider):
    from atdata_dagster import Index

    index = Index(provider, atmosphere=None)
    ref = index.store_lens(to_gray, name="to_gray", description="mean over channels")
    assert ref == "atdata://local/lens/to_gray@1.0.0"
    assert index.store_lens(to_gray, name="to_gray") == "atdata://local/lens/to_gray@1.0.1"  # patch bump
    index.store_lens(gray_caption, name="caption", version="2.0.0")
    record = index.get_lens(ref)
    assert record["$ref"] == ref and record["description"] == "mean over channels"
    assert sorted(r["$ref"] for r in index.find_lenses("Color")) == [ref, "atdata://local/lens/to_gray@1.0.1"]
    assert [r["name"] for r in index.find_lenses("Gray", "Caption")] == ["caption"]
    assert index.find_lenses("Gray", "Color") == []
    assert len(index.list_lenses()) == 3
    loaded = index.load_lens(ref)
    assert loaded(_colors(2)[1]).label == 1
    with pytest.raises(KeyError):
        index.get_lens("atdata://local/lens/nope@1.0.0")
    with pytest.raises(ValueError, match="invalid lens ref"):
        index.get_lens("lens/nope")
