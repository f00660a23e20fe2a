"""Choreo's built-in transform as a Glue (PySpark) job: the AWS twin of the Rust one the local job
runner runs (shared/transform), with the same semantics. tests/glue/agreement.py runs both on the
same batches and compares their Parquet row for row (docs/design.md lists what still differs).

One file, two parts: `main()`, the Glue entry point (arguments, GlueContext, the salt's secret, the
manifest), is the only code that imports `awsglue`; everything above it is plain PySpark and boto3
(`transform`, the core, and the I/O helpers it reads and writes through), importable and tested on a
local Spark. One file keeps the deployment one object: `choreo bootstrap` uploads it, the
CloudFormation template points the job at it, and no `--extra-py-files` can drift.

Arguments (Glue passes them as --name value):
  --batch_id        the batch being transformed (Choreo finds a run again by this argument)
  --dataset         the dataset's name
  --manifest        s3 location "bucket/key" of the batch manifest (below)
  --curated_bucket  where the output goes (a default argument set by `choreo bootstrap`)
  --mask_salt_secret  the Secrets Manager secret (name or ARN) whose value is prepended to
                    personal-data values before hashing (a default argument set by `choreo
                    bootstrap`, which keeps transform.mask_salt there; needed only if personal_data
                    is set). The salt itself is never an argument: GetJob and every run would show it.
  --max_input_bytes  most bytes of text one input may decompress to (default 16 GiB)

The manifest, written by the transform launcher, carries all the job needs of the dataset:
  {"batch_id", "dataset", "files": [{"file_id", "bucket", "key", "pin"}] (oldest first),
   "schema": <Frictionless Table Schema>, "personal_data": [column, ...],
   "format": "csv" | "jsonl", "csv": {"delimiter", "quote", "header"}}

Inputs are read by their pin ({"version_id": ...} or {"e_tag": ...}), the bytes the pipeline
validated, never by path: a re-upload of a key is another file, and a key is never a glob or a
relative path to Spark. Executors fetch each file with boto3 (gzip or zstd by the key's suffix, up
to --max_input_bytes of text) and parse its records with Python's csv and json modules, as the
local runner parses them with Rust's; Spark does the rest.

Each row is trimmed (strings), checked (types integer, number, boolean and ISO dates and datetimes;
required, minimum, maximum, enum, pattern, minLength, maxLength) and dropped if it fails, or, for
CSV, if its field count is not the header's; personal-data values become sha2(salt + value, 256);
rows are deduplicated on the primary key, the last one winning (files in manifest order, rows in
file order). Non-default date formats are not checked here (the validator already did).

Output: one Parquet file (snappy), typed columns in schema order (integer -> int64, number ->
double, boolean -> boolean, everything else and every masked column -> string) and _file_id, at
s3://<curated_bucket>/dataset=<dataset>/ingest_date=<YYYY-MM-DD>/<batch_id>.parquet, as the local
runner writes it. One task writes it with pyarrow to its local disk and uploads it with one PUT
(multipart for a large file), so readers never see half of it and a re-run replaces it.
"""

import csv
import datetime
import gzip
import io
import json
import math
import os
import sys
import tempfile

from pyspark.sql import Window
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

FILE_ID = "_file_id"
TRUE_VALUES = ["true", "True", "TRUE", "1"]
FALSE_VALUES = ["false", "False", "FALSE", "0"]
DEFAULT_MAX_INPUT_BYTES = 16 << 30
# Rows per Arrow batch and Parquet row group, as the local runner writes them.
ROW_GROUP = 64 * 1024


class Plan:
    """What a batch's manifest asks for, checked once on the driver."""

    def __init__(self, manifest, salt):
        schema = manifest.get("schema")
        if not schema:
            raise ValueError(f"the manifest of batch {manifest.get('batch_id')} has no schema")
        self.fields = schema["fields"]
        self.names = [f["name"] for f in self.fields]
        if FILE_ID in self.names:
            raise ValueError(f"the schema has a field {FILE_ID!r}, the column the transform adds")
        self.missing_values = schema.get("missingValues", [""])
        key = schema.get("primaryKey") or []
        self.key = [key] if isinstance(key, str) else key
        self.personal = manifest.get("personal_data", [])
        unknown = [p for p in self.personal if p not in self.names]
        if unknown:
            raise ValueError(f"personal_data names {unknown}, which are not fields")
        if self.personal and not salt:
            raise ValueError("personal_data needs transform.mask_salt (the --mask_salt_secret argument)")
        self.salt = salt
        files = manifest["files"]
        self.format = manifest.get("format") or (
            "jsonl" if files and ".jsonl" in files[0]["key"] else "csv"
        )
        self.dialect = {"delimiter": ",", "quote": '"', "header": True, **(manifest.get("csv") or {})}
        self.files = files


