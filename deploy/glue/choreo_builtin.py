"""Choreo's built-in transform as a Glue (PySpark) job: the AWS twin of the local job runner's
(shared/local/src/transform.rs), with the same semantics.

Arguments (Glue passes them as --name value):
  --batch_id        the batch being transformed (Choreo finds a run again by this argument)
  --dataset         the dataset's name
  --manifest        s3 location "bucket/key" of the batch manifest (below)
  --curated_bucket  where the output goes (a default argument set by `choreo bootstrap`)
  --mask_salt_secret  the Secrets Manager secret (name or ARN) whose value is prepended to
                    personal-data values before hashing (a default argument set by `choreo
                    bootstrap`, which keeps transform.mask_salt there; needed only if personal_data
                    is set). The salt itself is never an argument: GetJob and every run would show it.

The manifest, written by the transform launcher, carries all the job needs of the dataset:
  {"batch_id", "dataset", "files": [{"file_id", "bucket", "key", "pin"}] (oldest first),
   "schema": <Frictionless Table Schema>, "personal_data": [column, ...],
   "format": "csv" | "jsonl", "csv": {"delimiter", "quote", "header"}}

Inputs are read by their pin ({"version_id": ...} or {"e_tag": ...}), the bytes the pipeline
validated, never by path: a re-upload of a key is another file, and a key is never a glob or a
relative path to Spark. Executors fetch each file with boto3 (gzip-decompressed by its .gz suffix,
up to --max_input_bytes, default 16 GiB, of text) and Spark parses the lines.

Each row is trimmed (strings), checked (types integer, number, boolean and ISO dates and datetimes;
required, minimum, maximum, enum, pattern, minLength, maxLength) and dropped if it fails, or, for
CSV, if its field count is not the header's; personal-data values become sha2(salt + value, 256);
rows are deduplicated on the primary key, the last one winning (files in manifest order, rows in
file order). Non-default date formats are not checked here (the validator already did).

Output: one Parquet file, typed columns in schema order (integer -> long, number -> double,
boolean -> boolean, everything else and every masked column -> string) and _file_id, at
s3://<curated_bucket>/dataset=<dataset>/ingest_date=<YYYY-MM-DD>/<batch_id>.parquet, as the local
runner writes it. Spark writes to a staging prefix first; the object is copied into place and the
staging prefix removed, so a re-run of the batch replaces its file and leaves other batches alone.
"""

import datetime
import gzip
import json
import sys

import boto3
from awsglue.context import GlueContext
from awsglue.utils import getResolvedOptions
from pyspark.context import SparkContext
from pyspark.sql import Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

FILE_ID = "_file_id"
TRUE_VALUES = ["true", "True", "TRUE", "1"]
FALSE_VALUES = ["false", "False", "FALSE", "0"]

wanted = ["batch_id", "dataset", "manifest", "curated_bucket"]
if "--mask_salt_secret" in sys.argv:
    wanted.append("mask_salt_secret")
if "--max_input_bytes" in sys.argv:
    wanted.append("max_input_bytes")
args = getResolvedOptions(sys.argv, wanted)
salt = ""
if args.get("mask_salt_secret"):
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=args["mask_salt_secret"])
    salt = secret["SecretString"]
s3 = boto3.client("s3")
manifest_bucket, manifest_key = args["manifest"].split("/", 1)
manifest = json.loads(s3.get_object(Bucket=manifest_bucket, Key=manifest_key)["Body"].read())

schema = manifest.get("schema")
if not schema:
    raise SystemExit(f"manifest {args['manifest']} has no schema (written by an older launcher?)")
fields = schema["fields"]
names = [f["name"] for f in fields]
if FILE_ID in names:
    raise SystemExit(f"the schema has a field {FILE_ID!r}, the column the transform adds")
missing_values = schema.get("missingValues", [""])
key = schema.get("primaryKey") or []
key = [key] if isinstance(key, str) else key
personal = manifest.get("personal_data", [])
unknown = [p for p in personal if p not in names]
if unknown:
    raise SystemExit(f"personal_data names {unknown}, which are not fields")
