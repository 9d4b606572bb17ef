"""The IAM template (cfn-lint, then deployed into moto's CloudFormation) and
`scripthut setup-aws-ec2` run non-interactively against moto."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripthut.cli.main import main
from scripthut.cli.setup_aws import append_backend, template_text
from scripthut.config import EC2BackendConfig, load_config
from scripthut.errors import ScriptHutError
from tests.aws.ec2_support import aws, client, default_subnet, moto_url

__all__ = ["aws", "moto_url"]
TEMPLATE = Path(__file__).resolve().parents[2] / "cloudformation" / "scripthut-ec2-iam.yaml"
AL2023 = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"

EXISTING = """\
# my cluster setup
settings:
  poll_interval: 10   # seconds

backends:
  # the login node
  - name: hpc
    type: slurm
    transport: local

workflows:
  - name: nightly
    backend: hpc
    command: cat tasks.json
"""


def cfn_yaml(text: str) -> Any:
    """A template with its short-form functions (`!Sub x`) read as their text."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, tag, node: loader.construct_scalar(node))
    return yaml.load(text, Loader=Loader)


def test_the_template_passes_cfn_lint() -> None:
    lint = shutil.which("cfn-lint") or str(Path(sys.executable).parent / "cfn-lint")
    proc = subprocess.run([lint, str(TEMPLATE)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_template_deploys_the_profile_and_the_controller_policy(aws: str) -> None:
    cfn = client("cloudformation")
    cfn.create_stack(StackName="hut", TemplateBody=template_text(), Capabilities=["CAPABILITY_IAM"])
    stack = cfn.describe_stacks(StackName="hut")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    iam = client("iam")
    profile_name = outputs["InstanceProfileArn"].rsplit("/", 1)[-1]
    profile = iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]
    (role,) = profile["Roles"]
    trust = iam.get_role(RoleName=role["RoleName"])["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    # moto does not attach a role's ManagedPolicyArns: read them from the template itself.
    resources = cfn_yaml(TEMPLATE.read_text())["Resources"]
    (managed,) = resources["TaskRole"]["Properties"]["ManagedPolicyArns"]
    assert managed.endswith(":iam::aws:policy/AmazonSSMManagedInstanceCore")
    policy = iam.get_policy(PolicyArn=outputs["ControllerPolicyArn"])["Policy"]
    version = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"])[
        "PolicyVersion"
    ]["Document"]
    actions: set[str] = set()
    for statement in version["Statement"]:
        action = statement["Action"]
        actions.update(action if isinstance(action, list) else [action])
    assert actions == {
        "ec2:RunInstances",
        "ec2:CreateTags",
        "iam:PassRole",
        "ec2:DescribeInstances",
        "ec2:GetConsoleOutput",
        "ec2:TerminateInstances",
        "ec2-instance-connect:SendSSHPublicKey",
        "ssm:StartSession",
        "ssm:TerminateSession",
    }


def test_setup_appends_a_complete_backend_and_keeps_the_rest(
    aws: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "scripthut.yaml"
    path.write_text(EXISTING)
    argv = ["setup-aws-ec2", "--config", str(path), "--yes", "--region", "us-east-1"]
    argv += ["--default-image", "ghcr.io/me/sim:2", "--max-instances", "5"]
    assert main(argv) == 0
    text = path.read_text()
    # Every line of the file is still there, in order, comments included.
    kept = iter(text.splitlines())
    assert all(line in kept for line in EXISTING.splitlines())
    config = load_config(path)
    assert [b.name for b in config.backends][:2] == ["hpc", "ec2"]
    ec2 = config.backend("ec2")
    assert isinstance(ec2, EC2BackendConfig)
    expected_ami = client("ssm").get_parameter(Name=AL2023)["Parameter"]["Value"]
    assert (ec2.ami, ec2.subnet_id) == (expected_ami, default_subnet())
    assert ec2.default_image == "ghcr.io/me/sim:2" and ec2.max_instances == 5
    assert ec2.instance_profile_arn and ":instance-profile/" in ec2.instance_profile_arn
    assert config.workflows[0].name == "nightly"
    out = capsys.readouterr().out
    assert "aws iam attach-user-policy --user-name" in out and "--policy-arn arn:aws:iam::" in out
    # Run again with another name: the stack is reused, a second backend is appended.
    assert main([*argv, "--name", "ec2-big", "--instance-type", "c5.4xlarge"]) == 0
    again = load_config(path)
    assert [b.name for b in again.backends][:3] == ["hpc", "ec2", "ec2-big"]
    assert len(client("cloudformation").describe_stacks()["Stacks"]) == 1


def test_setup_refuses_a_name_in_use_and_writes_nothing(aws: str, tmp_path: Path) -> None:
    path = tmp_path / "scripthut.yaml"
    path.write_text(EXISTING)
    argv = ["setup-aws-ec2", "--config", str(path), "--yes", "--region", "us-east-1"]
    assert main([*argv, "--name", "hpc"]) == 2
    assert path.read_text() == EXISTING


def test_setup_writes_a_new_file(aws: str, tmp_path: Path) -> None:
    path = tmp_path / "scripthut.yaml"
    argv = ["setup-aws-ec2", "--config", str(path), "--yes", "--region", "us-east-1"]
    assert main([*argv, "--subnet-id", default_subnet(), "--ami", "ami-12c6146b"]) == 0
    config = load_config(path)
    assert config.backend("ec2").type == "ec2"


@pytest.mark.parametrize(
    ("text", "message"),
    [("backends: []\n", "block list")],
)
def test_append_refuses_what_it_cannot_extend_by_lines(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "scripthut.yaml"
    path.write_text(text)
    entry = yaml.safe_load("{name: x, type: ec2, aws: {region: r}, ami: a, subnet_id: s}")
    with pytest.raises(ScriptHutError, match=message):
        append_backend(path, entry)


def test_append_keeps_top_level_list_items_in_place(tmp_path: Path) -> None:
    path = tmp_path / "scripthut.yaml"
    path.write_text("backends:\n- name: a\n  type: local\n\n# end\nsettings:\n  poll_interval: 5\n")
    entry = yaml.safe_load("{name: x, type: ec2, aws: {region: r}, ami: a, subnet_id: s}")
    text = append_backend(path, entry)
    assert text.startswith("backends:\n- name: a\n  type: local\n- name: x\n")
    assert text.endswith("\n\n# end\nsettings:\n  poll_interval: 5\n")
