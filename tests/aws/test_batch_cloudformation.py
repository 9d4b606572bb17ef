"""cloudformation/scripthut-batch-iam.yaml: cfn-lint clean, and it deploys (into moto)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws import batch_rig as rig
from tests.aws.moto_rig import MotoServer

pytestmark = pytest.mark.aws
CFN_LINT = Path(sys.executable).with_name("cfn-lint")
TEMPLATE = Path(__file__).resolve().parents[2] / "cloudformation" / "scripthut-batch-iam.yaml"


def test_the_template_passes_cfn_lint() -> None:
    lint = subprocess.run([str(CFN_LINT), str(TEMPLATE)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_the_template_deploys_and_gives_the_backend_its_role_arns(moto: MotoServer) -> None:
    cfn = rig.client("cloudformation")
    cfn.create_stack(
        StackName="hut-batch",
        TemplateBody=TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    stack = rig.wait_for(
        lambda: next(
            (
                s
                for s in cfn.describe_stacks(StackName="hut-batch")["Stacks"]
                if s["StackStatus"].endswith("COMPLETE")
            ),
            None,
        )
    )
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["JobRoleArn"].endswith(":role/scripthut-batch-job")
    assert outputs["ExecutionRoleArn"].endswith(":role/scripthut-batch-execution")
    iam = rig.client("iam")
    policy = iam.get_policy(PolicyArn=outputs["ControllerPolicyArn"])["Policy"]
    document = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"])
    actions = {
        a
        for s in document["PolicyVersion"]["Document"]["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert {
        "batch:SubmitJob",
        "batch:DescribeJobs",
        "batch:ListJobs",
        "batch:CancelJob",
        "batch:TerminateJob",
        "batch:RegisterJobDefinition",
        "logs:GetLogEvents",
        "iam:PassRole",
    } <= actions
