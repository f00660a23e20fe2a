"""Completes a CloudFormation stack deployed into moto with what moto's CloudFormation skips.

moto's CloudFormation creates only some resource types (queues, topics, buckets with their
encryption, tables, KMS, IAM, ECS, log groups, dashboards) and ignores the rest with a warning:
SNS subscriptions, queue and bucket policies, a bucket's versioning, lifecycle, public access block
and notifications, Glue, Secrets Manager. This script reads the same template, resolves its
intrinsic functions against the deployed stack, and makes those resources through moto's APIs, so
a test can run the pipeline on what the template declares. It prints, as JSON, what it made, the
resource types it did not emulate (alarms, scaling), for the test to check nothing else went
missing, and the buckets whose deny-without-TLS statement it left out (moto serves plain HTTP).

Usage: cfn_moto.py fill ENDPOINT STACK TEMPLATE
       cfn_moto.py policies TEMPLATE   # each stage's allowed actions: {"validator": [...], ...}
"""

import json
import re
import sys

import boto3
import yaml

REGION = "us-east-1"

# Resource types this script makes; anything else moto skipped is reported as not emulated.
FILLED = {
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::Subscription",
    "AWS::S3::BucketPolicy",
    "AWS::SecretsManager::Secret",
    "AWS::Glue::Database",
    "AWS::Glue::SecurityConfiguration",
    "AWS::Glue::Job",
    "AWS::Glue::Crawler",
}