if personal and not salt:
    raise SystemExit("personal_data needs transform.mask_salt (the --mask_salt_secret argument)")
fmt = manifest.get("format") or ("jsonl" if ".jsonl" in manifest["files"][0]["key"] else "csv")
dialect = {"delimiter": ",", "quote": '"', "header": True, **(manifest.get("csv") or {})}

spark = GlueContext(SparkContext.getOrCreate()).spark_session
max_input_bytes = int(args.get("max_input_bytes") or 16 << 30)


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
            raise SystemExit(f"{f['bucket']}/{f['key']} ETag {pin['e_tag']} is gone")
        request["VersionId"] = found[0]
    return client.get_object(**request)["Body"]


def lines_of(f):
    """Runs on an executor: the file's text lines, decompressed, bounded."""
    import boto3 as b3

    body = open_pinned(b3.client("s3"), f)
    stream = gzip.GzipFile(fileobj=body) if f["key"].endswith(".gz") else body
    seen = 0
    for line in stream.iter_lines() if hasattr(stream, "iter_lines") else stream:
        seen += len(line) + 1
        if seen > max_input_bytes:
            raise ValueError(f"{f['file_id']}: more than {max_input_bytes} bytes of text")
        yield line.decode("utf-8").rstrip("\r\n")


def read(f):
    """One file, every schema field as a string column (null where absent); None if no rows."""
    path = spark.sparkContext.parallelize([f], 1).flatMap(lines_of).cache()
    if fmt == "jsonl":
        df = spark.read.option("primitivesAsString", "true").json(path)
        bad = F.col("_corrupt_record").isNotNull() if "_corrupt_record" in df.columns else F.lit(False)
        cols = []
        for n in names:
            if n not in df.columns:
                cols.append(F.lit(None).cast("string").alias(n))
            elif isinstance(df.schema[n].dataType, StringType):
                cols.append(F.col(f"`{n}`").alias(n))
            else:  # an array or object: as JSON text, as the local runner keeps it
                cols.append(F.to_json(F.col(f"`{n}`")).alias(n))
        return df.where(~bad).select(*cols)
    reader = (
        spark.read.option("sep", dialect["delimiter"])
        .option("quote", dialect["quote"])
        .option("escape", dialect["quote"])
        .option("encoding", "UTF-8")
    )
    if dialect["header"]:
        header = [h.lstrip("\ufeff").strip() for h in reader.option("header", "true").csv(path).columns]
    else:
        header = [f"col{i}" for i in range(len(names))]
    # A record of another width than the header lands in _corrupt_record: dropped.
    string_schema = StructType(
        [StructField(f"c{i}", StringType()) for i in range(len(header))]
        + [StructField("_corrupt_record", StringType())]
    )
    df = (
        reader.option("header", str(dialect["header"]).lower())
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", "_corrupt_record")
        .schema(string_schema)
        .csv(path)
    )
    df = df.where(F.col("_corrupt_record").isNull())
    if dialect["header"]:
        position = {h: i for i, h in enumerate(header)}
    else:
        position = {n: i for i, n in enumerate(names)}
    return df.select(
        *[
            (F.col(f"c{position[n]}") if n in position else F.lit(None).cast("string")).alias(n)
            for n in names
        ]
    )


