"""Convert a dataset's official download into a task folder for `python -m alp_jax.evaluate`.

  python -m alp_jax.evaluate.recipes --list
  python -m alp_jax.evaluate.recipes NAME --source DIR --out TASK_DIR [--link | --copy] [--max-missing F]

By default rows name the source audio by absolute path (nothing is copied); --link puts symlinks and --copy copies
under TASK_DIR/audio (then the folder is self-contained). Exit 2 with a message naming the file on missing or bad
source files, a foreign non-empty --out, or more missing audio than --max-missing allows.
"""
from __future__ import annotations

import argparse
import sys

from alp_jax.evaluate import recipes


def _list() -> str:
  lines = []
  for recipe in recipes.RECIPES.values():
    lines += [f"{recipe.name}  ({recipe.kind} task, {recipe.metric})", f"    source: {recipe.layout}",
              f"    splits: {recipe.splits}"]
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m alp_jax.evaluate.recipes", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("name", nargs="?", help="recipe name (see --list)")
  parser.add_argument("--source", help="the dataset's download folder")
  parser.add_argument("--out", help="the task folder to write (new, empty, or one a recipe wrote)")
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument("--link", dest="audio_mode", action="store_const", const="link", help="symlink audio")
  mode.add_argument("--copy", dest="audio_mode", action="store_const", const="copy", help="copy audio")
  parser.add_argument("--max-missing", type=float, default=None,
                      help="share of a split's audio that may be absent (dropped and reported) before refusing; "
                           "default per recipe (0.02, or 0.25 for YouTube-sourced datasets)")
  parser.add_argument("--list", action="store_true", help="show the recipes and their expected source layout")
  args = parser.parse_args(argv)
  if args.list:
    print(_list())
    return 0
  if not (args.name and args.source and args.out):
    parser.error("NAME, --source and --out are required (or --list)")
  try:
    lines = recipes.run(args.name, args.source, args.out, args.audio_mode or "absolute", args.max_missing)
  except recipes.RecipeError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"[recipes] {args.name}: wrote {args.out}")
  for line in lines:
    print(f"  {line}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
