"""Choreo's built-in transform as a Glue (PySpark) job: the AWS twin of the local job runner's.

Arguments (Glue passes them as --name value):
  --batch_id        the batch being transformed (Choreo finds a run again by this argument)
  --dataset         the dataset's name
  --manifest        s3 location "bucket/key" of the batch manifest: {"batch_id", "dataset", "files": [{"file_id", "bucket", "key"}]}
  --curated_bucket  where the output goes (a default argument set by `choreo bootstrap`)

It writes the batch's rows, each with the file id it came from, as JSON Lines under
s3://<curated_bucket>/<dataset>/ingest_date=<YYYY-MM-DD>/<batch_id>/, overwriting that prefix, so a
re-run of the same batch replaces rather than duplicates its output.
"""

import datetime
import json
import sys

import boto3
from awsglue.context import GlueContext
from awsglue.utils import getResolvedOptions
from pyspark.context import SparkContext
from pyspark.sql import functions as F

args = getResolvedOptions(sys.argv, ["batch_id", "dataset", "manifest", "curated_bucket"])
manifest_bucket, manifest_key = args["manifest"].split("/", 1)
manifest = json.loads(
    boto3.client("s3").get_object(Bucket=manifest_bucket, Key=manifest_key)["Body"].read()
)

spark = GlueContext(SparkContext.getOrCreate()).spark_session
frames = []
for f in manifest["files"]:
    path = f"s3://{f['bucket']}/{f['key']}"
    if ".jsonl" in f["key"] or ".json" in f["key"]:
        df = spark.read.json(path)
    else:
        df = spark.read.option("header", "true").csv(path)
    frames.append(df.withColumn("_file_id", F.lit(f["file_id"])))

if frames:
    out = frames[0]
    for df in frames[1:]:
        out = out.unionByName(df, allowMissingColumns=True)
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    target = f"s3://{args['curated_bucket']}/{args['dataset']}/ingest_date={day}/{args['batch_id']}/"
    out.write.mode("overwrite").json(target)
