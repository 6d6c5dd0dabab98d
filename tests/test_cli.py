"""The ``pp-diffusion`` command line: help texts, the digits demo and the ring check end to end, option errors."""

import re
import subprocess
import sys

import pytest

from pp_diffusion._cli import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: pp-diffusion" in out
    for command in ("demo", "ring"):
        assert re.search(rf"^\s+{command}\s+\S", out, re.MULTILINE), out  # the command with its explanation


def test_demo_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--out", "--seed", "--image", "--sigma", "--particles", "--chains", "--steps"):
        assert re.search(rf"^\s+{option} \w+\s+\S", out, re.MULTILINE), (option, out)
    for option in ("--mask", "--sampler"):
        assert re.search(rf"^\s+{option} {{", out, re.MULTILINE), (option, out)
    assert "pp_diffusion_demo.png" in out  # the default output path


HEAVY = ("jax", "numpyro", "arviz", "arviz_base", "matplotlib", "xarray")


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["ring", "--help"], ["--version"]])
def test_help_imports_neither_jax_nor_arviz(argv):
    """``pp-diffusion --help`` answers at once: ``python -m pp_diffusion._cli ARGV`` (run here through
    runpy, so that the subprocess can report its ``sys.modules``) imports none of the heavy packages."""
    code = (f"import runpy, sys\nsys.argv = ['pp-diffusion', *{argv!r}]\n"
            "try:\n    runpy.run_module('pp_diffusion._cli', run_name='__main__')\n"
            "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pp-diffusion" in out.stdout
    assert out.stdout.splitlines()[-1] == "HEAVY []", out.stdout


def test_the_package_loads_its_public_names_on_first_use():
    code = (
        "import sys\nimport pp_diffusion as ppd\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "assert set(ppd.__all__) <= set(dir(ppd)), dir(ppd)\n"
        "from pp_diffusion import infer, DiffusionPrior, smc\n"
        "import pp_diffusion._infer, pp_diffusion.prior\n"
        "assert infer is pp_diffusion._infer.infer and DiffusionPrior is pp_diffusion.prior.DiffusionPrior\n"
        "assert smc is sys.modules['pp_diffusion.smc'] and ppd.networks is sys.modules['pp_diffusion.networks']\n"
        "assert all(getattr(ppd, name) is not None for name in ppd.__all__)\n"
        "try:\n    ppd.no_such_name\nexcept AttributeError as err:\n    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]", "module 'pp_diffusion' has no attribute 'no_such_name'"]


def test_demo_inpaints_a_digit_end_to_end(tmp_path, capsys):
    out_png = tmp_path / "demo.png"
    code = main(["demo", "--out", str(out_png), "--image", "1", "--particles", "16", "--chains", "2",
                 "--steps", "20"])
    assert code == 0
    out = capsys.readouterr().out
    assert out_png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"figure: {out_png.resolve()}" in out
    assert "r_hat" in out and len(re.findall(r"^x\[\(\d,\d\)\]", out, re.MULTILINE)) == 4  # 4 pixels summarised
    # Test image #1 is a 4; with its left half seen, the posterior mean recovers the image (about
    # 18 dB here; zeros in the unseen half give 10 dB) and the classifier reads a 4 in the draws.
    total = float(re.search(r"PSNR of the posterior mean: ([0-9.]+) dB", out).group(1))
    baseline = float(re.search(r"zeros elsewhere: ([0-9.]+) dB", out).group(1))
    assert total > baseline + 4.0, out
    read = float(re.search(r"on the \d+ draws: ([0-9.]+) read a 4", out).group(1))
    assert read >= 0.7, out


def test_ring_runs_end_to_end(tmp_path, capsys):
    out_png = tmp_path / "ring.png"
    code = main(["ring", "--out", str(out_png), "--seed", "1", "--chains", "2", "--draws", "200", "--steps", "50"])
    assert code == 0
    out = capsys.readouterr().out

    assert out_png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert out_png.stat().st_size > 10_000
    assert f"figure: {out_png.resolve()}" in out

    assert "r_hat" in out
    assert re.search(r"^radius\s", out, re.MULTILINE)  # the deterministic site is summarised too

    dist = float(re.search(r"sliced Wasserstein distance to exact samples:\s*([0-9.]+)", out).group(1))
    floor = float(re.search(r"exact-vs-exact floor[^:]*:\s*([0-9.]+)", out).group(1))
    assert 0 < floor and 0 < dist < 2 * floor, out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--steps", "0"], "steps must be a positive integer"),
        (["demo", "--chains", "-2"], "chains must be a positive integer"),
        (["demo", "--image", "-1"], "image must be a non-negative integer"),
        (["demo", "--sigma", "0"], "sigma must be a positive number"),
        (["demo", "--mask", "diagonal"], "invalid choice"),
        (["demo", "--sampler", "magic"], "invalid choice"),
        (["demo", "--seed", "-1"], "seed must be a non-negative integer"),
        (["demo", "--out", "figure.notanimage"], "image extension"),
        (["demo", "--frobnicate"], "unrecognized arguments"),
        (["ring", "--draws", "many"], "draws must be a positive integer"),
        (["ring", "--steps", "0"], "steps must be a positive integer"),
        ([], "required"),
    ],
)
def test_bad_options_exit_with_code_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
