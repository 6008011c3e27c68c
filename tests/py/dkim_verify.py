#!/usr/bin/env python3
"""Independent DKIM verification with dkimpy: reads a message on stdin,
looks keys up on the given nameserver, prints one JSON line per signature
({"domain", "selector", "algorithm", "valid"}) and exits 0 only when every
signature verifies."""
import argparse
import json
import re
import sys

import dkim
import dns.resolver


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ns", required=True, help="nameserver as ip:port")
    args = parser.parse_args()
    host, port = args.ns.rsplit(":", 1)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port)

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(name, "TXT", lifetime=timeout)
        except Exception:
            return None
        return b"".join(b"".join(r.strings) for r in answer)

    message = sys.stdin.buffer.read()
    verifier = dkim.DKIM(message)
    signatures = [h for h in verifier.headers if h[0].lower() == b"dkim-signature"]
    if not signatures:
        print(json.dumps({"error": "no DKIM-Signature"}))
        return 1
    ok = True
    for index, (_, value) in enumerate(signatures):
        tags = dict(
            (k.strip(), v.strip())
            for k, v in (t.split("=", 1) for t in re.sub(r"\s+", "", value.decode()).split(";") if "=" in t)
        )
        try:
            valid, reason = bool(verifier.verify(idx=index, dnsfunc=dnsfunc)), None
        except dkim.DKIMException as e:
            valid, reason = False, str(e)
        ok = ok and valid
        print(json.dumps({
            "domain": tags.get("d"),
            "selector": tags.get("s"),
            "algorithm": tags.get("a"),
            "valid": valid,
            "reason": reason,
        }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