# --- Input: executors read each file's bytes and parse its records. ---


def open_pinned(client, f):
    """The body of the version the manifest pins: by version id, or by ETag (If-Match, else the
    bucket's version with that ETag). Never whatever the key holds now."""
    request = {"Bucket": f["bucket"], "Key": f["key"]}
    pin = f.get("pin") or {}
    if "version_id" in pin:
        request["VersionId"] = pin["version_id"]
    elif "e_tag" in pin:
        try:
            return client.get_object(IfMatch=f'"{pin["e_tag"]}"', **request)["Body"]
        except client.exceptions.ClientError as e:
            if e.response["ResponseMetadata"]["HTTPStatusCode"] not in (404, 412):
                raise
        pages = client.get_paginator("list_object_versions").paginate(Bucket=f["bucket"], Prefix=f["key"])
        found = [
            v["VersionId"]
            for page in pages
            for v in page.get("Versions", [])
            if v["Key"] == f["key"] and v["ETag"].strip('"') == pin["e_tag"] and v["VersionId"] != "null"
        ]
        if not found:
            raise ValueError(f"{f['bucket']}/{f['key']} ETag {pin['e_tag']} is gone")
        request["VersionId"] = found[0]
    return client.get_object(**request)["Body"]


class _Bounded(io.RawIOBase):
    """A binary stream that fails once more than `limit` bytes have been read: a decompression
    bomb fails the run with its reason instead of filling the disk or memory."""

    def __init__(self, inner, limit, name):
        self.inner, self.limit, self.name, self.seen = inner, limit, name, 0

    def readable(self):
        return True

    def readinto(self, b):
        data = self.inner.read(len(b))
        self.seen += len(data)
        if self.seen > self.limit:
            raise ValueError(f"{self.name}: more than {self.limit} bytes of text")
        b[: len(data)] = data
        return len(data)


def decoded(body, key, limit):
    """The text stream of an object's bytes `body`: gzip or zstd by the key's suffix (the
    dataset's `compression: auto`), bounded to `limit` bytes, UTF-8 with undecodable bytes kept
    as replacement characters (the validator has already rejected files that are not UTF-8).
    The suffix is read in any case, as `Compression::from_key` reads it."""
    suffix = key.lower()
    if suffix.endswith(".gz"):
        body = gzip.GzipFile(fileobj=body)
    elif suffix.endswith(".zst"):
        import zstandard  # Glue: --additional-python-modules zstandard (set by choreo bootstrap)

        body = zstandard.ZstdDecompressor().stream_reader(body)
    raw = io.BufferedReader(_Bounded(body, limit, key), 1 << 20)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")


def json_text(v):
    """(text, kind) of a JSON value as the local runner sees it: a string as itself (kind None,
    like CSV text), a number or boolean as serde_json writes it (its shortest round-trip digits,
    as Python's repr: `1.50` is `1.5`, `1e20` is `1e+20`), an array or object as compact JSON;
    (None, None) for null."""
    if v is None or isinstance(v, str):
        return v, None
    if isinstance(v, bool):
        return ("true" if v else "false"), "bool"
    if isinstance(v, int):
        return str(v), "int"
    if isinstance(v, float):
        return _float_text(v), "float"
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False), "complex"


def _float_text(x):
    """A float as serde_json writes it: Python's repr (shortest round-trip digits, `1e+16` from
    1e16 up), but plain down to 1e-5 (`0.00001`, not `1e-05`) and no padded exponent (`1e-6`)."""
    r = repr(x)
    mantissa, e, exponent = r.partition("e")
    if not e or exponent.startswith("+"):
        return r
    n = -int(exponent)
    if n <= 5:
        sign = "-" if mantissa.startswith("-") else ""
        return f"{sign}0.{'0' * (n - 1)}{mantissa.lstrip('-').replace('.', '')}"
    return f"{mantissa}e-{n}"


def _json_int(text):
    """serde_json holds integers in 64 bits (signed or not); a longer one becomes a float."""
    v = int(text)
    return v if -(1 << 63) <= v < (1 << 64) else float(text)


def _finite(text):
    """JSON has no NaN or Infinity: serde_json refuses them, so the line is not JSON here either."""
    raise ValueError(f"{text} is not JSON")


