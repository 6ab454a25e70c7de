"""moto's S3 server on loopback, with request authentication on, as a real store has it.

moto accepts any credentials unless IAM authentication is enabled (its INITIAL_NO_AUTH_ACTION_COUNT,
set here through the server's /moto-api/reset-auth): the first few requests go unchecked, and
they create an IAM user, its access key and a policy allowing S3. Every later request must be
signed (SigV4) with that key: an unknown key id is refused with InvalidAccessKeyId, a wrong
secret with SignatureDoesNotMatch (a HEAD with a bare 403), as AWS does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import boto3
import requests

from supworker.config import load_config
from supworker.settings import media_storage
from tests.media_files import free_port

REGION = "us-east-1"
USER = "supworker-media"
S3_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
UNAUTHENTICATED_SETUP_CALLS = 3  # create_user, create_access_key, put_user_policy


@dataclass(frozen=True)
class S3Bucket:
    name: str
    env: dict[str, str]  # AWS_* as an operator sets them for this bucket

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.env["AWS_S3_ENDPOINT_URL"],
            region_name=self.env["AWS_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def objects(self) -> dict[str, dict]:
        """Every object in the bucket: key -> HeadObject answer."""
        client = self.client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        return {key: client.head_object(Bucket=self.name, Key=key) for key in keys}


class S3Server:
    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        self.url = f"http://127.0.0.1:{port}"
        reset = requests.post(f"{self.url}/moto-api/reset-auth", data=str(UNAUTHENTICATED_SETUP_CALLS), timeout=10)
        reset.raise_for_status()
        iam = boto3.client(
            "iam", endpoint_url=self.url, region_name=REGION, aws_access_key_id="setup", aws_secret_access_key="setup"
        )
        iam.create_user(UserName=USER)
        key = iam.create_access_key(UserName=USER)["AccessKey"]
        iam.put_user_policy(UserName=USER, PolicyName="media", PolicyDocument=json.dumps(S3_POLICY))
        self.access_key_id, self.secret_access_key = key["AccessKeyId"], key["SecretAccessKey"]

    def stop(self) -> None:
        self._server.stop()

    def bucket(self, name: str) -> S3Bucket:
        """A new bucket, and the AWS_* settings that reach it."""
        env = {
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_S3_BUCKET": name,
            "AWS_S3_ENDPOINT_URL": self.url,
        }
        bucket = S3Bucket(name, env)
        bucket.client().create_bucket(Bucket=name)
        return bucket


def storage_from_environment(aws_env: dict[str, str]) -> dict:
    """STORAGES["default"] as supworker/settings.py makes it in a process started with `aws_env`:
    the environment parsed by supworker.config, the storage built by the settings' own function."""
    return media_storage(load_config(os.environ | aws_env))
