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


COMMANDS = ["prepare", "train-encoder", "train-mapper", "generate", "transfer", "fuse", "decompose", "evaluate"]


def _flat(text: str) -> str:
    """Help text without Rich's box drawing and line wrapping."""
    return " ".join(text.replace("│", " ").split())


@pytest.mark.parametrize("command", COMMANDS + ["dev tiny-bundle", "dev synthetic-emoset"])
def test_help_shows_examples_and_config_keys(cli, command):
    result = cli(*command.split(), "--help")
    assert result.code == 0
    text = _flat(result.out)
    assert f"Examples emogen {command}" in text or f"Examples accelerate launch -m emogen_cli {command}" in text
    assert "config: runtime.seed]" in text


def test_help_defaults_come_from_the_config(cli):
    text = _flat(cli("generate", "--help").out)
    assert "[default: 50; config: generate.steps]" in text
    assert "[default: unipc; one of: unipc, ddim, euler, dpm, pndm; config: generate.scheduler]" in text
    assert "--size" not in text  # the hidden alias of --resolution
    assert "[default: 0.01; config: mapper.lambda_attr]" in _flat(cli("train-mapper", "--help").out)


def _keyed_commands():
    from emogen_cli.cli import app
    from emogen_cli.cli._utils import _keyed
    from emogen_cli.cli.dev import app as dev_app

    for info in app.registered_commands + dev_app.registered_commands:
        yield info.name, _keyed(info.callback)


def test_one_flag_name_per_config_key():
    flags: dict[str, set[str]] = {}
    for name, (signature, keyed) in _keyed_commands():
        for param, (key, flag) in keyed.items():
            meta = signature.parameters[param].annotation.__metadata__[0]
            if not meta.hidden and flag != "--out":  # --out is every command's own output folder
                flags.setdefault(key, set()).add(flag)
    assert {key: names for key, names in flags.items() if len(names) > 1} == {}
    assert flags["model.resolution"] == {"--resolution"}


def test_command_bodies_build_no_overrides_by_hand():
    from pathlib import Path

    import emogen_cli.cli as package

    for path in Path(package.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "locals()" not in text, path
        assert "overrides(" not in text or path.name == "_utils.py", path


def test_options_become_config_and_remember_what_was_given(monkeypatch, tmp_path):
    from emogen_cli.cli import infer
    from emogen_cli.core.config import Config
    from emogen_cli.stage2.mapper import trained_model

    seen = {}
    monkeypatch.setattr(infer, "_run", lambda requests, cfg, *rest: seen.update(cfg=cfg))
    default = Config().model.pretrained
    infer.generate(emotion="awe", num_images=1, mapper=None, out=tmp_path, steps=7, guidance=None, scheduler="DDIM",
                   resolution=None, size=64, batch_size=None, baseline=False, model=default, overwrite=False,
                   device=None, mixed_precision=None, seed=3, config=None, json_=False)
    cfg = seen["cfg"]
    assert (cfg.generate.steps, cfg.generate.scheduler, cfg.model.resolution, cfg.runtime.seed) == (7, "ddim", 64, 3)
    assert cfg.generate.output == str(tmp_path) and cfg.generate.guidance == Config().generate.guidance
    # an explicit --model equal to the built-in default wins over the model the bundle records
    assert trained_model(cfg, "pretrained", {"base_model": "other/model"}) == default
    assert trained_model(cfg, "clip", {"clip_model": "other/clip"}) == "other/clip"  # --clip not given


def test_shell_completion_is_on_and_completes_choices(cli):
    from emogen_cli.cli.options import _completer
    from emogen_cli.core.choices import METRICS, SCHEDULERS

    assert "--install-completion" in cli("--help").out
    assert _completer(SCHEDULERS, False)("d") == ["ddim", "dpm"]
    assert _completer(METRICS, True)("fid,s") == ["fid,sem-c", "fid,sem-d"]


def test_progress_keeps_its_bar_in_80_columns():
    import io
    import re

    from rich.console import Console

    from emogen_cli.cli._utils import RichReporter

    buffer = io.StringIO()
    with RichReporter(Console(file=buffer, width=80, force_terminal=True, color_system=None)) as reporter:
        reporter.start("Training mapper", 20000)
        reporter.advance("Training mapper", 10000, loss=0.123456, l_ldm=0.98765, l_attr=2.7654, l_emo=4.4321, epoch=3)
        reporter.finish("Training mapper")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue()).replace("\r", "\n")
    lines = [line for line in plain.splitlines() if line.strip()]
    bar = next(line for line in reversed(lines) if "Training mapper" in line)
    assert "━" in bar and "10000/20000" in bar  # the bar, its count and times share one line
    assert lines[-1].strip() == "loss 0.1235  l_ldm 0.9877  l_attr 2.765  l_emo 4.432  epoch 3"
    assert all(len(line.rstrip()) <= 80 for line in lines)


