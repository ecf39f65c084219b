"""The CDK app: one DeliveryStack per stage in the ``delivery:stages`` context.

``make infra-synth`` synthesizes every stage into infra/cdk.out/ with the cdk-nag
AwsSolutions checks (a finding without a written acknowledgement fails the synth);
``-c stage=NAME`` synthesizes one. Deploy: ``npx cdk deploy delivery-production
--parameters ImageTag=1.4.0`` (docs/operations.md). A bad stage entry exits 2 with one
line naming the stage and the key.
"""

from __future__ import annotations

import sys

from aws_cdk import App

from delivery_stack.config import StageConfigError
from delivery_stack.synth import build_app

if __name__ == "__main__":
    app = App()
    try:
        build_app(app)
    except StageConfigError as exc:
        print(f"infra: {exc}", file=sys.stderr)
        sys.exit(2)
    app.synth()