def records(lines, plan_format, dialect, names):
    """One file's rows from its text stream: (ok, values, kinds) with one string (or None, absent)
    per schema field and, for JSON, the kind of each non-string value (`json_text`); ok is False
    for a record the local runner drops before its checks (a CSV field count unlike the header's,
    a line that is not one JSON object)."""
    none = [None] * len(names)
    if plan_format == "jsonl":
        for line in lines:
            text = line.lstrip("\ufeff").strip()
            if not text:
                continue
            try:
                obj = json.loads(text, parse_constant=_finite, parse_int=_json_int)
                if not isinstance(obj, dict) or any(
                    isinstance(v, float) and math.isinf(v) for v in obj.values()
                ):
                    raise ValueError("not one JSON object of finite numbers")
            except ValueError:
                yield False, none, none
                continue
            cells = [json_text(obj.get(n)) for n in names]
            yield True, [c[0] for c in cells], [c[1] for c in cells]
        return
    reader = csv.reader(
        lines, delimiter=dialect["delimiter"], quotechar=dialect["quote"], doublequote=True, strict=False
    )
    columns, width = None, 0
    for record in reader:
        if not record and columns is not None:
            continue  # a blank line: the csv crate skips it too
        if columns is None:
            width = len(record)
            if dialect["header"]:
                header = [h.lstrip("\ufeff") if i == 0 else h for i, h in enumerate(record)]
                header = [h.strip() for h in header]
                columns = [header.index(n) if n in header else None for n in names]
                continue
            columns = [i if i < width else None for i in range(len(names))]
        if len(record) != width:
            yield False, none, none
            continue
        yield True, [record[c] if c is not None else None for c in columns], none


def s3_reader(max_input_bytes):
    """Reads a manifest file's text from S3 by its pin (runs on an executor)."""

    def read(f):
        import boto3

        return decoded(open_pinned(boto3.client("s3"), f), f["key"], max_input_bytes)

    return read


def read_rows(spark, plan, open_text):
    """The batch's rows as strings: one Spark partition per file, in manifest order, with the
    columns _ok, the schema's fields, their JSON kinds (_k0, _k1, ...), _file_n and _row_n. `open_text(f)` gives the text of the
    manifest's file `f` (on an executor)."""
    names, fmt, dialect = plan.names, plan.format, plan.dialect

    def rows(n, files):
        for f in files:
            for r, (ok, values, kinds) in enumerate(records(open_text(f), fmt, dialect, names)):
                yield (ok, *values, *kinds, n, r)

    schema = StructType(
        [StructField("_ok", StringType())]
        + [StructField(n, StringType()) for n in names]
        + [StructField(f"_k{i}", StringType()) for i in range(len(names))]
        + [StructField("_file_n", IntegerType()), StructField("_row_n", LongType())]
    )
    if not plan.files:
        return spark.createDataFrame([], schema)
    rdd = spark.sparkContext.parallelize(plan.files, len(plan.files)).mapPartitionsWithIndex(rows)
    return spark.createDataFrame(rdd.map(lambda t: ("1" if t[0] else None, *t[1:])), schema)


# --- The core: checks, masking, deduplication. ---

_INTEGER = r"^[+-]?[0-9]+$"
_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$|^[+-]?([Nn][Aa][Nn]|[Ii][Nn][Ff]|[Ii]nfinity)$"
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_DATETIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?$"


def _number(raw):
    """Text as a double, with the validator's spellings of the special numbers."""
    t = F.lower(F.regexp_replace(raw, "^[+]", ""))
    return (
        F.when(t.isin("nan", "-nan"), F.lit(float("nan")))
        .when(t.isin("inf", "infinity"), F.lit(float("inf")))
        .when(t.isin("-inf", "-infinity"), F.lit(float("-inf")))
        .otherwise(raw.cast("double"))
    )


def _json_value(t, raw, kind):
    """The typed value of a non-string JSON value (`kind`, its text `raw`), as the validator casts
    it: numbers in number fields, integers (and integral floats) in integer fields, booleans in
    boolean fields, anything in `any` fields; null (a type error) otherwise."""
    if t == "any":
        return raw
    if t == "integer":
        d = raw.cast("double")
        whole = (d == F.floor(d)) & (F.abs(d) < float(1 << 63))
        return F.when(kind == "int", _integer(raw)).when((kind == "float") & whole, d.cast("long"))
    if t == "number":
        return F.when(kind.isin("int", "float"), raw.cast("double"))
    if t == "boolean":
        return F.when(kind == "bool", raw == "true")
    return F.lit(None)


