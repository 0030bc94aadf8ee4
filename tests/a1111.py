"""AUTOMATIC1111's infotext reading, transcribed for the tests (modules/infotext_utils.py: re_param and
parse_generation_parameters): the reader emogen's `parameters` PNG chunk must satisfy."""

import json
import re

A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, parameters) as AUTOMATIC1111's PNG Info reads them."""
    *lines, last = text.strip().split("\n")
    prompt = "\n".join(line for line in lines if not line.startswith("Negative prompt:"))
    negative = next((line[len("Negative prompt:"):].strip() for line in lines if line.startswith("Negative prompt:")), "")
    params = {}
    for key, value in A1111_PARAM.findall(last):
        params[key.strip()] = json.loads(value) if value.startswith('"') else value.strip()
    return prompt, negative, params
