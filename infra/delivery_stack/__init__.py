"""The AWS CDK app's constructs for delivery-server (issue 12; docs/operations.md)."""