def check(f, raw):
    """(typed value, ok) for field f's trimmed text `raw` (null when missing)."""
    t = f.get("type", "string")
    c = f.get("constraints", {})
    if t == "integer":
        value = F.when(raw.rlike(r"^[+-]?[0-9]+$"), raw.cast("long"))
    elif t == "number":
        value = raw.cast("double")
    elif t == "boolean":
        value = (
            F.when(raw.isin(f.get("trueValues", TRUE_VALUES)), F.lit(True))
            .when(raw.isin(f.get("falseValues", FALSE_VALUES)), F.lit(False))
        )
    elif t == "date" and f.get("format", "default") == "default":
        value = F.when(F.to_date(raw, "yyyy-MM-dd").isNotNull(), raw)
    elif t == "datetime" and f.get("format", "default") == "default":
        value = F.when(F.to_timestamp(raw).isNotNull(), raw)
    else:
        value = raw
    ok = raw.isNull() | value.isNotNull()
    if c.get("required") or f["name"] in key:
        ok = ok & raw.isNotNull()
    if t in ("integer", "number"):
        if "minimum" in c:
            ok = ok & (value.isNull() | (value >= float(c["minimum"])))
        if "maximum" in c:
            ok = ok & (value.isNull() | (value <= float(c["maximum"])))
    if "enum" in c:
        allowed = [str(v) for v in c["enum"]]
        if t in ("integer", "number"):
            ok = ok & (value.isNull() | value.isin([float(v) for v in c["enum"]]))
        else:
            ok = ok & (raw.isNull() | raw.isin(allowed))
    if "pattern" in c:
        ok = ok & (raw.isNull() | raw.rlike(f"^(?:{c['pattern']})$"))
    if "minLength" in c:
        ok = ok & (raw.isNull() | (F.length(raw) >= c["minLength"]))
    if "maxLength" in c:
        ok = ok & (raw.isNull() | (F.length(raw) <= c["maxLength"]))
    return value, ok


frames = []
for n, f in enumerate(manifest["files"]):
    df = read(f)
    df = df.select(
        *[
            F.when(~F.trim(F.col(name)).isin(missing_values), F.trim(F.col(name))).alias(name)
            for name in names
        ]
    )
    df = df.withColumn(FILE_ID, F.lit(f["file_id"]))
    df = df.withColumn("_file_n", F.lit(n)).withColumn("_row_n", F.monotonically_increasing_id())
    frames.append(df)

out = None
for df in frames:
    out = df if out is None else out.unionByName(df)

if out is None:
    out = spark.createDataFrame([], StructType([StructField(n, StringType()) for n in names]))
    out = out.withColumn(FILE_ID, F.lit(None).cast("string"))
    out = out.withColumn("_file_n", F.lit(0)).withColumn("_row_n", F.lit(0).cast("long"))

checked, oks = [], []
for f in fields:
    value, ok = check(f, F.col(f["name"]))
    if f["name"] in personal:
        value = F.when(F.col(f["name"]).isNotNull(), F.sha2(F.concat(F.lit(salt), F.col(f["name"])), 256))
    checked.append(value.alias(f["name"]))
    oks.append(ok)
all_ok = oks[0]
for ok in oks[1:]:
    all_ok = all_ok & ok
out = out.where(all_ok).select(*checked, FILE_ID, "_file_n", "_row_n")

if key:
    # The last row of a key wins: later files in the manifest are newer.
    newest = Window.partitionBy(*key).orderBy(F.col("_file_n").desc(), F.col("_row_n").desc())
    out = out.withColumn("_rank", F.row_number().over(newest)).where(F.col("_rank") == 1)
out = out.orderBy("_file_n", "_row_n").select(*names, FILE_ID)

day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
bucket = args["curated_bucket"]
staging = f"_staging/{args['batch_id']}/"
out.coalesce(1).write.mode("overwrite").option("compression", "snappy").parquet(f"s3://{bucket}/{staging}")

target = f"dataset={args['dataset']}/ingest_date={day}/{args['batch_id']}.parquet"
listed = s3.list_objects_v2(Bucket=bucket, Prefix=staging).get("Contents", [])
parts = [o["Key"] for o in listed if o["Key"].endswith(".parquet")]
if len(parts) != 1:
    raise SystemExit(f"expected one Parquet part under s3://{bucket}/{staging}, found {parts}")
s3.copy({"Bucket": bucket, "Key": parts[0]}, bucket, target)
for o in listed:
    s3.delete_object(Bucket=bucket, Key=o["Key"])
print(f"wrote s3://{bucket}/{target}")
