"""`--help`: the config groups a user chooses from, without the schemas the options build on
(schema/*) or the base every system option extends (system: base)."""

from pathlib import Path

from omegaconf import OmegaConf

INTERNAL = {"schema", "hydra"}  # groups of conf/ that are not choices
BASES = {"system": "base"}  # an option the group's other options extend


def user_groups(conf_dir: str) -> str:
    """`group: option, option, ...` for each group under `conf_dir`, one per line."""
    lines = []
    for group in sorted(p for p in Path(conf_dir).iterdir() if p.is_dir() and p.name not in INTERNAL):
        options = sorted(f.stem for f in group.glob("*.yaml") if f.stem != BASES.get(group.name))
        lines.append(f"{group.name}: {', '.join(options)}")
    return "\n".join(lines)


def register_help(conf_dir: str) -> None:
    """The `${user_groups:}` of the help template (conf/config.yaml)."""
    OmegaConf.register_new_resolver("user_groups", lambda: user_groups(conf_dir), replace=True)
