"""Schemathesis hooks of the fuzzing suite (loaded through SCHEMATHESIS_HOOKS).

Some documented limits cannot be written in JSON Schema, so a schema-valid request may be
refused with a 400 that says why; those refusals, and nothing else, are not reported as
failures:

* `search` on `GET /v0/evi/chats` holds at most 16 distinct words (runs of letters and
  digits), on top of its declared 1000 characters.
* Prompts, tools and configs (`/v0/evi/prompts|tools|configs`): the server marks these
  refusals with their own `code` (docs/decisions.md, "Configs, prompts and tools"):
  `unknown_reference` (a prompt, tool or voice that does not exist for the account),
  `still_referenced` (deleting what a config version uses), `invalid_json` (a tool's
  `parameters` string is not a JSON object) and `invalid_combination` (fields that exclude
  each other, such as a config prompt's `id` and `text`, or a tool listed twice).
"""

from __future__ import annotations

import re

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

TOO_MANY_WORDS = re.compile(r"search has \d+ words; give at most 16")
PLATFORM = re.compile(r"^[A-Z]+ /v0/evi/(prompts|tools|configs)(/|$)")
BEYOND_THE_SCHEMA = {"unknown_reference", "still_referenced", "invalid_json", "invalid_combination"}


@schemathesis.hook
def filter_failure(ctx, failure, case, response) -> bool:
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 400:
        return True
    try:
        body = response.json()
    except ValueError:
        return True
    label = case.operation.label
    if PLATFORM.match(label):
        return body.get("code") not in BEYOND_THE_SCHEMA
    if label != "GET /v0/evi/chats":
        return True
    return not (
        body.get("code") == "invalid_parameter"
        and TOO_MANY_WORDS.fullmatch(body.get("message") or "") is not None
    )
