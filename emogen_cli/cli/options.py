"""Every option that more than one command takes, declared once (as huggingface_hub's CLI does).

A command names an option by its `Annotated` alias, so its flags, help, default and config key are
the same wherever it appears:

    def generate(emotion: EmotionOpt = None, *, cfg: Config) -> None: ...

`opt(...)` ties an option to its config key (`command` in _utils.py turns the keyed options into the
Config; the help ends with `[default: 50; config: generate.steps]` read from Config()). `flag(...)`
declares an on/off switch, which takes no value and shows no `<bool>` metavar.

Option groups (`runtime_options`, `precision_options`, `sampling_options`, ...) are functions whose
parameters are options; `@command(options=[...])` appends them to a command's own.

A short flag means one thing everywhere (tests/test_cli.py checks): -c --config, -e --emotion,
-k --best-of, -m --mapper, -n --num-images, -o --out, -p --prompt. A few options are each command's own
by nature (`PER_COMMAND`: the output folder, a training stage's hyper-parameters): one factory declares
their flags and help, and the command gives the config key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from emogen_cli.core.choices import MAX_IMAGES


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value))
    if value == "":
        return '""'
    return str(value)


def _key_note(key: str) -> str:
    """`[default: 50; config: generate.steps]`, read from Config() so help never drifts from the defaults."""
    from emogen_cli.core.config import CHOICES, Config

    section, name = key.split(".")
    default = getattr(getattr(Config(), section), name)
    parts = [] if default is None else [f"default: {_show(default)}"]
    if key in CHOICES:
        parts.append(f"one of: {', '.join(CHOICES[key])}")
    parts.append(f"config: {key}")
    return escape(f"[{'; '.join(parts)}]")


def _completer(allowed: Sequence[str], as_list: bool) -> Callable[[str], list[str]]:
    def complete(incomplete: str) -> list[str]:
        head, _, last = incomplete.rpartition(",") if as_list else ("", "", incomplete)
        return [f"{head}," * bool(head) + c for c in allowed if c.startswith(last)]

    return complete


def opt(*flags: str, key: str | None = None, help: str = "", **kwargs: Any) -> Any:
    """A typer.Option; with `key`, the option sets that config key (see `command`), its help ends with the
    default from Config() and the key, and its choices (emogen_cli.core.choices) complete in the shell."""
    if key is None:
        return typer.Option(*flags, help=help, **kwargs)
    from emogen_cli.core.config import CHOICES, Config

    allowed = CHOICES.get(key)
    if allowed and "autocompletion" not in kwargs:
        section, name = key.split(".")
        kwargs["autocompletion"] = _completer(allowed, isinstance(getattr(getattr(Config(), section), name), list))
    info = typer.Option(*flags, help=f"{help} {_key_note(key)}".strip(), show_default=False, **kwargs)
    info.emogen_key = key  # read by `command`
    return info


def flag(*flags: str, key: str | None = None, help: str = "", **kwargs: Any) -> Any:
    """An on/off switch: like `opt`, without the `<bool>` metavar Typer would show as if it took a value."""
    return opt(*flags, key=key, help=help, metavar="", **kwargs)


# -- how a command runs and reports -------------------------------------------------------------------------

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (see configs/default.yaml).", show_default=False)
]
JsonOpt = Annotated[bool, flag("--json", help="Print the result as JSON on stdout (progress stays on stderr; "
                                              "see docs/json.md).")]
SeedOpt = Annotated[int | None, opt("--seed", key="runtime.seed", help="Random seed (0 .. 2**32-1).")]
DeviceOpt = Annotated[str | None, opt("--device", key="runtime.device", help="auto, cpu, mps, cuda or cuda:N.")]
PrecisionOpt = Annotated[str | None, opt("--mixed-precision", key="runtime.mixed_precision",
                                         help="auto: bf16 (or fp16) on CUDA, fp32 on CPU.")]
StrictOpt = Annotated[bool | None, flag("--strict", key="generate.strict", help="Refuse a --model other than the "
                                       "base model the mapper was trained on (by default: a warning).")]
OverwriteOpt = Annotated[bool, flag("--overwrite", help="Replace existing outputs instead of refusing or adding to them: "
                                    "generate, transfer and fuse first delete their earlier images in --out (the same "
                                    "file names, their grids, rejected/ candidates and index entries) and a stale "
                                    "evaluation/, then number from 0; the trainers let an --import-* replace files "
                                    "in --out.")]


def runtime_options(device: DeviceOpt = None, seed: SeedOpt = None, config: ConfigOpt = None,
                    json_: JsonOpt = False) -> None:
    """Option group (see `command`): where a command runs, its seed, its config file and how it reports.
    Every public command takes it."""


CompileOpt = Annotated[bool | None, flag("--compile", key="runtime.compile",
                                         help="torch.compile the UNet (GPU: faster after a slow first step).")]


def precision_options(mixed_precision: PrecisionOpt = None, compile_: CompileOpt = None) -> None:
    """Option group: the number format of the commands that run Stable Diffusion or train."""


# -- models ---------------------------------------------------------------------------------------------------

ModelOpt = Annotated[str | None, opt("--model", key="model.pretrained",
                                     help="Stable Diffusion hub id or local diffusers folder.")]
FamilyOpt = Annotated[str | None, opt("--family", key="model.family",
                                      help="Model family: auto (read from the model's model_index.json), sd15 or "
                                           "sdxl.")]
ClipOpt = Annotated[str | None, opt("--clip", key="model.clip", help="CLIP hub id or local folder.")]
ResolutionOpt = Annotated[int | None, opt("--resolution", key="model.resolution",
                                          help="Image size in pixels (a multiple of 8).")]
SizeOpt = Annotated[int | None, opt("--size", key="model.resolution", hidden=True, help="Alias of --resolution.")]
MapperOpt = Annotated[str | None, opt("--mapper", "-m", key="generate.mapper",
                                      help="Mapper bundle: a folder or a Hub repo id.")]
EncoderOpt = Annotated[Path | None, opt("--encoder", key="mapper.encoder",
                                        help="Stage-1 encoder folder (train-encoder's output).")]
DataOpt = Annotated[Path | None, opt("--data", key="data.root", help="EmoSet root folder.")]
ProbeOpt = Annotated[Path | None, opt("--probe", key="evaluate.probe",
                                      help="CLIP emotion probe that rates images (best-of, --until-confident, "
                                           "Emo-A): .safetensors or the official .pth; default: the mapper "
                                           "bundle's emotion_probe.safetensors.")]

# -- what to generate ------------------------------------------------------------------------------------------

EmotionOpt = Annotated[str | None, typer.Option(
    "--emotion", "-e", help="Emotion name; generate and transfer also take a comma-separated list or 'all' (their "
    "default unless --va is given).", show_default=False)]
VaOpt = Annotated[str | None, typer.Option(
    "--va", help="A valence,arousal point in [0, 1] (NRC VAD scale) instead of --emotion, e.g. 0.8,0.3: the eight "
    "emotions mixed in the emotion space by closeness.", show_default=False)]
SigmaOpt = Annotated[float | None, typer.Option(
    "--sigma", help="Width of the valence-arousal kernel over the emotions' coordinates (with --va, or for "
    "`grid va`). " + escape("[default: 0.15]"), show_default=False)]
IntensityOpt = Annotated[str | None, typer.Option(
    "--intensity", help="Emotion strength α in [0, 4]: 0 the prompt without the emotion (for generate: the empty "
    "prompt), 1 EmoGen's (the default), above 1 stronger. generate, transfer and fuse take several, e.g. "
    "0,0.5,1,1.5, and also write one strip per seed.", show_default=False)]
BestOfOpt = Annotated[int | None, opt("--best-of", "-k", key="generate.best_of",
                                      help="Make K candidates per image and keep the one the CLIP emotion probe "
                                           "rates highest (image n: seeds S+n, then S+n+j*2**32).")]
KeepAllOpt = Annotated[bool, flag("--keep-all", help="With --best-of: keep the other candidates in rejected/ "
                                                     "(which evaluate skips).")]
PromptOpt = Annotated[str, typer.Option("--prompt", "-p", help="Template with {} where the emotion goes, "
                                                               "e.g. '{} a street'.")]
SamplesOpt = Annotated[int | None, typer.Option(
    "--samples", help="Samples drawn from each emotion's Gaussian in the emotion space (decompose averages them, "
    "default 64; export writes each as one vector of the embedding, default: the mapped mean, 1 vector).",
    min=1, show_default=False)]


def _count(value: int) -> int:
    """-n's range, checked here rather than by Typer's min/max, whose `[1<=x<=10000]` squeezes the help."""
    if value < 1:
        raise typer.BadParameter("Input should be greater than or equal to 1")
    if value > MAX_IMAGES:
        raise typer.BadParameter(f"Input should be less than or equal to {MAX_IMAGES}")
    return value


CountOpt = Annotated[int, typer.Option("--num-images", "-n", help=f"Images per emotion (and prompt), 1 to {MAX_IMAGES}.",
                                       callback=_count)]
StepsOpt = Annotated[int | None, opt("--steps", key="generate.steps", help="Denoising steps.")]
GuidanceOpt = Annotated[float | None, opt("--guidance", key="generate.guidance",
                                          help="Classifier-free guidance scale (0 or more; 1 or less turns it off).")]
SchedulerOpt = Annotated[str | None, opt("--scheduler", key="generate.scheduler", help="Sampler.")]
BaselineOpt = Annotated[bool, flag("--baseline", help="Plain SD with 'a photo that evokes {emotion}', same code path.")]

# -- each command's own (PER_COMMAND): one declaration of flags and help, the command names the key ----------

PER_COMMAND = {
    "--out": "each command's output folder",
    "--batch-size": "the batch of the command's stage (generation or one of the trainers)",
    "--max-steps": "a training stage's length",
    "--lr": "a training stage's learning rate",
    "--checkpoint-every": "a training stage's checkpoint interval",
}


def out_option(key: str | None = None, default: str = "") -> Any:
    """--out/-o, the command's output folder: set by config `key`, or (without one) defaulting as `default` says."""
    if key is not None:
        return Annotated[Path | None, opt("--out", "-o", key=key, help="Output folder.")]
    note = escape(f" [default: {default}]") if default else ""
    return Annotated[Path | None, typer.Option("--out", "-o", help=f"Output folder.{note}", show_default=False)]


