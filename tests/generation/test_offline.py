"""`atelier generate` / `atelier tiny-model` end to end through bot.cli.main (real engine, real files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import main
from generation.images import read_png_params


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tiny_data_dir: Path, tmp_path: Path) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tiny_data_dir))
    monkeypatch.setenv("ATELIER_MODEL", "tiny")
    monkeypatch.delenv("ATELIER_MODELS", raising=False)
    return tmp_path / "out"


def test_generate_writes_images_and_grid(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "generate",
            "a lighthouse at dusk",
            "--seed",
            "7",
            "--count",
            "4",
            "--aspect",
            "3:2",
            "--steps",
            "2",
            "--out",
            str(cli_env),
        ]
    )
    assert code == 0
    written = [Path(line) for line in capsys.readouterr().out.split()]
    assert len(written) == 5 and all(p.exists() for p in written)
    images = [p for p in written if not p.name.endswith("grid.png")]
    seeds = sorted(read_png_params(p.read_bytes())["seed"] for p in images)
    assert seeds == [7, 8, 9, 10]
    with Image.open(images[0]) as img:
        assert img.size == (624, 416)
    with Image.open(written[-1]) as grid:
        assert grid.size == (1248, 832)

    # Variation and upscale of one of them: the prompt comes from the PNG's own parameters.
    source = next(p for p in images if p.name.endswith("-8.png"))
    assert (
        main(
            [
                "generate",
                "",
                "--variation-of",
                str(source),
                "--strong",
                "--seed",
                "99",
                "--steps",
                "2",
                "--out",
                str(cli_env),
            ]
        )
        == 0
    )
    var_path = Path(capsys.readouterr().out.split()[0])
    var = read_png_params(var_path.read_bytes())
    assert (var["kind"], var["seed"], var["strength"], var["prompt"]) == (
        "variation",
        99,
        0.65,
        "a lighthouse at dusk",
    )
    assert main(["generate", "", "--upscale", str(source), "--out", str(cli_env)]) == 0
    up_path = Path(capsys.readouterr().out.split()[0])
    up = read_png_params(up_path.read_bytes())
    assert (up["kind"], up["seed"], up["width"], up["height"]) == ("upscale", 8, 1248, 832)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "x --foo 1"], "Unknown flag `--foo`"),
        (["generate", "x", "--count", "9"], "Count must be between 1 and 4"),
        (["generate", "x", "--upscale", "/no/such.png"], "No such image file"),
        (["generate", "x", "--model", "sd9"], "Unknown model `sd9`"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    cli_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_tiny_model_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["tiny-model", str(tmp_path / "tiny")]) == 0
    assert (tmp_path / "tiny" / "model_index.json").exists()
    assert (tmp_path / "tiny" / "tokenizer" / "tokenizer.json").exists()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("/no/such/model/folder", "Could not load model"),
        ("/no/such/model.safetensors", "not found"),
        ("tiny?sampler=warp", "bad option in 'tiny?sampler=warp': unknown sampler 'warp'"),
    ],
)
def test_a_bad_model_source_is_a_clear_error(
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    message: str,
) -> None:
    monkeypatch.setenv("ATELIER_MODEL", model)
    assert main(["generate", "x", "--steps", "1", "--out", str(cli_env)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "pipeline"),
    [
        (["--family", "sd2"], "StableDiffusionPipeline"),
        (["--family", "sd3"], "StableDiffusion3Pipeline"),
        (["--family", "flux"], "FluxPipeline"),
        (["--xl"], "StableDiffusionXLPipeline"),
    ],
)
def test_tiny_model_of_each_family_renders_through_generate_model_dir(
    cli_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], pipeline: str
) -> None:
    folder = cli_env.parent / "model"
    assert main(["tiny-model", str(folder), *argv]) == 0
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == pipeline
    capsys.readouterr()
    assert main(["generate", "a lighthouse", "--model", str(folder), "--seed", "3", "--steps", "2",
                 "--aspect", "3:2", "--out", str(cli_env)]) == 0
    [written] = [Path(line) for line in capsys.readouterr().out.split()]
    params = read_png_params(written.read_bytes())
    assert (params["model"], params["seed"], params["steps"]) == ("model", 3, 2)
    with Image.open(written) as image:
        assert image.size == (params["width"], params["height"])


def test_tiny_model_refuses_xl_with_another_family(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["tiny-model", str(tmp_path / "m"), "--xl", "--family", "sd3"]) == 2
    assert "--xl means --family sdxl" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
