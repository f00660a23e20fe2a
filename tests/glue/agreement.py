"""The Glue script's PySpark core against the built-in transform's Parquet (tests/e2e/glue.rs
prepares the batches and runs the Rust side; usage: agreement.py SPEC.json).

1. Each case's batch goes through the script's core (read_rows, transform, write_parquet) on a
   local Spark, reading the same bytes from local files; both Parquet files are read back with
   pyarrow and compared type for type and row for row. A difference not in KNOWN fails the test,
   and so does a difference in KNOWN that no longer differs.
2. The script's Glue entry point runs as Glue runs it (the file as __main__, argv as Glue passes
   it) with `awsglue` shimmed, against moto's S3 and Secrets Manager: its output must be the Rust
   output of the same batch.

One Spark session (local[1], UI off) serves everything. Prints one JSON line at the end.
"""

import json
import math
import os
import runpy
import shutil
import sys
import types

import pyarrow.parquet as pq

# (case, column) -> why the two transforms still differ there. Empty: none do today.
KNOWN = {}


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def spark_session(endpoint):
    # Executors' Python workers inherit this environment: boto3 there reaches moto.
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        PYSPARK_PYTHON=sys.executable,
    )
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master("local[1]")
        .appName("choreo-glue-agreement")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )


def comparable(v):
    """A value that compares equal when the two sides wrote the same thing (NaN is NaN, -0.0 is not
    0.0)."""
    if isinstance(v, float):
        return ("float", repr(v) if not math.isnan(v) else "nan")
    return (type(v).__name__, v)


def differences(name, rust_path, spark_path):
    """{column: description} where the two Parquet files differ."""
    rust, spark = pq.read_table(rust_path), pq.read_table(spark_path)
    out = {}
    rust_types = {f.name: str(f.type) for f in rust.schema}
    spark_types = {f.name: str(f.type) for f in spark.schema}
    if list(rust_types) != list(spark_types):
        out["(columns)"] = f"rust {list(rust_types)}, spark {list(spark_types)}"
        return out
    for column, ty in rust_types.items():
        if spark_types[column] != ty:
            out[column] = f"type: rust {ty}, spark {spark_types[column]}"
    if rust.num_rows != spark.num_rows:
        out["(rows)"] = f"rust {rust.num_rows} rows, spark {spark.num_rows}"
    for column in rust_types:
        if column in out:
            continue
        r, s = rust.column(column).to_pylist(), spark.column(column).to_pylist()
        for i, (a, b) in enumerate(zip(r, s)):
            if comparable(a) != comparable(b):
                out[column] = f"row {i}: rust {a!r}, spark {b!r}"
                break
    if "(rows)" in out:
        ids = rust.column(rust.column_names[0]).to_pylist(), spark.column(spark.column_names[0]).to_pylist()
        out["(rows)"] += f"; first columns: rust {ids[0]}, spark {ids[1]}"
    return out


def agreement(spark, core, spec):
    """Part 1: every case through the core; returns the cases run."""
    found = {}
    for case in spec["cases"]:
        name, inputs = case["name"], case["inputs"]
        plan = core.Plan(case["manifest"], spec["salt"])

        def open_text(f, inputs=inputs):
            return core.decoded(open(inputs[f["file_id"]], "rb"), f["key"], core.DEFAULT_MAX_INPUT_BYTES)

        out = core.transform(spark, plan, core.read_rows(spark, plan, open_text))
        target = os.path.join(spec["out"], f"{name}.spark.parquet")

        def deliver(path, target=target):
            shutil.copyfile(path, target)

        core.write_parquet(out, plan, deliver)
        for column, what in differences(name, case["rust"], target).items():
            found[(name, column)] = what
    unexpected = {k: v for k, v in found.items() if k not in KNOWN}
    gone = [k for k in KNOWN if k not in found]
    if unexpected or gone:
        fail(
            "the Glue script and the built-in transform disagree:\n"
            + "".join(f"  {k}: {v}\n" for k, v in unexpected.items())
            + "".join(f"  {k}: listed in KNOWN ({KNOWN[k]}) but no longer differs\n" for k in gone)
        )
    return [c["name"] for c in spec["cases"]]