def batch_size_option(section: str) -> Any:
    return Annotated[int | None, opt("--batch-size", key=f"{section}.batch_size", help="Images per batch (per device).")]


def max_steps_option(section: str) -> Any:
    return Annotated[int | None, opt("--max-steps", key=f"{section}.max_steps",
                                     help="Stop after this many optimizer steps.")]


def lr_option(section: str) -> Any:
    return Annotated[float | None, opt("--lr", key=f"{section}.lr", help="Learning rate.")]


def checkpoint_every_option(section: str) -> Any:
    return Annotated[int | None, opt("--checkpoint-every", key=f"{section}.checkpoint_every",
                                     help="Steps between checkpoints.")]


GenerateOutOpt = out_option("generate.output")
GenerateBatchOpt = batch_size_option("generate")

# -- option groups ---------------------------------------------------------------------------------------------


def sampling_options(
    num_images: CountOpt = 4,
    intensity: IntensityOpt = None,
    best_of: BestOfOpt = None,
    keep_all: KeepAllOpt = False,
    probe: ProbeOpt = None,
    mapper: MapperOpt = None,
    out: GenerateOutOpt = None,
    steps: StepsOpt = None,
    guidance: GuidanceOpt = None,
    scheduler: SchedulerOpt = None,
    resolution: ResolutionOpt = None,
    size: SizeOpt = None,
    batch_size: GenerateBatchOpt = None,
    baseline: BaselineOpt = False,
    model: ModelOpt = None,
    strict: StrictOpt = None,
    family: FamilyOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Option group: what generate, transfer and fuse share besides `runtime_options`."""


ResumeOpt = Annotated[bool, flag("--resume", help="Continue from the newest checkpoint in --out.")]


def trainer_options(resume: ResumeOpt = False, overwrite: OverwriteOpt = False) -> None:
    """Option group: what both trainers take besides `runtime_options` and `precision_options`."""


PrepareOutOpt = out_option("data.prepared")
EncoderOutOpt = out_option("encoder.output")
MapperOutOpt = out_option("mapper.output")
EvaluateOutOpt = out_option(default="FOLDER/evaluation")
ExportOutOpt = out_option(default="runs/embeddings")
EditOutOpt = out_option(default="runs/edits, beside generate.output")
GridOutOpt = out_option(default="runs/va-grid, beside generate.output")

EncoderMaxStepsOpt, MapperMaxStepsOpt = max_steps_option("encoder"), max_steps_option("mapper")
EncoderBatchOpt, MapperBatchOpt = batch_size_option("encoder"), batch_size_option("mapper")
EncoderLrOpt, MapperLrOpt = lr_option("encoder"), lr_option("mapper")
EncoderCheckpointOpt, MapperCheckpointOpt = checkpoint_every_option("encoder"), checkpoint_every_option("mapper")

# -- emogen serve ------------------------------------------------------------------------------------------------

HostOpt = Annotated[str | None, opt("--host", key="serve.host", help="Address to listen on; any other than "
                                                                    "127.0.0.1 needs --token (or --insecure).")]
PortOpt = Annotated[int | None, opt("--port", key="serve.port", help="Port (0: any free port).")]
TokenOpt = Annotated[str | None, opt("--token", key="serve.token", envvar="EMOGEN_TOKEN", show_envvar=True,
                                     help="Bearer token every route requires (the studio: open /?token=T once).")]
InsecureOpt = Annotated[bool, flag("--insecure", help="Serve on a non-loopback --host without a token (a warning "
                                                      "says so): only on a trusted network.")]
QueueSizeOpt = Annotated[int | None, opt("--queue-size", key="serve.queue_size",
                                         help="Jobs that may wait; a full queue answers 429 with Retry-After.")]
MaxImagesOpt = Annotated[int | None, opt("--max-images", key="serve.max_images", help="Largest n per request.")]
ServeOutOpt = out_option("serve.output")


def serve_options(host: HostOpt = None, port: PortOpt = None, token: TokenOpt = None, insecure: InsecureOpt = False,
                  queue_size: QueueSizeOpt = None, max_images: MaxImagesOpt = None, out: ServeOutOpt = None,
                  mapper: MapperOpt = None, model: ModelOpt = None, steps: StepsOpt = None,
                  guidance: GuidanceOpt = None, scheduler: SchedulerOpt = None,
                  resolution: ResolutionOpt = None) -> None:
    """Option group: what `emogen serve` takes besides `runtime_options` and `precision_options`."""
