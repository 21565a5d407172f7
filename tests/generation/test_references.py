"""Image references (IP-Adapter) in the engine: the tiny adapter the tiny model ships with, loaded through
diffusers' own `load_ip_adapter`, switched per call, with image embeddings cached in the blob store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from generation.engine import Engine
from generation.errors import ConfigError, InvalidRequest
from generation.images import encode_upload
from generation.models import ModelRegistry
from generation.references import CHARACTER, STYLE, ReferenceSet
from generation.request import Kind
from generation.tiny import IP_ADAPTER_FOLDER, ensure_tiny_model
from generation.validate import RequestDraft, build_request, parse_flags, variation_of
from storage.blobs import BlobStore
from tests.generation.test_engine import _maxdiff, _req


def _image(color: tuple[int, int, int], size: int = 48) -> bytes:
    image = Image.new("RGB", (size, size), color)
    for x in range(0, size, 6):  # some structure, so two references differ beyond their mean colour
        image.putpixel((x, x), (255 - color[0], 255 - color[1], 255 - color[2]))
    return encode_upload(image)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> BlobStore:
    return BlobStore(tmp_path_factory.mktemp("refblobs"))


@pytest.fixture(scope="module")
def adapter_dir(tiny_data_dir: Path) -> Path:
    return ensure_tiny_model(tiny_data_dir) / IP_ADAPTER_FOLDER


@pytest.fixture(scope="module")
def engine(tiny_data_dir: Path, adapter_dir: Path, blobs: BlobStore) -> Iterator[Engine]:
    registry = ModelRegistry([("tiny", f"tiny?ip_adapter={adapter_dir}")], tiny_data_dir, device="cpu")
    yield Engine(registry, blobs=blobs)


@pytest.fixture(scope="module")
def red(blobs: BlobStore) -> str:
    return blobs.put(_image((220, 30, 30)))


@pytest.fixture(scope="module")
def blue(blobs: BlobStore) -> str:
    return blobs.put(_image((20, 40, 230)))


def _refs(*items: tuple[str, str, float]) -> ReferenceSet:
    return tuple(items)


def test_weight_zero_renders_the_plain_pixels(engine: Engine, red: str) -> None:
    plain = engine.render([_req((3,))])[0][0]
    zero = engine.render([_req((3,), references=_refs((STYLE, red, 0.0)))])[0][0]
    assert _maxdiff(plain, zero) == 0


def test_a_reference_changes_the_pixels_and_plain_after_it_is_plain_before(engine: Engine, red: str,
                                                                          blue: str) -> None:
    before = engine.render([_req((4,))])[0][0]
    style = engine.render([_req((4,), references=_refs((STYLE, red, 1.0)))])[0][0]
    content = engine.render([_req((4,), references=_refs((CHARACTER, red, 1.0)))])[0][0]
    other = engine.render([_req((4,), references=_refs((CHARACTER, blue, 1.0)))])[0][0]
    assert _maxdiff(before, style) > 10
    assert _maxdiff(before, content) > 10
    assert _maxdiff(content, other) > 10  # the image itself matters, not only that there is one
    # The adapter stays loaded but is switched off: a plain job renders exactly as before it came.
    assert engine.registry._entry("tiny").adapter is not None
    assert _maxdiff(engine.render([_req((4,))])[0][0], before) == 0
    # So does an img2img job on the same shared UNet (a variation of a plain job).
    parent = _req((4,))
    child = variation_of(parent, 0, strong=True, source="x", seed=9)
    first = engine.render([child], [before])[0][0]
    engine.render([_req((4,), references=_refs((STYLE, red, 1.0)))])
    assert _maxdiff(engine.render([child], [before])[0][0], first) == 0


def test_two_references_split_the_batch_and_each_matches_its_solo_render(engine: Engine, red: str,
                                                                         blue: str) -> None:
    from generation.scheduler import batch_key_text

    a = _req((5,), references=_refs((STYLE, red, 1.0)))
    b = _req((6,), references=_refs((STYLE, blue, 1.0)))
    assert batch_key_text(a) != batch_key_text(b)
    assert batch_key_text(a) != batch_key_text(_req((5,)))
    assert batch_key_text(a) != batch_key_text(_req((5,), references=_refs((STYLE, red, 0.5))))
    with pytest.raises(ValueError, match="share a batch_key"):
        engine.render([a, b])
    solo = engine.render([a])[0][0]
    # Two jobs with the same reference share a call; each image matches its solo render.
    both = engine.render([a, _req((7,), references=a.references)])
    assert _maxdiff(both[0][0], solo) <= 1


def test_a_variation_keeps_its_parents_references(engine: Engine, red: str) -> None:
    parent = _req((8,), references=_refs((STYLE, red, 1.0)))
    image = engine.render([parent])[0][0]
    child = variation_of(parent, 0, strong=True, source="x", seed=3)
    assert child.kind == Kind.VARIATION and child.references == parent.references
    plain_child = variation_of(_req((8,)), 0, strong=True, source="x", seed=3)
    assert _maxdiff(engine.render([child], [image])[0][0], engine.render([plain_child], [image])[0][0]) > 0


def test_embeddings_are_encoded_once_and_read_back_from_the_blob_store(
        engine: Engine, tiny_data_dir: Path, adapter_dir: Path, blobs: BlobStore) -> None:
    green = blobs.put(_image((30, 200, 40)))
    job = _req((10,), references=_refs((STYLE, green, 1.0)))
    encoded = engine.embeddings.encoded
    first = engine.render([job])[0][0]
    engine.render([_req((11,), references=job.references)])
    assert engine.embeddings.encoded == encoded + 1
    # Another process (a restart) reads the embedding from the blob store, and renders the same pixels.
    fresh = Engine(ModelRegistry([("tiny", f"tiny?ip_adapter={adapter_dir}")], tiny_data_dir, device="cpu"),
                   blobs=blobs)
    assert _maxdiff(fresh.render([job])[0][0], first) == 0
    assert fresh.embeddings.encoded == 0
    assert blobs.exists(fresh.embeddings.key(green, fresh.registry._entry("tiny").adapter.encoder_id))


def test_the_option_is_checked_at_start(tiny_data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ip_adapter"):
        ModelRegistry([("tiny", f"tiny?ip_adapter={tmp_path / 'missing.safetensors'}")], tiny_data_dir,
                      device="cpu")
    with pytest.raises(ConfigError, match="image_encoder goes with ip_adapter"):
        ModelRegistry([("tiny", f"tiny?image_encoder={tmp_path}")], tiny_data_dir, device="cpu")


def test_sdxl_tiny_adapter_loads_and_changes_pixels(tiny_data_dir: Path, blobs: BlobStore, red: str) -> None:
    folder = ensure_tiny_model(tiny_data_dir, family="sdxl")
    registry = ModelRegistry([("xl", f"tiny-xl?ip_adapter={folder / IP_ADAPTER_FOLDER}")], tiny_data_dir,
                             device="cpu")
    engine = Engine(registry, blobs=blobs)
    plain = engine.render([_req((2,), model="xl")])[0][0]
    styled = engine.render([_req((2,), model="xl", references=_refs((STYLE, red, 1.0)))])[0][0]
    assert _maxdiff(plain, styled) > 10
    assert _maxdiff(engine.render([_req((2,), model="xl")])[0][0], plain) == 0


def test_a_render_error_when_the_model_has_no_adapter(tiny_engine: Any, red: str) -> None:
    from generation.errors import RenderError

    with pytest.raises(RenderError, match="not configured"):
        tiny_engine.render([_req((1,), references=_refs((STYLE, red, 1.0)))])


def test_flags_are_read_weighed_and_checked(engine: Engine, tiny_registry: Any, red: str, blue: str) -> None:
    prompt, flags = parse_flags("a cat --sref https://cdn.discordapp.com/attachments/1/2/a.png --sw 250 "
                                "--sref 42.2 on a mat")
    assert prompt == "a cat on a mat"
    link = "https://cdn.discordapp.com/attachments/1/2/a.png"
    assert flags["references"] == [(STYLE, link), (STYLE, "42.2")]
    assert flags["sw"] == 250.0
    draft = RequestDraft(prompt="a cat --sref x --sref y --sw 250 --cref z --cw 40",
                         references=((STYLE, red), (STYLE, blue), (CHARACTER, red)))
    request = build_request(draft, engine.registry)
    assert request.references == ((STYLE, red, 2.5), (STYLE, blue, 2.5), (CHARACTER, red, 0.4))
    # /blend's images come in the draft alone (role "image", --iw as it is).
    blend = build_request(RequestDraft(prompt="--iw 0.5", references=(("image", red), ("image", blue))),
                          engine.registry)
    assert blend.references == (("image", red, 0.5), ("image", blue, 0.5))
    for bad, message in (
        (RequestDraft(prompt="a cat --sw 50"), "weighs"),
        (RequestDraft(prompt="a cat --sref x --sw 5000", references=((STYLE, red),)), "0 to 1000"),
        (RequestDraft(prompt="a cat --cref x --oref y", references=((CHARACTER, red), ("object", blue))),
         "one of"),
        (RequestDraft(prompt="a cat --sref x"), "could not be read"),
    ):
        with pytest.raises(InvalidRequest, match=message):
            build_request(bad, engine.registry)
    # A model without an IP-Adapter says so before anything is fetched.
    with pytest.raises(InvalidRequest, match="not configured on this server/model"):
        build_request(RequestDraft(prompt="a cat --sref x", references=((STYLE, red),)), tiny_registry)
