"""Bulk personalized email delivery: MySQL jobs, SQS fan-out, SES/SMTP sends."""

__version__ = "0.1.0"
