"""Config dataclasses to command lines: one `--flag` per field, its help from the field's metadata.

    @dataclass
    class MyConfig:
        steps: int = field(default=40, metadata={"help": "optimisation steps"})
        def validate(self): ...            # raise one ValueError listing every bad field

    parser = config_parser(MyConfig, "python -m neuralcpu mine", __doc__)
    cfg, extra = parse_config(MyConfig, parser, argv)   # extra: flags added to the parser by hand
"""

from __future__ import annotations

import argparse
import dataclasses


def config_parser(cls, prog: str, description: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser with a flag for every field of the dataclass `cls`; bools get --x / --no-x."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=f.default, help=f.metadata["help"] + f" (default: {f.default})")
    return parser


def parse_config(cls, parser: argparse.ArgumentParser, argv: list[str] | None):
    """(a validated `cls` from `argv`, {other flag: value}); a config that fails `validate()` is a usage error."""
    args = vars(parser.parse_args(argv))
    names = {f.name for f in dataclasses.fields(cls)}
    cfg = cls(**{k: v for k, v in args.items() if k in names})
    try:
        cfg.validate()
    except ValueError as e:
        parser.error(str(e))
    return cfg, {k: v for k, v in args.items() if k not in names}
