"""Hydra's and OmegaConf's multi-line error reports as one line that names the key and what is
allowed, for the command line's exit-code-2 contract."""

import re
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from trainer.cli.plugins import missing_plugin
from trainer.cli.preflight import CONF_DIR

# What OmegaConf says about a value of the wrong type -> what the key allows
TYPE_PROBLEMS = {
    "could not be converted to Integer": "an integer",
    "could not be converted to Float": "a number",
    "is not a valid bool": "true or false",
    "is not a ListConfig": "a list in brackets, e.g. [a, b]",
    "is not Optional": "a value (this key cannot be null)",
    "Cannot merge DictConfig with ListConfig": "a list of entries, e.g. [{...}]",
    "expected one of": "one of the values named",
}


def one_line(err: Exception) -> str:
    reason = err.__cause__ or err.__context__  # what OmegaConf said below Hydra's summary
    text = f"{err} {reason or ''}"
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    cause = (str(reason).splitlines()[0] if reason is not None and str(reason) else first).rstrip(".")
    cause = re.sub(r", expected one of \[[^\]]*\]", "", cause)  # the choices go to "allowed"
    if plugin := missing_plugin(text):  # a launcher or sweeper preset without its plugin
        return plugin
    if unloadable := re.search(r"Could not load '([^'/]+)/([^']+)'", text):  # an option in a list of options
        group, option = unloadable.groups()
        return f"{group}: {option!r} is not an option; allowed: {', '.join(group_options(group))}"
    if empty := re.search(r"Could not find '([^'/]+)/'", text):  # `group=` with nothing after it
        return f"{empty.group(1)}: no option given; allowed: {', '.join(group_options(empty.group(1)))}"
    if missing := re.search(r"Could not find '([^']+)/([^']+)'", text):
        options = [o for o in getattr(err, "options", None) or [] if not o.startswith("schema")]
        return f"{missing.group(1)}: {missing.group(2)!r} is not an option; allowed: {', '.join(options)}"
    if unknown := re.search(r"Key '([^']+)' not in '(\w+)'", text):
        full_key = re.search(r"full_key: (\S+)", text)
        key = full_key.group(1) if full_key else unknown.group(1)
        key = _list_entry_key(str(err), key) or key
        return f"{key}: no such key in {unknown.group(2)}; allowed: {allowed_keys(err)}"
    if override := getattr(err, "override", None):  # the override grammar could not read it
        return unreadable(override)
    if repeated := re.search(r"Multiple values for ([\w/]+)\. To override a value use 'override [\w/]+: (\S+)'", text):
        group, option = repeated.groups()
        return f"{group}: already chosen by the defaults, + adds a group that is not; allowed: {group}={option}"
    if ambiguous := re.search(r"Ambiguous value for argument '([^'=]+)=", text):
        key = ambiguous.group(1)
        return f"{key}: a comma-separated list is a sweep; allowed: -m (--multirun) to run one job per value"
    if present := re.search(r"An item is already at '([^']+)'", text):
        key = present.group(1)
        return f"{key}: already in the config, + adds new keys only; allowed: {key}=VALUE to change it"
    if merging := re.search(r"Error merging override ([^=\s]+)", text):
        key = merging.group(1)
        if key.startswith("~"):
            return f"{key[1:]}: cannot be removed; allowed: a value, e.g. {key[1:]}=VALUE"
        return f"{key}: {cause}{_allowed(text)}"
    if absent := re.search(r"Could not override '([^']+)'", text):  # e.g. a default a stage entry leaves out
        key = absent.group(1)
        return f"{key}: not in the composed config (see --cfg job); allowed: +{key}=VALUE to add it"
    if deleted := re.search(r"Could not delete from config\. '?([\w./]+)", text):
        return f"{deleted.group(1)}: cannot be deleted; allowed: another option, e.g. {deleted.group(1)}=NAME"
    if full_key := re.search(r"full_key: (\S+)", text):
        return f"{full_key.group(1)}: {cause}{_allowed(text)}"
    return " ".join(line.strip() for line in first.splitlines() if line.strip())


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def unreadable(override: str) -> str:
    """An override the grammar could not read: the character where reading stopped, and the value
    quoted (a quoted value may hold any character)."""
    key, _, value = override.partition("=")
    quote = "'" if '"' in value else '"'
    quoted = f"{key}={quote}{value}{quote}"
    where = stopping_character(key, value)
    found = f"reading stopped at {where!r} in {value!r}" if where else f"cannot read {override!r}"
    return f"{key}: {found}; allowed: the value quoted, e.g. {quoted!r} (quote it for the shell too)"


def stopping_character(key: str, value: str) -> str | None:
    """The first character of `value` at which the override grammar gives up (None if none alone does)."""
    parser = OverridesParser.create()
    for end in range(1, len(value) + 1):
        try:
            parser.parse_override(f"{key}={value[:end]}")
        except HydraException:
            return value[end - 1]
    return None


def _list_entry_key(text: str, key: str) -> str | None:
    """`stability.inject[1].bogus` for a key that the schema of a list's entries does not know
    (OmegaConf names only `bogus`): the entry is found in the override Hydra repeats."""
    repeated = re.search(r"use \+(.+)$", text, re.MULTILINE)
    if repeated is None:
        return None
    try:
        override = OverridesParser.create().parse_override(repeated.group(1).strip())
    except HydraException:
        return None
    entries = override.value()
    if not isinstance(entries, list):
        return None
    index = next((i for i, entry in enumerate(entries) if isinstance(entry, dict) and key in entry), None)
    return None if index is None else f"{override.key_or_group}[{index}].{key}"


def _allowed(text: str) -> str:
    if choices := re.search(r"expected one of (\[[^\]]*\])", text):
        return f"; allowed: {choices.group(1)}"
    allowed = next((allowed for problem, allowed in TYPE_PROBLEMS.items() if problem in text), None)
    return f"; allowed: {allowed}" if allowed else ""


def allowed_keys(err: Exception) -> str:
    """The keys of the schema a failed override was aimed at, when OmegaConf says which it was."""
    reason = err.__cause__ or err.__context__
    node = getattr(err, "parent_node", None) or getattr(reason, "parent_node", None)
    if node is not None:
        try:
            return ", ".join(str(k) for k in node.keys() if k != "hydra")
        except OmegaConfBaseException:
            pass
    return "see `python -m trainer --cfg job`"
