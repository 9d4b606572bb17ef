"""`scripthut setup-aws-ec2`: everything an EC2 backend needs, then its entry in scripthut.yaml.

Discovers the default VPC and a subnet, looks up the latest Amazon Linux 2023 AMI (the public
SSM parameter), deploys `cloudformation/scripthut-ec2-iam.yaml` (the task instance profile and
the controller's policy), appends a complete `ec2` backend to scripthut.yaml without touching
the rest of the file, and prints the one command still to run: attaching the controller policy.
Every prompt has a flag; with `--yes` (or without a terminal) nothing is asked.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from scripthut.backends.ec2_api import AWSClients
from scripthut.config import EC2BackendConfig
from scripthut.config.load import parse_config
from scripthut.errors import ScriptHutError

TEMPLATE = "scripthut-ec2-iam.yaml"
AL2023_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
DEFAULTS = {
    "name": "ec2",
    "stack_name": "scripthut-ec2-iam",
    "instance_type": "c5.xlarge",
    "default_image": "public.ecr.aws/docker/library/python:3.12",
    "ssh_user": "ec2-user",
    "max_instances": "20",
    "arch": "x86_64",
}


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "setup-aws-ec2",
        parents=parents,
        help="deploy the IAM stack of an EC2 backend and add the backend to scripthut.yaml",
    )
    parser.add_argument("--name", help=f"backend name (default {DEFAULTS['name']})")
    parser.add_argument("--region", help="AWS region (default: the AWS settings' region)")
    parser.add_argument("--profile", help="AWS profile (default: the standard chain)")
    parser.add_argument("--vpc-id", help="VPC (default: the default VPC)")
    parser.add_argument("--subnet-id", help="subnet (default: a default subnet of the VPC)")
    parser.add_argument("--ami", help="AMI (default: the latest Amazon Linux 2023)")
    parser.add_argument("--arch", help="AMI architecture, x86_64 or arm64 (default x86_64)")
    parser.add_argument("--instance-type", help=f"default {DEFAULTS['instance_type']}")
    parser.add_argument("--default-image", help=f"default {DEFAULTS['default_image']}")
    parser.add_argument("--ssh-user", help=f"default {DEFAULTS['ssh_user']}")
    parser.add_argument("--max-instances", help=f"default {DEFAULTS['max_instances']}")
    parser.add_argument("--stack-name", help=f"default {DEFAULTS['stack_name']}")
    parser.add_argument("--yes", action="store_true", help="ask nothing: flags, then defaults")


def template_text() -> str:
    """The IAM template: packaged with the wheel, or beside the sources in a checkout."""
    packaged = resources.files("scripthut").joinpath("cloudformation", TEMPLATE)
    if packaged.is_file():
        return packaged.read_text()
    return (Path(__file__).resolve().parents[3] / "cloudformation" / TEMPLATE).read_text()


class Wizard:
    """One setup: answers from flags, a prompt, or defaults."""

    def __init__(self, args: argparse.Namespace, ask: Callable[[str], str] | None) -> None:
        self.args = args
        self.ask = ask

    def value(self, key: str, question: str, default: str | None) -> str:
        given = getattr(self.args, key, None)
        if given:
            return str(given)
        if self.ask is not None:
            answer = self.ask(f"{question} [{default or ''}]: ").strip()
            if answer:
                return answer
        if not default:
            raise ScriptHutError(f"setup-aws-ec2: {question.lower()} is needed (--{_flag(key)})")
        return default

    def run(self) -> tuple[dict[str, Any], str]:
        region = self.value("region", "AWS region", os.environ.get("AWS_DEFAULT_REGION"))
        profile = getattr(self.args, "profile", None)
        aws = AWSClients(region, profile)
        ec2 = aws.client("ec2")
        vpc = self.value("vpc_id", "VPC", _default_vpc(ec2))
        subnet = self.value("subnet_id", "Subnet", _a_subnet(ec2, vpc))
        arch = self.value("arch", "AMI architecture", DEFAULTS["arch"])
        ami = self.value("ami", "AMI", _latest_al2023(aws.client("ssm"), arch))
        user = self.value("ssh_user", "SSH user of the AMI", DEFAULTS["ssh_user"])
        outputs = _deploy(
            aws.client("cloudformation"),
            self.value("stack_name", "Stack name", DEFAULTS["stack_name"]),
            {"SshUser": user, "SubnetId": subnet},
        )
        entry: dict[str, Any] = {
            "name": self.value("name", "Backend name", DEFAULTS["name"]),
            "type": "ec2",
            "aws": {"region": region} | ({"profile": profile} if profile else {}),
            "ami": ami,
            "subnet_id": subnet,
            "security_group_ids": [],
            "instance_types": {
                "default": self.value("instance_type", "Instance type", DEFAULTS["instance_type"])
            },
            "default_image": self.value("default_image", "Image", DEFAULTS["default_image"]),
            "instance_profile_arn": outputs["InstanceProfileArn"],
            "ssh_user": user,
            "max_instances": int(self.value("max_instances", "Max instances", "20")),
        }
        EC2BackendConfig.model_validate(entry)
        return entry, _attach_command(aws.client("sts"), outputs["ControllerPolicyArn"])


def _flag(key: str) -> str:
    return key.replace("_", "-")


def _default_vpc(ec2: Any) -> str | None:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    return str(vpcs[0]["VpcId"]) if vpcs else None


def _a_subnet(ec2: Any, vpc: str) -> str | None:
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    subnets.sort(key=lambda s: (not s.get("DefaultForAz"), s.get("AvailabilityZone", "")))
    return str(subnets[0]["SubnetId"]) if subnets else None


def _latest_al2023(ssm: Any, arch: str) -> str | None:
    reply = ssm.get_parameter(Name=AL2023_PARAMETER.format(arch=arch))
    return str(reply["Parameter"]["Value"])


def _deploy(cfn: Any, stack: str, parameters: dict[str, str]) -> dict[str, str]:
    """Create the stack (an existing one is reused) and return its outputs."""
    try:
        cfn.describe_stacks(StackName=stack)
    except Exception:  # does not exist yet
        cfn.create_stack(
            StackName=stack,
            TemplateBody=template_text(),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_IAM"],
        )
        cfn.get_waiter("stack_create_complete").wait(StackName=stack)
    described = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


def _attach_command(sts: Any, policy_arn: str) -> str:
    """The IAM command that gives the caller (a user or an assumed role) the policy."""
    arn = str(sts.get_caller_identity()["Arn"])
    kind, _, name = arn.split(":", 5)[-1].partition("/")
    if kind == "assumed-role":
        target = f"attach-role-policy --role-name {name.split('/')[0]}"
    else:
        target = f"attach-user-policy --user-name {name.rsplit('/', 1)[-1]}"
    return f"aws iam {target} --policy-arn {policy_arn}"


# --- appending to scripthut.yaml -----------------------------------------------------------------


def append_backend(path: Path, entry: dict[str, Any]) -> str:
    """The file's text with `entry` added to its `backends` list; every other line kept."""
    text = path.read_text() if path.exists() else ""
    lines = text.splitlines()
    item = yaml.safe_dump([entry], sort_keys=False, default_flow_style=False).splitlines()
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "backends:"), None)
    if start is None:
        if any(line.startswith("backends:") for line in lines):
            raise ScriptHutError(f"{path}: write `backends:` as a block list to add a backend")
        new = [*lines, *([""] if lines and lines[-1].strip() else []), "backends:", *item]
    else:
        end = _block_end(lines, start)
        indent = _item_indent(lines[start + 1 : end])
        new = [*lines[:end], *(" " * indent + line for line in item), *lines[end:]]
    result = "\n".join(new) + "\n"
    config = parse_config(yaml.safe_load(result) or {}, str(path))
    names = [b.name for b in config.backends]
    if names.count(entry["name"]) != 1:
        raise ScriptHutError(f"{path}: a backend named '{entry['name']}' exists already (--name)")
    return result


def _block_end(lines: list[str], start: int) -> int:
    """Index after the last line of the `backends:` block (trailing blank lines excluded)."""
    end = start + 1
    for index in range(start + 1, len(lines)):
        line = lines[index]
        if line and not line[0].isspace() and not line.startswith(("-", "#")):
            break
        if line.strip() and not line.lstrip().startswith("#"):
            end = index + 1
    return end


def _item_indent(block: list[str]) -> int:
    for line in block:
        if line.lstrip().startswith("- "):
            return len(line) - len(line.lstrip())
    return 2


def cmd_setup_aws_ec2(args: argparse.Namespace) -> int:
    interactive = not args.yes and sys.stdin.isatty()
    path = Path(args.config or "scripthut.yaml")
    entry, command = Wizard(args, input if interactive else None).run()
    text = append_backend(path, entry)
    partial = path.with_name(path.name + ".part")
    partial.write_text(text)
    os.replace(partial, path)
    print(f"added backend '{entry['name']}' (type ec2) to {path}")
    print("one step is left: let the identity that runs ScriptHut use the backend:")
    print(f"  {command}")
    return 0