def _integer(raw):
    """Integer text as a long; null if it is not one or does not fit in 64 bits (where the cast
    gives null or wraps: the cast back must give the same digits)."""
    value = F.when(raw.rlike(_INTEGER), raw.cast("long"))
    digits = F.regexp_replace(F.regexp_replace(raw, "^[+]", ""), "^(-?)0+(?=[0-9])", "$1")
    return F.when(value.cast("string") == digits, value)


def check(f, raw, kind, key):
    """(typed value, ok) for field f's trimmed text `raw` (null when missing), whose JSON kind is
    `kind` (null for text)."""
    t = f.get("type", "string")
    c = f.get("constraints", {})
    if t == "integer":
        value = _integer(raw)
    elif t == "number":
        value = F.when(raw.rlike(_NUMBER), _number(raw))
    elif t == "boolean":
        value = (
            F.when(raw.isin(f.get("trueValues", TRUE_VALUES)), F.lit(True))
            .when(raw.isin(f.get("falseValues", FALSE_VALUES)), F.lit(False))
        )
    elif t == "date" and f.get("format", "default") == "default":
        value = F.when(raw.rlike(_DATE) & F.to_date(raw, "yyyy-MM-dd").isNotNull(), raw)
    elif t == "datetime" and f.get("format", "default") == "default":
        value = F.when(raw.rlike(_DATETIME) & F.to_date(F.substring(raw, 1, 10), "yyyy-MM-dd").isNotNull(), raw)
    else:
        value = raw
    value = F.when(kind.isNull(), value).otherwise(_json_value(t, raw, kind))
    ok = raw.isNull() | value.isNotNull()
    if c.get("required") or f["name"] in key:
        ok = ok & raw.isNotNull()
    if t in ("integer", "number"):
        # NaN breaks no bound (it compares false, as in the validator); Spark orders it last.
        unbounded = value.isNull() | (F.isnan(value) if t == "number" else F.lit(False))
        if "minimum" in c:
            ok = ok & (unbounded | (value >= float(c["minimum"])))
        if "maximum" in c:
            ok = ok & (unbounded | (value <= float(c["maximum"])))
    if "enum" in c:
        if t in ("integer", "number"):
            ok = ok & (value.isNull() | value.isin([float(v) for v in c["enum"]]))
        else:
            ok = ok & (raw.isNull() | raw.isin([str(v) for v in c["enum"]]))
    if "pattern" in c:
        ok = ok & (raw.isNull() | raw.rlike(f"^(?:{c['pattern']})$"))
    if "minLength" in c:
        ok = ok & (raw.isNull() | (F.length(raw) >= c["minLength"]))
    if "maxLength" in c:
        ok = ok & (raw.isNull() | (F.length(raw) <= c["maxLength"]))
    return value, ok


def transform(spark, plan, rows):
    """The core: the batch's rows as read (`read_rows`) trimmed, checked, masked and
    deduplicated, in the local runner's order; columns the schema's fields and _file_id."""
    names = plan.names
    file_ids = F.array(*[F.lit(f["file_id"]) for f in plan.files]) if plan.files else None
    # Trimmed; text that is one of missingValues is null (JSON numbers and the like never are).
    out = rows.where(F.col("_ok").isNotNull()).select(
        *[
            F.when(
                F.col(f"_k{i}").isNotNull() | ~F.trim(F.col(f"`{n}`")).isin(plan.missing_values),
                F.trim(F.col(f"`{n}`")),
            ).alias(n)
            for i, n in enumerate(names)
        ],
        *[f"_k{i}" for i in range(len(names))],
        "_file_n",
        "_row_n",
    )
    checked, oks = [], []
    for i, f in enumerate(plan.fields):
        col = F.col(f"`{f['name']}`")
        value, ok = check(f, col, F.col(f"_k{i}"), plan.key)
        if f["name"] in plan.personal:
            value = F.when(value.isNotNull(), F.sha2(F.concat(F.lit(plan.salt), col), 256))
        checked.append(value.alias(f["name"]))
        oks.append(ok)
    all_ok = F.lit(True)
    for ok in oks:
        all_ok = all_ok & ok
    out = out.where(all_ok)
    if plan.key:
        # The last row of a key wins (later files in the manifest are newer). Keyed on the cast
        # values, so that ` 01 ` and `1` are one integer key.
        keys = [
            check(f, F.col(f"`{f['name']}`"), F.col(f"_k{i}"), plan.key)[0]
            for i, f in enumerate(plan.fields)
            if f["name"] in plan.key
        ]
        newest = Window.partitionBy(*keys).orderBy(F.col("_file_n").desc(), F.col("_row_n").desc())
        out = out.withColumn("_rank", F.row_number().over(newest)).where(F.col("_rank") == 1)
    out = out.select(*checked, "_file_n", "_row_n")
    out = out.repartition(1).sortWithinPartitions("_file_n", "_row_n")
    if file_ids is None:
        return out.select(*[F.col(f"`{n}`") for n in names], F.lit(None).cast("string").alias(FILE_ID))
    return out.select(*[F.col(f"`{n}`") for n in names], file_ids[F.col("_file_n")].alias(FILE_ID))


