"""`emogen serve`: the web studio and the HTTP API on one resident model (needs the serve extra).

Usage examples:
    emogen serve --mapper runs/mapper
    emogen serve --mapper runs/mapper --host 0.0.0.0 --token "$EMOGEN_TOKEN" --port 7860
    accelerate launch --num_processes 2 -m emogen_cli serve --mapper runs/mapper --port 7860   # 7860, 7861
"""

from __future__ import annotations

from typing import Any

from emogen_cli.cli._utils import RichReporter, command, emit, say
from emogen_cli.cli.options import precision_options, runtime_options, serve_options
from emogen_cli.core.config import Config


def _render_ready(info: dict[str, Any]) -> None:
    auth = "token required" if info["auth"] else "no token (loopback only)"
    say(f"emogen studio on {info['url']}  (API: {info['url']}v1/..., docs: {info['url']}docs; {auth}; "
        f"images in {info['out']}; Ctrl-C to stop)")


@command(examples="""
emogen serve --mapper runs/mapper
emogen serve --mapper runs/mapper --out runs/served --queue-size 32
emogen serve --mapper runs/mapper --host 0.0.0.0 --token "$EMOGEN_TOKEN"
emogen serve -c configs/tiny.yaml --port 0 --json
accelerate launch --num_processes 2 -m emogen_cli serve --mapper runs/mapper --port 7860
""", writes=["serve.output"], options=[serve_options, precision_options, runtime_options])
def serve(*, insecure: bool, json_: bool, cfg: Config) -> None:
    """Serve the web studio and the HTTP API (OpenAI-compatible images, jobs with live progress) on one
    loaded model; images go into --out with the CLI's names, seeds, metadata and index.jsonl."""
    from emogen_cli.serve.server import check_installed, serve as run

    check_installed()  # one line naming the extra, before any model loads
    reporter = RichReporter()

    def ready(info: dict[str, Any]) -> None:
        reporter.close()  # the loading bars are done; the server's lines follow
        emit(info, json_, _render_ready)

    try:
        result = run(cfg, insecure=insecure, reporter=reporter, on_ready=ready)
    finally:
        reporter.close()
    if not json_:
        say(f"Stopped after {result['jobs']} job(s) ({result['succeeded']} finished, {result['cancelled']} cancelled); "
            f"{result['out']}/index.jsonl is up to date.")
