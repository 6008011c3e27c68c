"""Test-side AWS client (boto3, not sesame's SDK) for the moto peer.

usage: aws.py ENDPOINT COMMAND ARGS...  (message bodies on stdin)
"""

import sys

import boto3


def main():
    endpoint, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    kw = dict(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    if command == "verify-domain":
        boto3.client("sesv2", **kw).create_email_identity(EmailIdentity=args[0])
    elif command == "create-queue":
        print(boto3.client("sqs", **kw).create_queue(QueueName=args[0])["QueueUrl"])
    elif command == "send-message":
        boto3.client("sqs", **kw).send_message(QueueUrl=args[0], MessageBody=sys.stdin.read())
    elif command == "queue-depth":
        attrs = boto3.client("sqs", **kw).get_queue_attributes(
            QueueUrl=args[0],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        print(int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"]))
    elif command == "create-bucket":
        boto3.client("s3", **kw).create_bucket(Bucket=args[0])
    elif command == "put-object":
        boto3.client("s3", **kw).put_object(Bucket=args[0], Key=args[1], Body=sys.stdin.buffer.read())
    else:
        sys.exit(f"unknown command {command}")


main()