# --- Output: one Parquet file, written by one task. ---


def arrow_schema(fields, personal):
    """The output's Arrow schema, the local runner's."""
    import pyarrow as pa

    types = {"integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}
    fields = [
        pa.field(f["name"], pa.string() if f["name"] in personal else types.get(f.get("type"), pa.string()))
        for f in fields
    ]
    return pa.schema(fields + [pa.field(FILE_ID, pa.string(), nullable=False)])


def write_parquet(out, plan, deliver):
    """Writes the transform's output as one Parquet file in the task that holds its one partition
    and hands the file's local path to `deliver(path)` there (an upload, on Glue). Returns the
    number of rows written."""
    names = plan.names + [FILE_ID]
    fields, personal = plan.fields, plan.personal

    def write(index, rows):
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = arrow_schema(fields, personal)
        fd, path = tempfile.mkstemp(suffix=".parquet")
        os.close(fd)
        written = 0
        try:
            with pq.ParquetWriter(path, schema, compression="snappy") as writer:
                batch = []
                for row in rows:
                    batch.append(row)
                    if len(batch) == ROW_GROUP:
                        writer.write_table(_table(pa, schema, names, batch), row_group_size=ROW_GROUP)
                        written += len(batch)
                        batch = []
                if batch or written == 0:
                    writer.write_table(_table(pa, schema, names, batch), row_group_size=ROW_GROUP)
                    written += len(batch)
            deliver(path)
        finally:
            os.remove(path)
        yield written

    return sum(out.rdd.mapPartitionsWithIndex(write).collect())


def _table(pa, schema, names, rows):
    columns = [[r[i] for r in rows] for i in range(len(names))]
    return pa.Table.from_arrays([pa.array(c, type=t) for c, t in zip(columns, schema.types)], schema=schema)


def output_key(dataset, batch_id, now=None):
    """Where the local runner writes a batch's output, today."""
    day = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%d")
    return f"dataset={dataset}/ingest_date={day}/{batch_id}.parquet"


def run(spark, args, s3):
    """The job, given its resolved arguments, a Spark session and an S3 client: reads the manifest,
    transforms the batch and writes its Parquet. Returns the output key."""
    manifest_bucket, manifest_key = args["manifest"].split("/", 1)
    manifest = json.loads(s3.get_object(Bucket=manifest_bucket, Key=manifest_key)["Body"].read())
    plan = Plan(manifest, args.get("salt", ""))
    max_input_bytes = int(args.get("max_input_bytes") or DEFAULT_MAX_INPUT_BYTES)
    out = transform(spark, plan, read_rows(spark, plan, s3_reader(max_input_bytes)))
    bucket = args["curated_bucket"]
    target = output_key(args["dataset"], args["batch_id"])

    def upload(path):
        import boto3

        boto3.client("s3").upload_file(path, bucket, target)

    rows = write_parquet(out, plan, upload)
    print(f"wrote {rows} rows to s3://{bucket}/{target}")
    return target


def main():
    """The Glue entry point."""
    import boto3
    from awsglue.context import GlueContext
    from awsglue.utils import getResolvedOptions
    from pyspark.context import SparkContext

    wanted = ["batch_id", "dataset", "manifest", "curated_bucket"]
    wanted += [a for a in ("mask_salt_secret", "max_input_bytes") if f"--{a}" in sys.argv]
    args = dict(getResolvedOptions(sys.argv, wanted))
    if args.get("mask_salt_secret"):
        secret = boto3.client("secretsmanager").get_secret_value(SecretId=args["mask_salt_secret"])
        args["salt"] = secret["SecretString"]
    spark = GlueContext(SparkContext.getOrCreate()).spark_session
    run(spark, args, boto3.client("s3"))


if __name__ == "__main__":
    main()