def install_awsglue_shim(spark):
    """`awsglue` as much as the entry point uses: GlueContext(sc).spark_session and
    getResolvedOptions, which reads `--name value` pairs as Glue's does."""

    class GlueContext:
        def __init__(self, sc):
            assert sc is spark.sparkContext
            self.spark_session = spark

    def get_resolved_options(argv, wanted):
        out = {}
        for name in wanted:
            flag = f"--{name}"
            if flag not in argv:
                raise SystemExit(f"missing argument {flag}")
            out[name] = argv[argv.index(flag) + 1]
        return out

    glue = types.ModuleType("awsglue")
    context = types.ModuleType("awsglue.context")
    context.GlueContext = GlueContext
    utils = types.ModuleType("awsglue.utils")
    utils.getResolvedOptions = get_resolved_options
    sys.modules.update({"awsglue": glue, "awsglue.context": context, "awsglue.utils": utils})


def entry_point(spark, spec):
    """Part 2: the Glue entry point on moto."""
    import boto3

    m = spec["moto"]
    case = next(c for c in spec["cases"] if c["name"] == m["case"])
    buckets, args = m["buckets"], m["arguments"]
    s3 = boto3.client("s3")
    for b in buckets.values():
        s3.create_bucket(Bucket=b)
    s3.put_bucket_versioning(Bucket=buckets["input"], VersioningConfiguration={"Status": "Enabled"})
    manifest = json.loads(json.dumps(case["manifest"]))
    for n, f in enumerate(manifest["files"]):
        body = open(case["inputs"][f["file_id"]], "rb").read()
        # An older version under the same key: the pin, not the key, names the bytes to read.
        s3.put_object(Bucket=f["bucket"], Key=f["key"], Body=b"stale,bytes\n")
        put = s3.put_object(Bucket=f["bucket"], Key=f["key"], Body=body)
        s3.put_object(Bucket=f["bucket"], Key=f["key"], Body=b"newer,bytes\n")
        # Both kinds of pin the launcher writes.
        f["pin"] = {"version_id": put["VersionId"]} if n % 2 == 0 else {"e_tag": put["ETag"].strip('"')}
    work, key = args["--manifest"].split("/", 1)
    s3.put_object(Bucket=work, Key=key, Body=json.dumps(manifest).encode())
    if "--mask_salt_secret" in args:
        boto3.client("secretsmanager").create_secret(Name=args["--mask_salt_secret"], SecretString=spec["salt"])
    install_awsglue_shim(spark)
    # Glue adds arguments of its own: the script must ignore them.
    argv = [spec["script"], "--JOB_ID", "j_1", "--JOB_RUN_ID", "jr_1", "--job-bookmark-option", "job-bookmark-disable"]
    for k, v in args.items():
        argv += [k, v]
    sys.argv = argv
    runpy.run_path(spec["script"], run_name="__main__")
    listed = s3.list_objects_v2(Bucket=buckets["curated"]).get("Contents", [])
    keys = [o["Key"] for o in listed]
    expected = [k for k in keys if k.startswith(f"dataset={args['--dataset']}/ingest_date=")]
    if len(keys) != 1 or len(expected) != 1 or not keys[0].endswith(f"/{args['--batch_id']}.parquet"):
        fail(f"the entry point wrote {keys}")
    target = os.path.join(spec["out"], "entry_point.parquet")
    s3.download_file(buckets["curated"], keys[0], target)
    diff = differences(case["name"], case["rust"], target)
    known = {c: w for (n, c), w in KNOWN.items() if n == case["name"]}
    if set(diff) != set(known):
        fail(f"the Glue entry point's output differs from the built-in transform's: {diff}")
    return case["name"]


def main():
    spec = json.load(open(sys.argv[1]))
    sys.path.insert(0, os.path.dirname(spec["script"]))
    # Spark's Python workers import the core by name: they need its folder too.
    os.environ["PYTHONPATH"] = os.pathsep.join([os.path.dirname(spec["script"]), os.environ.get("PYTHONPATH", "")])
    spark = spark_session(spec["moto"]["endpoint"])
    spark.sparkContext.setLogLevel("ERROR")
    import choreo_builtin as core

    cases = agreement(spark, core, spec)
    glue = entry_point(spark, spec)
    spark.stop()
    print(json.dumps({"cases": cases, "glue_entry_point": glue}))


if __name__ == "__main__":
    main()
