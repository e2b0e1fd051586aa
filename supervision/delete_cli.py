"""`supervisor.py delete string|document|collection`: the HTTP DELETE endpoints, for operators at the console.

The CLI asks this host's gateway (with SECURITY_TOKEN when USE_SECURITY_TOKEN is on) rather than the writer
directly, so that the gateway drops the rows from its caches at once, as for any client's delete.
"""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

import httpx

from shared.settings import Settings


def add_parser(commands: Any) -> None:
    """Add `delete string TEXT [--model M] | document FILE_HASH | collection NAME` to the CLI's subcommands."""
    parser = commands.add_parser("delete", help="delete a stored string, a document or a collection")
    targets = parser.add_subparsers(dest="target", required=True)
    string = targets.add_parser("string", help="a stored text's vectors (of every model, or of --model)")
    string.add_argument("text")
    string.add_argument("--model", help="only this model's vector of it")
    targets.add_parser("document", help="a stored document, by its SHA3-256 file hash").add_argument("file_hash")
    targets.add_parser("collection", help="a collection, by name").add_argument("name")


def cmd_delete(settings: Settings, args: argparse.Namespace) -> int:
    """Send the delete to the local gateway and print its answer; the exit status (1: nothing to delete, 2: other)."""
    if args.target == "string":
        path, body = "/stored_strings/", {"text": args.text, **({"model_name": args.model} if args.model else {})}
    elif args.target == "document":
        path, body = f"/stored_documents/{quote(args.file_hash, safe='')}", None
    else:
        path, body = f"/collections/{quote(args.name, safe='')}", None
    headers = {"Authorization": f"Bearer {settings.security_token}"} if settings.use_security_token else {}
    url = f"http://127.0.0.1:{settings.listen_port}{path}"
    try:
        response = httpx.request("DELETE", url, json=body, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        print(f"could not reach the gateway at {url}: {exc}")
        return 2
    print(json.dumps(response.json(), indent=1))
    if response.status_code == 404:
        return 1
    return 0 if response.is_success else 2
