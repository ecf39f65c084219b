"""Create the SQS queue and verify the sender domain on a local AWS stand-in (moto)."""

import os
import time

import botocore.session

endpoint = os.environ["AWS_ENDPOINT_URL"]
session = botocore.session.get_session()
for _attempt in range(60):
    try:
        sqs = session.create_client("sqs", endpoint_url=endpoint)
        sqs.create_queue(QueueName="delivery")
        ses = session.create_client("ses", endpoint_url=endpoint)
        ses.verify_domain_identity(Domain="bank.example")
        break
    except Exception as exc:  # moto may still be starting
        print(f"waiting for {endpoint}: {exc}")
        time.sleep(1)
else:
    raise SystemExit("the AWS stand-in never answered")
print("queue created and sender verified")