def test_work_of_unknown_length_shows_no_bar():
    import io
    import re

    from rich.console import Console

    from emogen_cli.cli._utils import RichReporter

    buffer = io.StringIO()
    with RichReporter(Console(file=buffer, width=80, force_terminal=True, color_system=None)) as reporter:
        reporter.start("Building emotion space")
        reporter.finish("Building emotion space")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())
    assert "Building emotion space" in plain and "━" not in plain and "?" not in plain


def test_plural():
    from emogen_cli.cli._utils import plural

    assert (plural(1, "image"), plural(2, "image"), plural(0, "image")) == ("1 image", "2 images", "0 images")


def test_torch_advice_is_cut_but_a_file_name_is_kept():
    from emogen_cli.cli import _one_line

    named = "Config file 'runs/my_weights_only.yaml' does not exist."
    assert _one_line(named) == named  # a user's file name is never mistaken for torch's advice
    advice = "Cannot read 'x.pt': Weights only load failed. Re-running with weights_only=False will run code"
    assert "would run code" in _one_line(advice) and "weights_only=False" not in _one_line(advice)


# -- each option declared once (cli/options.py) ----------------------------------------------------------------


def _commands():
    """(path, click command) of every command, the hidden dev group's included, as the app builds them."""
    import typer

    from emogen_cli.cli import app

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    return list(walk(typer.main.get_command(app), []))


def _declaration(param) -> dict:
    import re

    help_ = param.help or ""
    key = re.search(r"config: ([a-z_]+\.[a-z_]+)\]", help_)
    return {"flags": sorted(param.opts + param.secondary_opts), "help": help_, "default": repr(param.default),
            "key": key.group(1) if key else None, "type": param.display_type(None) if not param.is_flag else "flag",
            "hidden": param.hidden}


def test_each_option_name_is_declared_once():
    """Two commands with the same option name declare it the same: flags, help, default, config key, type. The
    options in PER_COMMAND (each command's own output folder, a stage's hyper-parameters) share their flags,
    type and help, and differ in the config key (so in the default the help shows). dev's helpers are
    excluded: they describe test fixtures (`--size tiny|mid`, `--data` the synthetic set)."""
    from emogen_cli.cli.options import PER_COMMAND

    seen: dict[str, tuple[str, dict]] = {}
    clashes = []
    for path, cmd in _commands():
        if path.startswith("dev "):
            continue
        for param in cmd.params:
            if param.param_type_name != "option" or param.name == "help":
                continue
            decl = _declaration(param)
            for name in param.opts + param.secondary_opts:
                if name in PER_COMMAND:
                    decl = {**decl, "help": decl["help"].split(" \\[")[0], "default": None, "key": None}
                first = seen.setdefault(name, (path, decl))
                if first[1] != decl:
                    clashes.append(f"{name}: {first[0]} {first[1]} != {path} {decl}")
    assert clashes == []


def test_a_short_flag_means_one_thing_everywhere():
    meaning: dict[str, set[str]] = {}
    for path, cmd in _commands():
        for param in (p for p in cmd.params if p.param_type_name == "option"):
            for short in (o for o in param.opts + param.secondary_opts if not o.startswith("--")):
                meaning.setdefault(short, set()).add(next(o for o in param.opts if o.startswith("--")))
    assert {short: longs for short, longs in meaning.items() if len(longs) > 1} == {}
    assert meaning["-k"] == {"--best-of"}


def test_every_command_uses_the_shared_runtime_options():
    for path, cmd in _commands():
        if path.startswith("dev "):
            continue
        names = {o for p in cmd.params for o in p.opts}
        assert {"--device", "--seed", "--config", "--json"} <= names, path


def test_flags_show_no_bool_metavar(cli):
    paths = [""] + [path for path, _ in _commands()] + ["dev"]
    for path in paths:
        result = cli(*path.split(), "--help")
        assert result.code == 0, path
        assert "<bool>" not in result.out, f"emogen {path} --help"
    assert "--keep-all  " in _flat(cli("generate", "--help").out).replace("--keep-all With", "--keep-all  With")


def test_edit_reads_best_of_from_the_config(cli, tmp_path):
    """edit's --best-of is generate.best_of (one declaration): before, edit ignored the config's value, so
    --keep-all with `best_of: 3` in the config was refused as having no candidates to keep."""
    config = tmp_path / "c.yaml"
    config.write_text(f"generate:\n  best_of: 3\n  mapper: {tmp_path / 'no-mapper'}\n")
    result = cli("edit", tmp_path, "-e", "awe", "--keep-all", "-c", config, "--out", tmp_path / "o")
    assert result.code != 0 and "--keep-all" not in result.err


def test_grid_dash_dash_va_is_the_va_grid():
    """`emogen grid --va` (the spelling of the docs and issues) runs `emogen grid va`, options kept."""
    from emogen_cli.cli import _legacy_spellings

    assert _legacy_spellings(["grid", "--va", "--out", "d", "--seed", "3"]) == ["grid", "va", "--out", "d", "--seed", "3"]
    assert _legacy_spellings(["generate", "--va", "0.8,0.3"]) == ["generate", "--va", "0.8,0.3"]
