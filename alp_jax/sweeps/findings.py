"""The study's five findings, each tested on a sweep's rows: supports, contradicts, inconclusive or cannot test.

Legend: x the data size (data_pairs); a *score* is a value turned higher-is-better (results.score); a *measure*
is one (model_size, budget, init or objective, task, evaluation, method, metric) curve; con = contrastive,
cap = captioning, sup = supervised init.

Every test reduces the rows to one *contrast* per measure (or per measure and x) that the finding predicts to be
> 0, computed per seed where the conditions share seeds (paired), else from the seed means. The estimate is the
mean over measures of the mean over seeds; its 95% interval is a bootstrap that resamples measures, then seeds
within each measure. Verdict: interval above 0 -> "supports", below 0 -> "contradicts", straddling 0 (or one
value, no interval) -> "inconclusive"; the axis the test needs is absent -> "cannot test", saying what is missing.

The tests (each finding's `test` text says the same):
1. Contrastive is more data-efficient at small scale: probe rows with mean pooling, at the smallest data size
   both objectives measured: con - cap.
2. Captioning scales better on language-involving tasks: task_family "language" rows (retrieval, captioning,
   zero-shot, LiT): cap's gain from the smallest to the largest shared data size minus con's gain (the gap
   shrinks). The fitted exponents (alpha, with intervals) of both are quoted beside it.
3. Attention pooling narrows the gap: probe rows at every data size with both poolings and both objectives:
   |con - cap| under mean pooling minus |con - cap| under attention pooling.
4. Supervised init helps less as data grows, and hurts speaker identification: (a) (sup - scratch) at the
   smallest shared data size minus the same at the largest, over all probe rows; (b) scratch - sup at the
   largest data size on speaker tasks (TaskRoles.speaker). Supports when both parts do, contradicts when
   either part does, cannot test when both cannot, else inconclusive.
5. Frame-level sound event detection declines with more caption data: SED rows (TaskRoles.sed): score at the
   smallest data size minus score at the largest. No SED rows -> cannot test.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Optional

import numpy as np

from alp_jax.sweeps import results

RESAMPLES = 1000
LEVEL = 0.95
SUPPORTS, CONTRADICTS, INCONCLUSIVE, CANNOT_TEST = "supports", "contradicts", "inconclusive", "cannot test"


@dataclasses.dataclass
class TaskRoles:
  """Which tasks play a role in a finding, matched on the task name (regular expressions, case-insensitive).

  speaker: speaker identification tasks (finding 4). sed: frame-level sound event detection (finding 5); a row
  is also SED when its method contains "frame" or its metric starts with "psds".
  """
  speaker: str = r"speaker|voxceleb|(^|[_-])sid($|[_-])"
  sed: str = r"(^|[_-])sed($|[_-])|sound_event_detection|audioset_strong"

  def is_speaker(self, row: dict) -> bool:
    return re.search(self.speaker, row["task"], re.IGNORECASE) is not None

  def is_sed(self, row: dict) -> bool:
    return (re.search(self.sed, row["task"], re.IGNORECASE) is not None or "frame" in row["method"].lower()
            or row["metric"].lower().startswith("psds"))


_CONTEXT = ("model_size", "budget")


def _cells(rows, fields) -> dict[tuple, dict[int, dict[int, float]]]:
  """{key of fields: {data_pairs: {seed: score}}} over the pretrained rows."""
  out: dict = {}
  for row in results.pretrained(rows):
    out.setdefault(results.key_of(row, fields), {}).setdefault(row["data_pairs"], {})[row["seed"]] = (
        results.score(row))
  return out


def _combine(cells: list[dict], signs: list[float], absolute: Optional[list[list[int]]] = None) -> list[float]:
  """Per-seed sum of sign * cell over seeds all cells share (paired), else the same sum of the seed means.

  absolute: groups of cell indices whose signed sum is taken in absolute value first (finding 3).
  """
  common = set.intersection(*(set(c) for c in cells))
  columns = [[c[s] for c in cells] for s in sorted(common)] or [[np.mean(list(c.values())) for c in cells]]
  out = []
  for values in columns:
    if absolute:
      out.append(sum(sign * abs(sum(values[i] * s for i, s in zip(group, (1, -1)))) for group, sign in
                     zip(absolute, signs)))
    else:
      out.append(sum(v * s for v, s in zip(values, signs)))
  return out


def summarise(contrasts: list[list[float]], *, resamples: int = RESAMPLES, level: float = LEVEL,
              seed: int = 0) -> dict:
  """Mean contrast over measures (each the mean of its seeds) with a measures-then-seeds bootstrap interval.

  -> {"estimate", "interval" ([lo, hi] or None when there is a single value), "measures", "values"}.
  """
  estimate = float(np.mean([np.mean(c) for c in contrasts]))
  values = sum(len(c) for c in contrasts)
  interval = None
  if values >= 2 and resamples:
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
      picked = rng.integers(0, len(contrasts), len(contrasts))
      draws.append(np.mean([np.mean(rng.choice(contrasts[i], len(contrasts[i]))) for i in picked]))
    tail = 100.0 * (1.0 - level) / 2.0
    interval = [float(v) for v in np.percentile(draws, [tail, 100.0 - tail])]
  return {"estimate": estimate, "interval": interval, "measures": len(contrasts), "values": values}


def _verdict(summary: dict) -> str:
  interval = summary["interval"]
  if interval is None:
    return INCONCLUSIVE
  if interval[0] > 0:
    return SUPPORTS
  if interval[1] < 0:
    return CONTRADICTS
  return INCONCLUSIVE


def _numbers(summary: dict, what: str) -> str:
  interval = summary["interval"]
  span = (f"95% interval [{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else
          "no interval: a single value (one measure, one seed)")
  return (f"{what} = {summary['estimate']:+.4f}, {span}, over {summary['measures']} measure(s) and "
          f"{summary['values']} value(s)")


def _result(number: int, finding: str, test: str, verdict: str, why: str, summary=None, parts=None) -> dict:
  out = {"number": number, "finding": finding, "test": test, "verdict": verdict, "why": why}
  if summary is not None:
    out.update(estimate=summary["estimate"], interval=summary["interval"])
  if parts is not None:
    out["parts"] = parts
  return out


def _tested(number, finding, test, contrasts, what, options, extra: str = "") -> dict:
  summary = summarise(contrasts, **options)
  verdict = _verdict(summary)
  return _result(number, finding, test, verdict, _numbers(summary, what) + extra, summary)


def _objective_pairs(rows, fields, keep) -> list[tuple[tuple, dict, dict]]:
  """(key, con cells, cap cells) for every key of fields (without objective) that both objectives measured."""
  cells = _cells([r for r in rows if keep(r)], ("objective",) + fields)
  out = []
  for key, con in cells.items():
    if key[0] != "contrastive":
      continue
    cap = cells.get(("captioning",) + key[1:])
    if cap is not None:
      out.append((key[1:], con, cap))
  return out


def contrastive_data_efficient(rows, options) -> dict:
  finding = "Contrastive is more data-efficient: better than captioning at small scale under mean-pooling probes"
  test = ("at the smallest data size both objectives measured, contrastive - captioning on probe rows with mean "
          "pooling (> 0 supports)")
  fields = _CONTEXT + ("init",) + results.MEASURE
  pairs = _objective_pairs(rows, fields, lambda r: r["evaluation"] == "probe" and r["method"] == "mean")
  contrasts, smallest = [], []
  for _, con, cap in pairs:
    shared = sorted(set(con) & set(cap))
    if shared:
      contrasts.append(_combine([con[shared[0]], cap[shared[0]]], [1, -1]))
      smallest.append(shared[0])
  if not contrasts:
    return _result(1, finding, test, CANNOT_TEST, "needs contrastive and captioning runs at a shared data size "
                   "evaluated with mean-pooling probes" + _missing(rows))
  return _tested(1, finding, test, contrasts, f"contrastive - captioning at data size {min(smallest)}", options)


def _missing(rows) -> str:
  pre = results.pretrained(rows)
  objectives = sorted({r["objective"] for r in pre})
  inits = sorted({r["init"] for r in pre})
  sizes = sorted({r["data_pairs"] for r in pre})
  methods = sorted({f"{r['evaluation']}/{r['method']}" for r in pre})
  return (f" (this sweep has objectives {objectives}, inits {inits}, data sizes {sizes}, "
          f"evaluations {methods})")


def _alpha_text(fits: list[dict], objective: str, keep) -> str:
  chosen = [f for f in fits if f["x_axis"] == "data_pairs" and f["objective"] == objective and keep(f)
            and f["law"]["fitted"]]
  if not chosen:
    return f"{objective}: no fitted law"
  parts = []
  for f in chosen:
    lo, hi = f["law"]["alpha_interval"] or (float("nan"), float("nan"))
    parts.append(f"{f['task']} ({f['init']}, {f['metric']}) alpha {f['law']['alpha']:.3f} [{lo:.3f}, {hi:.3f}]")
  return f"{objective}: " + "; ".join(parts)


def captioning_scales_better_on_language(rows, fits, options) -> dict:
  finding = "Captioning scales better than contrastive on language-involving tasks"
  test = ("on task_family 'language' rows: captioning's gain from the smallest to the largest shared data size "
          "minus contrastive's gain (> 0 supports: the gap shrinks or reverses); fitted exponents quoted")
  fields = _CONTEXT + ("init",) + results.MEASURE
  pairs = _objective_pairs(rows, fields, lambda r: r["task_family"] == "language")
  contrasts, ends, at_largest = [], set(), []
  for _, con, cap in pairs:
    shared = sorted(set(con) & set(cap))
    if len(shared) >= 2:
      lo, hi = shared[0], shared[-1]
      contrasts.append(_combine([cap[hi], cap[lo], con[hi], con[lo]], [1, -1, -1, 1]))
      at_largest.append(_combine([cap[hi], con[hi]], [1, -1]))
      ends.add((lo, hi))
  if not contrasts:
    return _result(2, finding, test, CANNOT_TEST, "needs contrastive and captioning runs at 2 or more shared data "
                   "sizes evaluated on language-family tasks (retrieval, captioning, zero-shot, LiT)"
                   + _missing(rows))
  keep = lambda f: f["task_family"] == "language"
  largest = summarise(at_largest, **options)
  extra = (f". At the largest data size captioning - contrastive = {largest['estimate']:+.4f}"
           + (f" [{largest['interval'][0]:+.4f}, {largest['interval'][1]:+.4f}]" if largest["interval"] else "")
           + f". Fitted exponents (data size): {_alpha_text(fits, 'captioning', keep)}; "
           f"{_alpha_text(fits, 'contrastive', keep)}")
  span = ", ".join(f"{lo}->{hi}" for lo, hi in sorted(ends))
  return _tested(2, finding, test, contrasts, f"(captioning gain - contrastive gain) over data sizes {span}",
                 options, extra)


def attention_narrows_gap(rows, options) -> dict:
  finding = "Attention pooling in the probe narrows the gap between contrastive and captioning"
  test = ("probe rows, at every data size with both poolings and both objectives: |contrastive - captioning| "
          "under mean pooling minus the same under attention pooling (> 0 supports)")
  fields = _CONTEXT + ("init", "task", "task_family", "evaluation", "metric")
  probes = [r for r in rows if r["evaluation"] == "probe" and r["method"] in ("mean", "attention")]
  cells = _cells(probes, ("objective", "method") + fields)
  contrasts = []
  for key, con_mean in cells.items():
    if key[:2] != ("contrastive", "mean"):
      continue
    others = [cells.get(k + key[2:]) for k in (("captioning", "mean"), ("contrastive", "attention"),
                                              ("captioning", "attention"))]
    if any(o is None for o in others):
      continue
    cap_mean, con_att, cap_att = others
    for x in sorted(set(con_mean) & set(cap_mean) & set(con_att) & set(cap_att)):
      contrasts.append(_combine([con_mean[x], cap_mean[x], con_att[x], cap_att[x]], [1, -1],
                                absolute=[[0, 1], [2, 3]]))
  if not contrasts:
    return _result(3, finding, test, CANNOT_TEST, "needs probe rows with both mean and attention pooling for both "
                   "contrastive and captioning at a shared data size" + _missing(rows))
  return _tested(3, finding, test, contrasts, "|gap| under mean pooling - |gap| under attention pooling", options)


def _init_pairs(rows, keep) -> list[tuple[tuple, dict, dict]]:
  fields = _CONTEXT + ("objective",) + results.MEASURE
  cells = _cells([r for r in rows if keep(r)], ("init",) + fields)
  return [(key[1:], sup, cells[("scratch",) + key[1:]]) for key, sup in cells.items()
          if key[0] == "supervised" and ("scratch",) + key[1:] in cells]


def supervised_init_helps_less(rows, options, roles: TaskRoles) -> dict:
  finding = ("Supervised (AudioSet) init helps less as data grows, and hurts speaker identification")
  test = ("(a) (supervised - scratch) at the smallest shared data size minus the same at the largest, probe rows "
          "(> 0 supports); (b) scratch - supervised at the largest data size on speaker tasks (> 0 supports); "
          "both must support")
  parts = []
  contrasts, sizes = [], set()
  for _, sup, scr in _init_pairs(rows, lambda r: r["evaluation"] == "probe"):
    shared = sorted(set(sup) & set(scr))
    if len(shared) >= 2:
      lo, hi = shared[0], shared[-1]
      contrasts.append(_combine([sup[lo], scr[lo], sup[hi], scr[hi]], [1, -1, -1, 1]))
      sizes.add((lo, hi))
  if contrasts:
    summary = summarise(contrasts, **options)
    span = ", ".join(f"{lo}->{hi}" for lo, hi in sorted(sizes))
    parts.append({"part": "helps less as data grows", "verdict": _verdict(summary), "estimate": summary["estimate"],
                  "interval": summary["interval"],
                  "why": _numbers(summary, f"(sup - scratch) shrinkage over data sizes {span}")})
  else:
    parts.append({"part": "helps less as data grows", "verdict": CANNOT_TEST,
                  "why": "needs supervised and scratch runs at 2 or more shared data sizes with probe rows"})
  speaker = []
  for _, sup, scr in _init_pairs(rows, roles.is_speaker):
    shared = sorted(set(sup) & set(scr))
    if shared:
      speaker.append(_combine([scr[shared[-1]], sup[shared[-1]]], [1, -1]))
  if speaker:
    summary = summarise(speaker, **options)
    parts.append({"part": "hurts speaker identification", "verdict": _verdict(summary),
                  "estimate": summary["estimate"], "interval": summary["interval"],
                  "why": _numbers(summary, "scratch - supervised on speaker tasks at the largest data size")})
  else:
    parts.append({"part": "hurts speaker identification", "verdict": CANNOT_TEST,
                  "why": f"needs supervised and scratch runs on a speaker task (task name matching "
                         f"/{roles.speaker}/)"})
  verdicts = [p["verdict"] for p in parts]
  if all(v == SUPPORTS for v in verdicts):
    verdict = SUPPORTS
  elif CONTRADICTS in verdicts:
    verdict = CONTRADICTS
  elif all(v == CANNOT_TEST for v in verdicts):
    verdict = CANNOT_TEST
  else:
    verdict = INCONCLUSIVE
  why = "; ".join(f"({'ab'[i]}) {p['part']}: {p['verdict']}, {p['why']}" for i, p in enumerate(parts))
  if verdict == CANNOT_TEST:
    why += _missing(rows)
  return _result(4, finding, test, verdict, why, parts=parts)


def sed_declines(rows, options, roles: TaskRoles) -> dict:
  finding = "Frame-level sound event detection gets worse as caption data grows"
  test = "on SED rows: score at the smallest data size minus score at the largest (> 0 supports)"
  sed_rows = [r for r in rows if roles.is_sed(r)]
  if not sed_rows:
    return _result(5, finding, test, CANNOT_TEST,
                   f"no frame-level sound event detection rows in this sweep (no task matching /{roles.sed}/, no "
                   "method containing 'frame', no PSDS metric): add a frame-level SED task to the eval suite")
  cells = _cells(sed_rows, ("objective", "init") + _CONTEXT + results.MEASURE)
  contrasts = []
  for curve in cells.values():
    sizes = sorted(curve)
    if len(sizes) >= 2:
      contrasts.append(_combine([curve[sizes[0]], curve[sizes[-1]]], [1, -1]))
  if not contrasts:
    return _result(5, finding, test, CANNOT_TEST, "the SED rows cover a single data size; need 2 or more")
  return _tested(5, finding, test, contrasts, "SED score at the smallest data size - at the largest", options)


def evaluate_findings(rows: list[dict], fits: list[dict], *, roles: Optional[TaskRoles] = None,
                      resamples: int = RESAMPLES, seed: int = 0) -> list[dict]:
  """The five findings' verdicts -> [{"number", "finding", "test", "verdict", "why", ...}]."""
  roles = roles or TaskRoles()
  options = {"resamples": resamples, "seed": seed}
  return [contrastive_data_efficient(rows, options), captioning_scales_better_on_language(rows, fits, options),
          attention_narrows_gap(rows, options), supervised_init_helps_less(rows, options, roles),
          sed_declines(rows, options, roles)]
