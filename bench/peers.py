#!/usr/bin/env python3
"""The peers of choreo-validation in its benchmark (run by
`cargo run --release -p choreo-validation --example bench`, which passes the
generated CSV and its Table Schema; it can also be run by hand):

    python bench/peers.py --csv DIR/bench.csv --schema DIR/bench.schema.json [--slice-mb 5]

Each tool runs in a child process of its own (this script, re-run with
--worker) that reports its own peak RSS (VmHWM from /proc/self/status, so it
includes the interpreter and the libraries it imported) and the seconds spent
validating (imports and interpreter start not counted). One JSON object per
tool is printed on stdout:

- `frictionless validate` (the `frictionless.validate` function the CLI
  calls) on a SLICE: the first --slice-mb MB of the file, cut at a line end.
  At well under 1 MB/s the whole file would take minutes.
- pandas `read_csv` on the WHOLE file, then the checks the schema asks for:
  every column read as text (missingValues as NA), then per field the type
  (to_numeric / to_datetime with the format / the boolean values / four
  digits for year), required, minimum, maximum, minLength, maxLength,
  pattern (str.fullmatch), enum (isin), unique, and the primary key.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def peak_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def make_slice(csv_path, slice_mb):
    """The first `slice_mb` MB of `csv_path`, cut after a newline, next to it."""
    out = os.path.join(os.path.dirname(os.path.abspath(csv_path)), "slice.csv")
    limit = slice_mb * 1_000_000
    with open(csv_path, "rb") as src:
        data = src.read(limit)
    cut = data.rfind(b"\n")
    with open(out, "wb") as dst:
        dst.write(data[: cut + 1])
    return out


def worker_frictionless(csv_path, schema_path, slice_mb):
    import frictionless

    sliced = make_slice(csv_path, slice_mb)
    # Frictionless refuses absolute paths as unsafe: work from the directory.
    os.chdir(os.path.dirname(sliced))
    t0 = time.perf_counter()
    report = frictionless.validate(
        os.path.basename(sliced), schema=os.path.relpath(schema_path)
    )
    secs = time.perf_counter() - t0
    errors = report.flatten(["type"]) if not report.valid else []
    rows = report.tasks[0].stats.get("rows") if report.tasks else None
    return {
        "tool": "frictionless validate",
        "mb": os.path.getsize(sliced) / 1e6,
        "secs": secs,
        "valid": report.valid,
        "detail": f"{rows} rows; errors: {sorted(set(e[0] for e in errors))}",
        "note": f"SLICE: first {slice_mb} MB only (whole file too slow)",
    }


def worker_pandas(csv_path, schema_path):
    import numpy as np
    import pandas as pd

    with open(schema_path) as f:
        schema = json.load(f)
    missing = schema.get("missingValues", [""])
    fields = schema["fields"]
    errors = {}

    def count(kind, n):
        n = int(n)
        if n:
            errors[kind] = errors.get(kind, 0) + n

    t0 = time.perf_counter()
    df = pd.read_csv(
        csv_path,
        dtype=str,
        keep_default_na=False,
        na_values=missing,
        encoding="utf-8",
    )
    names = [f["name"] for f in fields]
    count("missing_column", len(set(names) - set(df.columns)))
    count("extra_column", len(set(df.columns) - set(names)))
    datetime_formats = {"date": "%Y-%m-%d", "time": "%H:%M:%S"}
    for field in fields:
        name = field["name"]
        if name not in df.columns:
            continue
        col = df[name]
        present = col.notna()
        c = field.get("constraints", {})
        kind = field.get("type", "string")
        if c.get("required"):
            count("required", (~present).sum())
        if kind in ("integer", "number"):
            value = pd.to_numeric(col, errors="coerce")
            bad = present & value.isna()
            if kind == "integer":
                bad |= present & value.notna() & (value % 1 != 0)
            to_bound = float
        elif kind in ("date", "datetime", "time"):
            if kind == "datetime":
                value = pd.to_datetime(col, format="ISO8601", errors="coerce", utc=True)
                to_bound = lambda v: pd.Timestamp(v, tz="UTC")  # noqa: E731
            else:
                value = pd.to_datetime(col, format=datetime_formats[kind], errors="coerce")
                to_bound = lambda v, k=kind: pd.to_datetime(v, format=datetime_formats[k])  # noqa: E731
            bad = present & value.isna()
        elif kind == "boolean":
            true_values = field.get("trueValues", ["true", "True", "TRUE", "1"])
            false_values = field.get("falseValues", ["false", "False", "FALSE", "0"])
            value = col
            bad = present & ~col.isin(true_values + false_values)
            to_bound = None
        elif kind == "year":
            value = pd.to_numeric(col.where(col.str.fullmatch(r"\d{4}", na=False)), errors="coerce")
            bad = present & value.isna()
            to_bound = int
        else:
            value = col
            bad = present & False
            to_bound = str
        count("type_error", bad.sum())
        ok = present & ~bad
        if "minimum" in c:
            count("minimum", (ok & (value < to_bound(c["minimum"]))).sum())
        if "maximum" in c:
            count("maximum", (ok & (value > to_bound(c["maximum"]))).sum())
        if "minLength" in c or "maxLength" in c:
            length = col.str.len()
            if "minLength" in c:
                count("min_length", (ok & (length < c["minLength"])).sum())
            if "maxLength" in c:
                count("max_length", (ok & (length > c["maxLength"])).sum())
        if "pattern" in c:
            count("pattern", (ok & ~col.str.fullmatch(c["pattern"], na=False)).sum())
        if "enum" in c:
            allowed = c["enum"]
            if kind in ("integer", "number", "year"):
                count("enum", (ok & ~value.isin([float(v) for v in allowed])).sum())
            else:
                count("enum", (ok & ~col.isin([str(v) for v in allowed])).sum())
        if c.get("unique"):
            count("unique", value[ok].duplicated().sum())
    pk = schema.get("primaryKey")
    if pk:
        keys = [pk] if isinstance(pk, str) else pk
        count("primary_key", df[keys].dropna().duplicated().sum())
    secs = time.perf_counter() - t0
    return {
        "tool": "pandas read_csv + checks",
        "mb": os.path.getsize(csv_path) / 1e6,
        "secs": secs,
        "valid": not errors,
        "detail": f"{len(df)} rows; errors: {errors}; numpy {np.__version__}, pandas {pd.__version__}",
        "note": "whole file",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--slice-mb", type=int, default=5)
    ap.add_argument("--worker", choices=["frictionless", "pandas"])
    ap.add_argument("--only", choices=["frictionless", "pandas"])
    args = ap.parse_args()
    if args.worker:
        if args.worker == "frictionless":
            out = worker_frictionless(args.csv, args.schema, args.slice_mb)
        else:
            out = worker_pandas(args.csv, args.schema)
        out["peak_kb"] = peak_kb()
        print(json.dumps(out), flush=True)
        return
    for tool in ["frictionless", "pandas"]:
        if args.only and tool != args.only:
            continue
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            tool,
            "--csv",
            os.path.abspath(args.csv),
            "--schema",
            os.path.abspath(args.schema),
            "--slice-mb",
            str(args.slice_mb),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
        if done.returncode != 0 or not lines:
            err = done.stderr.strip().splitlines()
            print(
                json.dumps(
                    {
                        "tool": tool,
                        "mb": 0,
                        "secs": 0,
                        "peak_kb": 0,
                        "valid": None,
                        "detail": "failed: " + (err[-1] if err else "no output"),
                        "note": "is it installed? .venv/bin/pip install frictionless pandas",
                    }
                ),
                flush=True,
            )
            continue
        print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
