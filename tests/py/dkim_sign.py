#!/usr/bin/env python3
"""Signs the message on stdin with dkimpy (relaxed/relaxed, rsa-sha256) and
prints the signed message on stdout: a DKIM signer that was not written
here, for the inbound verification tests."""
import argparse
import sys

import dkim


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--domain", required=True)
    parser.add_argument("--selector", required=True)
    parser.add_argument("--key", required=True, help="PEM private key file")
    args = parser.parse_args()
    with open(args.key, "rb") as f:
        key = f.read()
    message = sys.stdin.buffer.read()
    signature = dkim.sign(
        message,
        args.selector.encode(),
        args.domain.encode(),
        key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    sys.stdout.buffer.write(signature + message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
