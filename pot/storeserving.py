"""Serve a content store over HTTP so validators can fetch checkpoints.

``GET|HEAD /v1/blobs/{cid}`` returns the verified bytes (404 if absent, 500
with the reason if the local copy is corrupt). Read-only: nobody can push
blobs into a miner's store.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from pot import cids, errors, store


def add_routes(app: web.Application, blobs: store.ContentStore, *, prefix: str = "") -> None:
    """Mount the blob routes on ``app`` (under ``prefix``, e.g. ``/local``)."""

    async def get_blob(request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        if not cids.is_valid(cid):
            return web.json_response({"error": f"not a CID: {cid}"}, status=400)
        try:
            data = await asyncio.to_thread(blobs.get, cid)  # may fetch from a peer
        except errors.BlobNotFound:
            return web.json_response({"error": f"blob {cid} not found"}, status=404)
        except errors.BlobCorrupt as exc:
            return web.json_response({"error": str(exc)}, status=500)
        return web.Response(body=data, content_type="application/octet-stream")

    app.router.add_get(f"{prefix}/v1/blobs/{{cid}}", get_blob)  # aiohttp adds HEAD for GET routes