def load_template(path):
    """YAML with CloudFormation's short tags (!Ref, !Sub, !GetAtt ...) as their long forms."""

    class Loader(yaml.SafeLoader):
        pass

    def tag(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if suffix == "Ref":
            return {"Ref": value}
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {"Fn::" + suffix: value}

    Loader.add_multi_constructor("!", tag)
    with open(path) as f:
        return yaml.load(f, Loader=Loader)


class Stack:
    def __init__(self, endpoint, name, template):
        kw = dict(endpoint_url=endpoint, region_name=REGION,
                  aws_access_key_id="test", aws_secret_access_key="test")
        self.c = {s: boto3.client(s, **kw) for s in
                  ["cloudformation", "sqs", "sns", "s3", "glue", "secretsmanager", "iam", "sts"]}
        self.name = name
        self.template = template
        stack = self.c["cloudformation"].describe_stacks(StackName=name)["Stacks"][0]
        self.params = {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])}
        for key, spec in template.get("Parameters", {}).items():
            self.params.setdefault(key, str(spec.get("Default", "")))
        self.account = self.c["sts"].get_caller_identity()["Account"]
        resources = self.c["cloudformation"].describe_stack_resources(StackName=name)["StackResources"]
        # moto lists a resource it skipped as an empty entry.
        self.physical = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                         for r in resources if "LogicalResourceId" in r}
        self.conditions = {k: self.value(v) for k, v in template.get("Conditions", {}).items()}

    # ------------------------------------------------------------ intrinsic functions
    def pseudo(self, name):
        return {"AWS::Region": REGION, "AWS::AccountId": self.account, "AWS::Partition": "aws",
                "AWS::StackName": self.name, "AWS::URLSuffix": "amazonaws.com"}.get(name)

    def ref(self, name):
        if name in self.params:
            return self.params[name]
        if self.pseudo(name) is not None:
            return self.pseudo(name)
        return self.physical[name]

    def getatt(self, logical, attribute):
        kind = self.template["Resources"][logical]["Type"]
        physical = self.physical[logical]
        if kind == "AWS::SQS::Queue":
            if attribute == "QueueName":
                return physical.rsplit("/", 1)[-1]
            attrs = self.c["sqs"].get_queue_attributes(QueueUrl=physical, AttributeNames=["QueueArn"])
            return attrs["Attributes"]["QueueArn"]
        if kind == "AWS::S3::Bucket" and attribute == "Arn":
            return f"arn:aws:s3:::{physical}"
        if kind == "AWS::KMS::Key" and attribute == "Arn":
            # Built, not described: moto 5 answers DescribeKey on a key its CloudFormation made
            # with a 500 (it keeps the key policy as a dict).
            return f"arn:aws:kms:{REGION}:{self.account}:key/{physical}"
        if kind == "AWS::IAM::Role" and attribute == "Arn":
            return self.c["iam"].get_role(RoleName=physical)["Role"]["Arn"]
        raise ValueError(f"cfn_moto.py cannot resolve !GetAtt {logical}.{attribute} ({kind})")

    def sub(self, text, extra=None):
        def one(m):
            name = m.group(1)
            if extra and name in extra:
                return str(extra[name])
            if "." in name and not name.startswith("AWS::"):
                return self.getatt(*name.split(".", 1))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def value(self, v):
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (fn, arg), = v.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::GetAtt":
                return self.getatt(*arg)
            if fn == "Fn::Sub":
                if isinstance(arg, list):
                    return self.sub(arg[0], {k: self.value(x) for k, x in arg[1].items()})
                return self.sub(arg)
            if fn == "Fn::Equals":
                a, b = self.value(arg)
                return str(a) == str(b)
            if fn == "Fn::Not":
                return not self.value(arg[0])
            if fn == "Fn::If":
                cond, yes, no = arg
                return self.value(yes if self.conditions[cond] else no)
            if fn == "Condition":
                return self.conditions[arg]
        return {k: self.value(x) for k, x in v.items()}

    # ------------------------------------------------------------ resources
    def wanted(self):
        """The template's resources whose condition holds, in template order."""
        for logical, r in self.template["Resources"].items():
            if "Condition" in r and not self.conditions[r["Condition"]]:
                continue
            yield logical, r["Type"], r.get("Properties", {})

    def fill(self):
        made, not_emulated = [], set()
        self.tls_only = []
        # Secrets and Glue's security configuration first: others refer to them by name.
        order = ["AWS::SecretsManager::Secret", "AWS::Glue::SecurityConfiguration", "AWS::Glue::Database",
                 "AWS::SQS::QueuePolicy", "AWS::SNS::Subscription", "AWS::S3::BucketPolicy",
                 "AWS::Glue::Job", "AWS::Glue::Crawler"]
        pending = [(l, t, p) for l, t, p in self.wanted() if l not in self.physical]
        for kind in order:
            for logical, t, props in pending:
                if t == kind:
                    self.physical[logical] = self.make(t, self.value(props))
                    made.append(logical)
        for logical, t, _ in pending:
            if t not in FILLED:
                not_emulated.add(t)
        # What moto ignored on the buckets it made.
        for logical, t, props in self.wanted():
            if t == "AWS::S3::Bucket":
                self.bucket_extras(self.physical[logical], self.value(props))
        return {"made": made, "not_emulated": sorted(not_emulated), "tls_only": sorted(self.tls_only)}

    def make(self, kind, p):
        if kind == "AWS::SecretsManager::Secret":
            # CloudFormation generates the value; so does this, with the same length.
            length = p.get("GenerateSecretString", {}).get("PasswordLength", 32)
            value = self.c["secretsmanager"].get_random_password(
                PasswordLength=length, ExcludePunctuation=True)["RandomPassword"]
            return self.c["secretsmanager"].create_secret(
                Name=p["Name"], SecretString=value, KmsKeyId=p.get("KmsKeyId", ""))["ARN"]
        if kind == "AWS::Glue::SecurityConfiguration":
            encryption = dict(p["EncryptionConfiguration"])
            # CloudFormation's list is S3Encryptions; the API's, S3Encryption.
            encryption["S3Encryption"] = encryption.pop("S3Encryptions", [])
            self.c["glue"].create_security_configuration(
                Name=p["Name"], EncryptionConfiguration=encryption)
            return p["Name"]
        if kind == "AWS::Glue::Database":
            self.c["glue"].create_database(DatabaseInput=p["DatabaseInput"])
            return p["DatabaseInput"]["Name"]
        if kind == "AWS::SQS::QueuePolicy":
            for url in p["Queues"]:
                self.c["sqs"].set_queue_attributes(
                    QueueUrl=url, Attributes={"Policy": json.dumps(p["PolicyDocument"])})
            return "policy"
        if kind == "AWS::SNS::Subscription":
            attributes = {}
            for key in ["RawMessageDelivery", "FilterPolicyScope", "FilterPolicy"]:
                if key in p:
                    v = p[key]
                    attributes[key] = json.dumps(v) if isinstance(v, dict) else str(v).lower() \
                        if isinstance(v, bool) else str(v)
            return self.c["sns"].subscribe(
                TopicArn=p["TopicArn"], Protocol=p["Protocol"], Endpoint=p["Endpoint"],
                Attributes=attributes, ReturnSubscriptionArn=True)["SubscriptionArn"]
        if kind == "AWS::S3::BucketPolicy":
            # moto enforces a deny on aws:SecureTransport, and serves plain HTTP: such statements
            # would refuse every request of the test. They are reported instead of applied.
            document = dict(p["PolicyDocument"])
            tls = [st for st in document["Statement"]
                   if "aws:SecureTransport" in json.dumps(st.get("Condition", {}))]
            document["Statement"] = [st for st in document["Statement"] if st not in tls]
            if tls:
                self.tls_only.append(p["Bucket"])
            if document["Statement"]:
                self.c["s3"].put_bucket_policy(Bucket=p["Bucket"], Policy=json.dumps(document))
            return p["Bucket"]
        if kind == "AWS::Glue::Job":
            args = {k: v for k, v in p.items() if k not in ("Name",)}
            args["DefaultArguments"] = {k: str(v) for k, v in args.get("DefaultArguments", {}).items()}
            self.c["glue"].create_job(Name=p["Name"], **args)
            return p["Name"]
        if kind == "AWS::Glue::Crawler":
            self.c["glue"].create_crawler(**p)
            return p["Name"]
        raise ValueError(kind)

    def bucket_extras(self, bucket, p):
        s3 = self.c["s3"]
        if "VersioningConfiguration" in p:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=p["VersioningConfiguration"])
        if "PublicAccessBlockConfiguration" in p:
            s3.put_public_access_block(
                Bucket=bucket, PublicAccessBlockConfiguration=p["PublicAccessBlockConfiguration"])
        if "LifecycleConfiguration" in p:
            rules = []
            for r in p["LifecycleConfiguration"]["Rules"]:
                rule = {"ID": r["Id"], "Status": r["Status"],
                        "Filter": {"Prefix": r.get("Prefix", "")}}
                if "ExpirationInDays" in r:
                    rule["Expiration"] = {"Days": int(r["ExpirationInDays"])}
                if "NoncurrentVersionExpiration" in r:
                    rule["NoncurrentVersionExpiration"] = {
                        "NoncurrentDays": int(r["NoncurrentVersionExpiration"]["NoncurrentDays"])}
                rules.append(rule)
            s3.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration={"Rules": rules})
        if "NotificationConfiguration" in p:
            queues = [{"QueueArn": q["Queue"], "Events": [q["Event"]]}
                      for q in p["NotificationConfiguration"].get("QueueConfigurations", [])]
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration={"QueueConfigurations": queues})


