"""Campaign definitions in the catalogue: create, read, change and delete a campaign.

A campaign is a pgstac collection whose ``tilekeeper:campaign`` member holds its
definition; its tiles are the collection's items (see ``jobs/campaign.py``).
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from catalog_service.database.jsonb import decoded
from catalog_service.jobs.campaign import CAMPAIGN_KEY, STORED, CampaignDefinition
from catalog_service.jobs.errors import CampaignExists, CampaignNotFound, InvalidChange


async def campaign_exists(conn: asyncpg.Connection, campaign: str) -> bool:
    row = await conn.fetchval(
        "SELECT content ? $2 FROM pgstac.collections WHERE id = $1", campaign, CAMPAIGN_KEY
    )
    return bool(row)


async def get_definition(conn: asyncpg.Connection, campaign: str) -> CampaignDefinition:
    raw = await conn.fetchval(
        "SELECT content->$2 FROM pgstac.collections WHERE id = $1", campaign, CAMPAIGN_KEY
    )
    if raw is None:
        exists = await conn.fetchval("SELECT 1 FROM pgstac.collections WHERE id = $1", campaign)
        if exists:
            raise CampaignNotFound(f"collection {campaign!r} is not a tilekeeper campaign")
        raise CampaignNotFound(f"no campaign {campaign!r}")
    return CampaignDefinition.model_validate(decoded(raw), context=STORED)


async def list_definitions(conn: asyncpg.Connection) -> list[CampaignDefinition]:
    rows = await conn.fetch(
        "SELECT content->$1 AS d FROM pgstac.collections WHERE content ? $1 ORDER BY id",
        CAMPAIGN_KEY,
    )
    return [CampaignDefinition.model_validate(decoded(r["d"]), context=STORED) for r in rows]


async def create_campaign(
    conn: asyncpg.Connection, definition: CampaignDefinition, bbox: list[float] | None
) -> dict[str, Any]:
    collection = definition.to_collection(bbox)
    start, end = definition.job_interval()
    async with conn.transaction():
        if await conn.fetchval("SELECT 1 FROM pgstac.collections WHERE id = $1", definition.id):
            raise CampaignExists(f"collection {definition.id!r} already exists")
        await conn.execute(
            "SELECT pgstac.create_collection($1::text::jsonb)", json.dumps(collection)
        )
    # Create the partition with its final datetime range now, once, so tile writes never
    # rebuild its constraint (the race behind pgstac#211).
    await conn.execute(
        "SELECT pgstac.check_partition($1, tstzrange($2::text::timestamptz, $2::text::timestamptz, '[]'),"
        " tstzrange($3::text::timestamptz, $3::text::timestamptz, '[]'))",
        definition.id,
        start,
        end,
    )
    return collection


async def update_definition(
    conn: asyncpg.Connection, campaign: str, patch: dict[str, Any]
) -> CampaignDefinition:
    """Merge ``patch`` into the campaign's definition (validated as a whole) and store
    it with the collection's title and description."""
    async with conn.transaction():
        raw = await conn.fetchval(
            "SELECT content FROM pgstac.collections WHERE id = $1 AND content ? $2 FOR UPDATE",
            campaign,
            CAMPAIGN_KEY,
        )
        if raw is None:
            raise CampaignNotFound(f"no campaign {campaign!r}")
        content = decoded(raw)
        merged = {**content[CAMPAIGN_KEY], **patch}
        try:
            definition = CampaignDefinition.model_validate(merged)
        except ValueError as exc:
            raise InvalidChange(f"the changed campaign is not valid: {exc}") from None
        fresh = definition.to_collection()
        content[CAMPAIGN_KEY] = fresh[CAMPAIGN_KEY]
        content["title"], content["description"] = fresh["title"], fresh["description"]
        await conn.execute("SELECT pgstac.update_collection($1::text::jsonb)", json.dumps(content))
    return definition


async def delete_campaign(conn: asyncpg.Connection, campaign: str, products: str | None) -> None:
    """Remove a campaign: its collection with every tile job, their history, and the
    catalogue records of ``products`` (its product collection) when given."""
    async with conn.transaction():
        if not await campaign_exists(conn, campaign):
            raise CampaignNotFound(f"no campaign {campaign!r}")
        await conn.execute("DELETE FROM tilekeeper.job_history WHERE collection = $1", campaign)
        await conn.execute("SELECT pgstac.delete_collection($1)", campaign)
        if products is not None:
            await conn.execute("DELETE FROM pgstac.collections WHERE id = $1", products)
