"""Searches of one campaign's tiles answered from indexes, the rest by pgstac.

pgstac's ``search()`` is general: it records every search in ``pgstac.searches``, plans
and estimates the WHERE it built, walks partitions and hydrates items in PL/pgSQL. For
the searches people make of a campaign (its tiles by status, a page of its items, one
tile) that is most of the time: at 1,000,000 tiles a status page of 100 took pgstac
~300 ms, whose rows an index reads in 0.1 ms. ``tilekeeper_search.campaign_page``
answers exactly those, with pgstac's output (the same features, pgstac's paging tokens
and links, so a page from either continues on the other; ``numberMatched`` exact, from
the job store's counters, where pgstac may estimate), and NULL for every other search,
which the API then hands to pgstac (api/campaign_pages.py). ``tilekeeper_search.search``
is pgstac's ``search()`` with campaign pages first, for SQL clients.

What it takes: one campaign collection (one the job store counts), no sortby (pgstac's
default order, datetime then id descending), at most ``status = '<value>'`` as filter,
or one id; a ``next`` token of the same collection. Indexes match that order.
"""

from __future__ import annotations

SCHEMA = "tilekeeper_search"

MIGRATION_SQL = """
CREATE INDEX IF NOT EXISTS tilekeeper_jobs_page ON pgstac.items (
    collection, datetime DESC, id DESC
) WHERE content->'properties' ? 'tilekeeper:order';
CREATE INDEX IF NOT EXISTS tilekeeper_jobs_status_page ON pgstac.items (
    collection, (content->'properties'->>'status'), datetime DESC, id DESC
) WHERE content->'properties' ? 'tilekeeper:order';
CREATE SCHEMA IF NOT EXISTS tilekeeper_search;
GRANT USAGE ON SCHEMA tilekeeper_search TO pgstac_read, pgstac_ingest;

-- pgstac's content_hydrate merges an item into its collection's base item deeply, in
-- PL/pgSQL, at ~0.4 ms an item. A campaign's base item holds scalars only (type,
-- stac_version, collection, assets: null), and over such a base that deep merge is a
-- shallow one with every null removed, unless the item marks a key as removed (the
-- caller checks): the same JSON, built in a few microseconds
-- (tests/test_campaign_search.py compares the two). One expression, so it is inlined.
CREATE OR REPLACE FUNCTION tilekeeper_search.hydrated(_item pgstac.items, _base jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $fn$
    SELECT jsonb_strip_nulls(
        _base
        || jsonb_build_object(
            'id', _item.id,
            'geometry', public.ST_AsGeoJSON(_item.geometry, 20)::jsonb,
            'collection', _item.collection,
            'type', 'Feature'
        )
        || (_item.content - 'pgstac:base_item')
    );
$fn$;

CREATE OR REPLACE FUNCTION tilekeeper_search.campaign_page(_search jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path TO pgstac, public
-- Planned with each call's values: a generic plan could not drop the conditions a
-- search does not use and would miss the indexes.
SET plan_cache_mode TO force_custom_plan
AS $fn$
DECLARE
    _collection text;
    _filter jsonb := _search->'filter';
    _status text;
    _id text;
    _limit int;
    _fields jsonb := coalesce(_search->'fields', '{}'::jsonb);
    _hydrate bool := NOT coalesce((_search->'conf'->>'nohydrate')::boolean, false);
    _token record;
    _after_datetime timestamptz;
    _after_id text;
    _matched bigint;
    _counters int;
    _records jsonb;
    _keys jsonb;
    _returned int;
    _links jsonb := jsonb_build_array(
        jsonb_build_object('rel', 'root', 'type', 'application/json', 'href', '.'),
        jsonb_build_object('rel', 'self', 'type', 'application/json', 'href', './search')
    );
    _out jsonb;
    _base jsonb;
BEGIN
    -- Only what this answers exactly as pgstac would; anything else is pgstac's.
    IF jsonb_typeof(_search) IS DISTINCT FROM 'object'
        OR jsonb_typeof(_search->'collections') IS DISTINCT FROM 'array'
        OR jsonb_array_length(_search->'collections') <> 1
        OR jsonb_typeof(_search->'collections'->0) <> 'string'
        OR EXISTS (
            SELECT 1 FROM jsonb_object_keys(_search) AS k
            WHERE k NOT IN ('collections', 'limit', 'token', 'filter', 'filter-lang',
                            'fields', 'conf', 'ids')
        )
        OR EXISTS (
            SELECT 1 FROM jsonb_object_keys(coalesce(_search->'conf', '{}'::jsonb)) AS k
            WHERE k <> 'nohydrate'
        )
        OR coalesce(_search->>'filter-lang', 'cql2-json') <> 'cql2-json'
        OR (_search ? 'token' AND lower(_search->>'token') NOT LIKE 'next:%')
    THEN
        RETURN NULL;
    END IF;
    _collection := _search->'collections'->>0;
    IF _filter IS NOT NULL AND jsonb_typeof(_filter) <> 'null' THEN
        IF jsonb_typeof(_filter) <> 'object'
            OR (SELECT count(*) FROM jsonb_object_keys(_filter)) <> 2
            OR _filter->>'op' IS DISTINCT FROM '='
            OR jsonb_typeof(_filter->'args') IS DISTINCT FROM 'array'
            OR jsonb_array_length(_filter->'args') <> 2
            OR _filter->'args'->0 <> '{"property": "status"}'::jsonb
            OR jsonb_typeof(_filter->'args'->1) <> 'string'
        THEN
            RETURN NULL;
        END IF;
        _status := _filter->'args'->>1;
    END IF;
    IF _search ? 'ids' THEN
        IF jsonb_typeof(_search->'ids') IS DISTINCT FROM 'array'
            OR jsonb_array_length(_search->'ids') <> 1
            OR jsonb_typeof(_search->'ids'->0) <> 'string'
            OR _status IS NOT NULL OR _search ? 'token'
        THEN
            RETURN NULL;
        END IF;
        _id := _search->'ids'->>0;
    END IF;
    -- A campaign's job items: the job store counts them.
    SELECT sum(n) FILTER (WHERE _status IS NULL OR status = _status), count(*)
    INTO _matched, _counters
    FROM tilekeeper.status_counts WHERE collection = _collection;
    IF _counters = 0 THEN
        RETURN NULL;
    END IF;
    _limit := search_limit(_search);
    -- stac-fastapi sends no fields as empty include and exclude lists: all of them.
    IF _fields IN ('{"include": [], "exclude": []}'::jsonb, '{"include": []}'::jsonb,
                   '{"exclude": []}'::jsonb) THEN
        _fields := '{}'::jsonb;
    END IF;
    IF _search ? 'token' THEN
        _token := get_token_record(_search->>'token');
        IF (_token.item).collection IS DISTINCT FROM _collection THEN
            RETURN NULL;
        END IF;
        _after_datetime := (_token.item).datetime;
        _after_id := (_token.item).id;
    END IF;

    -- The quick hydration where it gives pgstac's answer (see tilekeeper_search.hydrated).
    _base := collection_base_item(_collection);
    IF NOT _hydrate OR _fields <> '{}'::jsonb OR EXISTS (
        SELECT 1 FROM jsonb_each(_base) AS e WHERE jsonb_typeof(e.value) IN ('object', 'array')
    ) THEN
        _base := NULL;
    END IF;
    SELECT jsonb_agg(
               CASE WHEN _base IS NULL OR (page.i).content ? 'pgstac:base_item'
                         OR strpos((page.i).content::text, '𒍟※') > 0
                    THEN format_item(page.i, _fields, _hydrate)
                    ELSE tilekeeper_search.hydrated(page.i, _base) END
               ORDER BY page.n),
           jsonb_agg((page.i).id ORDER BY page.n)
    INTO _records, _keys
    FROM (
        SELECT i, row_number() OVER (ORDER BY i.datetime DESC, i.id DESC) AS n
        FROM items AS i
        WHERE i.collection = _collection
          AND i.content->'properties' ? 'tilekeeper:order'
          AND (_status IS NULL OR i.content->'properties'->>'status' = _status)
          AND (_id IS NULL OR i.id = _id)
          AND (_after_id IS NULL OR (i.datetime, i.id) < (_after_datetime, _after_id))
        ORDER BY i.datetime DESC, i.id DESC
        LIMIT _limit + 1
    ) AS page;
    _returned := coalesce(jsonb_array_length(_records), 0);
    IF _id IS NOT NULL THEN
        _matched := _returned;
    END IF;
    IF _returned > _limit THEN
        _records := _records - -1;
        _keys := _keys - -1;
        _returned := _limit;
        IF _returned > 0 THEN
            _links := _links || jsonb_build_object(
                'rel', 'next', 'type', 'application/geo+json', 'method', 'GET',
                'href', concat('./search?token=next:', page_token(_collection, _keys->>-1))
            );
        END IF;
    END IF;
    IF _after_id IS NOT NULL AND (_returned > 0 OR _limit = 0) THEN
        _links := _links || jsonb_build_object(
            'rel', 'prev', 'type', 'application/geo+json', 'method', 'GET',
            'href', concat('./search?token=prev:', CASE WHEN _returned > 0
                THEN page_token(_collection, _keys->>0)
                ELSE page_token(_collection, _after_id) END)
        );
    END IF;
    _out := jsonb_build_object(
        'type', 'FeatureCollection',
        'features', coalesce(_records, '[]'::jsonb),
        'links', _links,
        'numberReturned', _returned
    );
    IF context(_search->'conf') <> 'off' THEN
        _out := _out || jsonb_build_object('numberMatched', coalesce(_matched, 0));
    END IF;
    RETURN _out;
END;
$fn$;
-- pgstac's search() with the campaign pages first: for psql and other SQL clients.
CREATE OR REPLACE FUNCTION tilekeeper_search.search(_search jsonb DEFAULT '{}'::jsonb)
RETURNS jsonb
LANGUAGE sql
SET search_path TO pgstac, public
AS $fn$
    SELECT coalesce(tilekeeper_search.campaign_page(_search), pgstac.search(_search));
$fn$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tilekeeper_search TO pgstac_read, pgstac_ingest;
"""