def policies(template):
    """The actions each stage's task role allows, by stage: the task definition whose container runs
    `choreo-<stage>` names the role; its inline policies and managed policies of the template
    count."""
    resources = template["Resources"]

    def actions(document):
        for statement in document["Statement"]:
            if statement["Effect"] == "Allow":
                a = statement["Action"]
                yield from [a] if isinstance(a, str) else a

    out = {}
    for r in resources.values():
        if r["Type"] != "AWS::ECS::TaskDefinition":
            continue
        props = r["Properties"]
        role = resources[props["TaskRoleArn"]["Fn::GetAtt"][0]]["Properties"]
        (container,) = props["ContainerDefinitions"]
        stage = container["Command"][0].removeprefix("choreo-")
        allowed = set()
        for policy in role.get("Policies", []):
            allowed.update(actions(policy["PolicyDocument"]))
        for ref in role.get("ManagedPolicyArns", []):
            allowed.update(actions(resources[ref["Ref"]]["Properties"]["PolicyDocument"]))
        out[stage] = sorted(allowed)
    return out


def main():
    if sys.argv[1] == "policies":
        print(json.dumps(policies(load_template(sys.argv[2]))))
        return
    endpoint, stack, template = sys.argv[2:5]
    result = Stack(endpoint, stack, load_template(template)).fill()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
