"""The CDK app: one DeliveryStack per stage in the ``delivery:stages`` context.

``make infra-synth`` synthesizes every stage into infra/cdk.out/ with the cdk-nag
AwsSolutions checks (a finding without a written suppression fails the synth);
``-c stage=NAME`` synthesizes one. Deploy: ``npx cdk deploy delivery-production
--parameters ImageTag=1.4.0`` (docs/operations.md).
"""

from __future__ import annotations

from aws_cdk import App

from delivery_stack.synth import build_app

if __name__ == "__main__":
    app = App()
    build_app(app)
    app.synth()
