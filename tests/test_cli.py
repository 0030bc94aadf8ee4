import subprocess
import sys

import pytest


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from emogen_cli.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'accelerate', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "train-mapper" in result.stdout and "evaluate" in result.stdout


@pytest.mark.parametrize("command", ["prepare", "train-encoder", "train-mapper", "generate", "transfer", "fuse",
                                     "decompose", "evaluate"])
def test_every_command_has_help_and_json(cli, command):
    result = cli(command, "--help")
    assert result.code == 0
    assert "--json" in result.out


def test_config_error_is_one_clean_line(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mapper:\n  lamda_attr: 1\n")
    result = cli("prepare", "--config", bad)
    assert result.code == 1
    assert "Unknown config key 'mapper.lamda_attr'" in result.err
    assert "Traceback" not in result.err


def test_missing_root_is_a_clear_error(cli, tmp_path):
    result = cli("prepare", "--data", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert result.code == 1
    assert "does not exist" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "out").exists()


def test_console_script_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "emogen_cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("emogen ")
